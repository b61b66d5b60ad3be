// Torch-free entry points of the native cores (CPU: *_cpu.cpp, CUDA: *_cuda.cu). Raw pointers, float32,
// contiguous row-major; int32 indices. The glue (*_glue.cpp) allocates every output.
#pragma once

#include <cstddef>
#include <cstdint>

namespace a3d {

// ---- projection (project_cpu.cpp / project_cuda.cu) ----
// means [N,3], quats [N,4], scales [N,3], opacities [N], viewmat [4,4], K [3,3]
// -> means2d [N,2], conics [N,3], depths [N], radii [N], opacities_eff [N]
struct ProjectArgs {
    int64_t n;
    const float* means; const float* quats; const float* scales; const float* opacities;
    const float* viewmat; const float* K;
    int width, height;
    float near_plane, far_plane;
    bool antialiased;
};
void project_forward_cpu(const ProjectArgs& a, float* means2d, float* conics, float* depths, int32_t* radii,
                         float* opacities_eff, int num_threads);
// v_means2d [N,2], v_conics [N,3], v_depths [N], v_opacities_eff [N]
// -> v_means [N,3], v_quats [N,4], v_scales [N,3], v_opacities [N] (culled Gaussians get 0)
void project_backward_cpu(const ProjectArgs& a, const int32_t* radii, const float* v_means2d, const float* v_conics,
                          const float* v_depths, const float* v_opacities_eff, float* v_means, float* v_quats,
                          float* v_scales, float* v_opacities, int num_threads);

// ---- tile binning + compositing (rasterize_cpu.cpp / rasterize_cuda.cu) ----
struct CompositeArgs {
    int64_t n;
    int channels;
    const float* means2d;      // [N,2]
    const float* conics;       // [N,3]
    const float* opacities;    // [N] effective opacities
    const float* colors;       // [N,C]
    const float* background;   // [C]
    const int32_t* radii;      // [N]
    const float* depths;       // [N]
    int width, height;
};
inline int tiles_x_of(int width) { return (width + 15) / 16; }
inline int tiles_y_of(int height) { return (height + 15) / 16; }

// CPU. Step 1: tile counts per Gaussian (tiles_per_gauss [N]); returns the total number of intersections.
int64_t bin_count_cpu(const CompositeArgs& a, int32_t* tiles_per_gauss, int num_threads);
// Step 2: order [N] <- the Gaussians that touch a tile, sorted by (depth, index); returns how many.
int64_t depth_order_cpu(const CompositeArgs& a, const int32_t* tiles_per_gauss, int32_t* order);
// Step 3: gauss_ids [M] grouped by tile, each tile's in `order`, so sorted by (tile, depth, index); tile_ranges
// [T,2] (start, end) into gauss_ids.
void bin_fill_cpu(const CompositeArgs& a, const int32_t* order, int64_t n_order, int64_t m, int32_t* gauss_ids,
                  int32_t* tile_ranges, int num_threads);
// Step 4: image [H,W,C], alpha [H,W], last [H,W] (entries processed, incl. the last added one),
// final_T [H,W].
// spans [M]: the lane groups of its tile each visited entry was evaluated in (those its alpha ellipse reaches
// that still had a live pixel: rasterize_cpu.cpp's Span), kept for the backward. last, final_T and spans may
// all be nullptr together (no backward follows): nothing is recorded.
void composite_forward_cpu(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                           float* image, float* alpha, int32_t* last, float* final_T, uint32_t* spans,
                           int num_threads);
// v_image [H,W,C], v_alpha [H,W] -> v_means2d [N,2], v_conics [N,3], v_opacities [N], v_colors [N,C],
// v_background [C] (all overwritten).
void composite_backward_cpu(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                            const uint32_t* spans, const int32_t* last, const float* final_T, const float* v_image,
                            const float* v_alpha, float* v_means2d, float* v_conics, float* v_opacities,
                            float* v_colors, float* v_background, int num_threads);

// ---- rig-bound Gaussians posed for a frame (bind_cpu.cpp; CPU only, no gradient) ----
struct BindArgs {
    int64_t n;                  // Gaussians
    const float* vertices;      // [V,3] the posed mesh
    int64_t num_vertices;
    const int64_t* faces;       // [F,3] the binding's triangles
    int64_t num_faces;
    const int64_t* parent;      // [N] each Gaussian's triangle
    const float* local_means;   // [N,3] in units of the triangle's scale
    const float* local_quats;   // [N,4] (w,x,y,z), not necessarily unit
    const float* log_scales;    // [N,3]
};
// -> means [N,3], quats [N,4] (w,x,y,z), scales [N,3] in world space (binding.local_to_world); returns how many
// parents (out of the triangles) and used triangles (a vertex index out of the mesh) were out of range; those
// Gaussians come out as a zero point.
int64_t bind_world_cpu(const BindArgs& a, float* means, float* quats, float* scales, int num_threads);

// ---- view-dependent colour from SH coefficients (sh_cpu.cpp; CPU only, no gradient) ----
struct ShArgs {
    int64_t n;
    int degree;            // 0..3: the bands used, the first (degree+1)² coefficients
    int num_coeffs;        // K, coefficients stored per Gaussian (>= (degree+1)²)
    const float* coeffs;   // [N,K,3]
    const float* means;    // [N,3] world
    const double* centre;  // [3] the camera centre in world space
};
// -> rgb [N,3] = max(SH(normalize(mean - centre)) + 0.5, 0) (render/sh.py's sh_to_rgb).
void sh_colours_cpu(const ShArgs& a, float* rgb, int num_threads);

// ---- the training loss's SSIM map (ssim_cpu.cpp; CPU only) ----
constexpr int SSIM_WINDOW = 11;      // Gaussian window taps
constexpr float SSIM_SIGMA = 1.5f;   // its standard deviation, pixels
// x, y [H,W,C] images -> ssim_map [H,W] (mean over channels), stats [5,C,H,W] (blurred x, y, x², y², xy).
void ssim_forward_cpu(const float* x, const float* y, int H, int W, int C, float* ssim_map, float* stats,
                      int num_threads);
// v_map [H,W] -> v_x [H,W,C] (the gradient by x; y is a constant).
void ssim_backward_cpu(const float* x, const float* y, const float* stats, const float* v_map, int H, int W, int C,
                       float* v_x, int num_threads);

// ---- a rendered frame to uint8 over its background plate (finish_cpu.cpp; CPU only) ----
struct FinishArgs {
    const float* image;           // [H,W,3] the rasterizer's colour (over black where a plate goes behind it)
    const float* alpha;           // [H,W]
    int width, height;
    const uint8_t* plate;         // [h,w,3] RGB, or nullptr: no plate (the colour already holds its background)
    int plate_width, plate_height;
    const double* pixel_to_plate; // [3,3] homography: output pixel (centres at +0.5) -> plate pixel (same)
    bool identity;                // pixel_to_plate is the identity and the plate is [H,W,3]: read, not sampled
};
constexpr float PLATE_MIN_WEIGHT = 1.f / 1024.f;  // a plate weighted less under a pixel is not seen there
// -> seen [H,W,3] = the plate sampled bilinearly (reflected at its border: BORDER_REFLECT_101), rounded to uint8;
// rgb [H,W,3] = u8(clamp(image + w * seen / 255)) with w = 1 - clamp(alpha), or u8(clamp(image)) where
// w < PLATE_MIN_WEIGHT (the person hides the plate: it would move the value by under a quarter of a level),
// alpha_u8 [H,W] = u8(clamp(alpha)), where u8(v) = floor(v * 255 + 0.5). seen_out may be nullptr (not kept: then
// the plate is sampled only where it shows); when kept, it is sampled at every pixel.
void finish_frame_cpu(const FinishArgs& a, uint8_t* rgb, uint8_t* alpha_u8, uint8_t* seen_out, int num_threads);

// CUDA launchers (stream is a cudaStream_t; device pointers). Same contracts as the CPU functions. They throw
// std::runtime_error on a CUDA error (a failed launch, allocation or copy) instead of computing garbage.
//
// Scratch device memory, stream-ordered: the glue passes torch's caching allocator, so the launchers neither
// call cudaMalloc per frame nor keep a pool of their own. release(p) may be called right after the work using
// p was queued on the same stream.
struct CudaScratch {
    void* (*alloc)(size_t bytes, void* stream);
    void (*release)(void* ptr);
};
void project_forward_cuda(const ProjectArgs& a, float* means2d, float* conics, float* depths, int32_t* radii,
                          float* opacities_eff, void* stream);
void project_backward_cuda(const ProjectArgs& a, const int32_t* radii, const float* v_means2d,
                           const float* v_conics, const float* v_depths, const float* v_opacities_eff,
                           float* v_means, float* v_quats, float* v_scales, float* v_opacities, void* stream);
// Step 1 on the GPU: cum_tiles [N] = inclusive prefix sum of tiles per Gaussian, in int64 so that a sum past
// 2^31 is seen (the caller rejects it) instead of wrapping; returns M (synchronises the stream).
int64_t bin_count_cuda(const CompositeArgs& a, int64_t* cum_tiles, const CudaScratch& scratch, void* stream);
// Step 2: radix sort of (tile << 32 | depth bits) keys; fills gauss_ids [M] and tile_ranges [T,2]. M < 2^31.
void bin_fill_cuda(const CompositeArgs& a, const int64_t* cum_tiles, int64_t m, int32_t* gauss_ids,
                   int32_t* tile_ranges, const CudaScratch& scratch, void* stream);
void composite_forward_cuda(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                            float* image, float* alpha, int32_t* last, float* final_T, void* stream);
// v_* outputs must be zeroed by the caller (accumulated with atomics).
void composite_backward_cuda(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                             const int32_t* last, const float* final_T, const float* v_image, const float* v_alpha,
                             float* v_means2d, float* v_conics, float* v_opacities, float* v_colors,
                             float* v_background, void* stream);

}  // namespace a3d
