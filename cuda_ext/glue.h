// Torch-level ops of avatar3d._C (implemented in *_glue.cpp, bound in ext.cpp).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace a3d {

// -> means2d [N,2], conics [N,3], depths [N], radii [N] int32, opacities_eff [N]
std::vector<at::Tensor> project_forward(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                        const at::Tensor& opacities, const at::Tensor& viewmat, const at::Tensor& K,
                                        int64_t width, int64_t height, double near_plane, double far_plane,
                                        bool antialiased);
// -> v_means [N,3], v_quats [N,4], v_scales [N,3], v_opacities [N]
std::vector<at::Tensor> project_backward(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                         const at::Tensor& opacities, const at::Tensor& viewmat, const at::Tensor& K,
                                         int64_t width, int64_t height, double near_plane, double far_plane,
                                         bool antialiased, const at::Tensor& radii, const at::Tensor& v_means2d,
                                         const at::Tensor& v_conics, const at::Tensor& v_depths,
                                         const at::Tensor& v_opacities_eff);
// -> image [H,W,C], alpha [H,W,1], gauss_ids [M] int32, tile_ranges [T,2] int32, last [H,W] int32, final_T [H,W],
//    spans [M] int32 (CPU: the lane groups each entry was evaluated in, reused by the backward; CUDA: empty).
// for_backward false (no gradient will be asked for): the CPU skips recording last, final_T and spans and returns
// them empty.
std::vector<at::Tensor> composite_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& opacities, const at::Tensor& colors,
                                          const at::Tensor& background, const at::Tensor& radii,
                                          const at::Tensor& depths, int64_t width, int64_t height,
                                          bool for_backward);
// -> v_means2d [N,2], v_conics [N,3], v_opacities [N], v_colors [N,C], v_background [C]
std::vector<at::Tensor> composite_backward(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& opacities, const at::Tensor& colors,
                                           const at::Tensor& background, const at::Tensor& gauss_ids,
                                           const at::Tensor& tile_ranges, const at::Tensor& spans,
                                           const at::Tensor& last,
                                           const at::Tensor& final_T, const at::Tensor& v_image,
                                           const at::Tensor& v_alpha, int64_t width, int64_t height);

// The training loss's SSIM map (CPU): x, y [H,W,C] -> ssim_map [H,W], stats [5,C,H,W]
std::vector<at::Tensor> ssim_forward(const at::Tensor& x, const at::Tensor& y);
// -> v_x [H,W,C]
at::Tensor ssim_backward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& stats, const at::Tensor& v_map);

// A rendered frame to uint8 (CPU): image [H,W,3], alpha [H,W(,1)], plate uint8 [h,w,3] or empty, pixel_to_plate
// float64 [3,3] -> rgb uint8 [H,W,3], alpha uint8 [H,W], seen uint8 [H,W,3] (the plate as seen; empty unless
// keep_seen)
// coeffs [N,K,3] f32, means [N,3] f32, centre [3] f64 (CPU) -> rgb [N,3] f32 for SH degree `degree`.
at::Tensor sh_colours(const at::Tensor& coeffs, const at::Tensor& means, const at::Tensor& centre, int64_t degree);
// vertices [V,3] f32, faces [F,3] i64, parent [N] i64, local_means [N,3], local_quats [N,4], log_scales [N,3]
// (CPU) -> world means [N,3], quats [N,4], scales [N,3].
std::vector<at::Tensor> bind_world(const at::Tensor& vertices, const at::Tensor& faces, const at::Tensor& parent,
                                   const at::Tensor& local_means, const at::Tensor& local_quats,
                                   const at::Tensor& log_scales);
std::vector<at::Tensor> finish_frame(const at::Tensor& image, const at::Tensor& alpha, const at::Tensor& plate,
                                     const at::Tensor& pixel_to_plate, bool keep_seen);

bool has_cuda();

}  // namespace a3d
