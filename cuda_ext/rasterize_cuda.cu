// CUDA core of the compositing op: tile binning with a radix sort of (tile | depth) keys (CUB), then one
// block per 16x16 tile with shared-memory batches, per-pixel early termination, and a reverse traversal for
// the backward pass that reduces each Gaussian's gradient across the warp before one atomicAdd per warp.
// Same numerics as rasterize_cpu.cpp (include/a3d/raster.h). Torch-free: compiles with plain nvcc.
#include <cub/cub.cuh>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <stdexcept>

#include "a3d/cores.h"
#include "a3d/cuda_check.h"
#include "a3d/raster.h"

namespace a3d {
namespace {

constexpr int BLOCK = 256;
constexpr int MAX_CH = 4;  // channels per compositing pass; more channels run in several passes

// One scratch buffer from the caller's stream-ordered allocator, released when it goes out of scope (also when
// a later step throws). Never empty: CUB treats a null temp-storage pointer as a size query and does nothing.
class Scratch {
  public:
    Scratch(const CudaScratch& s, size_t bytes, cudaStream_t stream) : s_(s), p_(s.alloc(bytes ? bytes : 1, stream)) {
        if (p_ == nullptr) throw std::runtime_error("avatar3d CUDA: scratch allocation failed");
    }
    ~Scratch() { s_.release(p_); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    template <typename T>
    T* as() const { return static_cast<T*>(p_); }

  private:
    CudaScratch s_;
    void* p_;
};

// ---------------------------------------------------------------- binning

__global__ void count_tiles_kernel(CompositeArgs a, int tiles_x, int tiles_y, int64_t* __restrict__ counts) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= a.n) return;
    int64_t cnt = 0;
    if (a.radii[i] > 0) {
        int x0, y0, x1, y1;
        tile_rect(a.means2d[2 * i], a.means2d[2 * i + 1], a.radii[i], tiles_x, tiles_y, x0, y0, x1, y1);
        cnt = (int64_t)(x1 - x0) * (y1 - y0);
    }
    counts[i] = cnt;
}

// Keys: tile id in the high 32 bits, depth_key in the low 32. Emitted in Gaussian order, so the stable radix
// sort keeps ascending index for equal (tile, depth), the CPU's (depth, index) order.
__global__ void emit_keys_kernel(CompositeArgs a, int tiles_x, int tiles_y, const int64_t* __restrict__ cum,
                                 uint64_t* __restrict__ keys, int32_t* __restrict__ vals) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= a.n || a.radii[i] <= 0) return;
    int x0, y0, x1, y1;
    tile_rect(a.means2d[2 * i], a.means2d[2 * i + 1], a.radii[i], tiles_x, tiles_y, x0, y0, x1, y1);
    int64_t off = i == 0 ? 0 : cum[i - 1];
    const uint64_t depth_bits = (uint64_t)depth_key(a.depths[i]);
    for (int y = y0; y < y1; ++y) {
        for (int x = x0; x < x1; ++x) {
            keys[off] = ((uint64_t)(y * tiles_x + x) << 32) | depth_bits;
            vals[off] = (int32_t)i;
            ++off;
        }
    }
}

__global__ void tile_ranges_kernel(int64_t m, const uint64_t* __restrict__ keys, int32_t* __restrict__ ranges) {
    const int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= m) return;
    const uint32_t tile = (uint32_t)(keys[k] >> 32);
    if (k == 0 || (uint32_t)(keys[k - 1] >> 32) != tile) ranges[2 * tile] = (int32_t)k;
    if (k == m - 1 || (uint32_t)(keys[k + 1] >> 32) != tile) ranges[2 * tile + 1] = (int32_t)(k + 1);
}

// ---------------------------------------------------------------- forward

template <int CH>
__global__ void __launch_bounds__(BLOCK) composite_forward_kernel(
    CompositeArgs a, int tiles_x, int c0, const int32_t* __restrict__ ids, const int32_t* __restrict__ ranges,
    float* __restrict__ image, float* __restrict__ alpha, int32_t* __restrict__ last, float* __restrict__ final_T) {
    __shared__ float2 s_xy[BLOCK];
    __shared__ float4 s_co[BLOCK];  // conic (a, b, c), opacity
    __shared__ float s_col[BLOCK * CH];

    const int tile = blockIdx.y * tiles_x + blockIdx.x;
    const int tid = threadIdx.y * TILE + threadIdx.x;
    const int px = blockIdx.x * TILE + threadIdx.x, py = blockIdx.y * TILE + threadIdx.y;
    const bool inside = px < a.width && py < a.height;
    const float fx = (float)px + 0.5f, fy = (float)py + 0.5f;
    const int start = ranges[2 * tile], end = ranges[2 * tile + 1];
    const int C = a.channels;

    bool done = !inside;
    float T = 1.f;
    float acc[CH];
#pragma unroll
    for (int c = 0; c < CH; ++c) acc[c] = 0.f;
    int n_last = 0;

    for (int base = start; base < end; base += BLOCK) {
        // The whole block stops once every pixel has (early termination per pixel, exit per block).
        if (__syncthreads_count(done) == BLOCK) break;
        const int k = base + tid;
        if (k < end) {
            const int g = ids[k];
            s_xy[tid] = make_float2(a.means2d[2 * g], a.means2d[2 * g + 1]);
            s_co[tid] = make_float4(a.conics[3 * g], a.conics[3 * g + 1], a.conics[3 * g + 2], a.opacities[g]);
#pragma unroll
            for (int c = 0; c < CH; ++c) s_col[tid * CH + c] = a.colors[(int64_t)g * C + c0 + c];
        }
        __syncthreads();
        const int batch = min(BLOCK, end - base);
        for (int j = 0; j < batch && !done; ++j) {
            const float2 xy = s_xy[j];
            const float4 co = s_co[j];
            const float dx = xy.x - fx, dy = xy.y - fy;
            const float sigma = gauss_sigma(co.x, co.y, co.z, dx, dy);
            if (sigma < 0.f) continue;
            // exp_neg: the CPU's exp (include/a3d/raster.h), so both backends cut at 1/255 in the same places
            const float al = minf(ALPHA_MAX, co.w * exp_neg(-sigma));
            if (al < ALPHA_MIN) continue;
            const float tn = T * (1.f - al);
            if (tn <= T_MIN) {
                done = true;
                break;
            }
            const float w = al * T;
#pragma unroll
            for (int c = 0; c < CH; ++c) acc[c] += w * s_col[j * CH + c];
            T = tn;
            n_last = base - start + j + 1;
        }
    }
    if (!inside) return;
    const int64_t pix = (int64_t)py * a.width + px;
#pragma unroll
    for (int c = 0; c < CH; ++c) image[pix * C + c0 + c] = acc[c] + T * a.background[c0 + c];
    if (c0 == 0) {
        alpha[pix] = 1.f - T;
        last[pix] = n_last;
        final_T[pix] = T;
    }
}

// ---------------------------------------------------------------- backward

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

template <int CH>
__global__ void __launch_bounds__(BLOCK) composite_backward_kernel(
    CompositeArgs a, int tiles_x, int c0, const int32_t* __restrict__ ids, const int32_t* __restrict__ ranges,
    const int32_t* __restrict__ last, const float* __restrict__ final_T, const float* __restrict__ v_image,
    const float* __restrict__ v_alpha, float* __restrict__ v_means2d, float* __restrict__ v_conics,
    float* __restrict__ v_opacities, float* __restrict__ v_colors, float* __restrict__ v_background) {
    __shared__ int32_t s_id[BLOCK];
    __shared__ float2 s_xy[BLOCK];
    __shared__ float4 s_co[BLOCK];
    __shared__ float s_col[BLOCK * CH];
    __shared__ int s_maxlast;

    const int tile = blockIdx.y * tiles_x + blockIdx.x;
    const int tid = threadIdx.y * TILE + threadIdx.x;
    const int lane = tid & 31;
    const int px = blockIdx.x * TILE + threadIdx.x, py = blockIdx.y * TILE + threadIdx.y;
    const bool inside = px < a.width && py < a.height;
    const float fx = (float)px + 0.5f, fy = (float)py + 0.5f;
    const int start = ranges[2 * tile];
    const int C = a.channels;
    const int64_t pix = (int64_t)py * a.width + px;

    float T = 1.f, T_fin = 1.f, vA = 0.f;
    int n_last = 0;
    float vC[CH], buf[CH];
#pragma unroll
    for (int c = 0; c < CH; ++c) vC[c] = buf[c] = 0.f;
    if (inside) {
        T = T_fin = final_T[pix];
        n_last = last[pix];
#pragma unroll
        for (int c = 0; c < CH; ++c) vC[c] = v_image[pix * C + c0 + c];
        if (c0 == 0) {
            // dL/dalpha_out and the background term -T_final bg·dL/dimage (all channels) enter once.
            float bgdot = 0.f;
            for (int c = 0; c < C; ++c) bgdot += a.background[c] * v_image[pix * C + c];
            vA = v_alpha[pix] - bgdot;
        }
    }
    // dL/dbackground = sum over pixels of T_final dL/dimage
#pragma unroll
    for (int c = 0; c < CH; ++c) {
        const float v = warp_sum(T_fin * vC[c] * (inside ? 1.f : 0.f));
        if (lane == 0 && v != 0.f) atomicAdd(v_background + c0 + c, v);
    }

    if (tid == 0) s_maxlast = 0;
    __syncthreads();
    atomicMax(&s_maxlast, n_last);
    __syncthreads();
    const int end = start + s_maxlast;  // nothing after the last contributor of any pixel

    for (int top = end; top > start; top -= BLOCK) {
        const int bottom = max(start, top - BLOCK);
        const int k = bottom + tid;
        __syncthreads();
        if (k < top) {
            const int g = ids[k];
            s_id[tid] = g;
            s_xy[tid] = make_float2(a.means2d[2 * g], a.means2d[2 * g + 1]);
            s_co[tid] = make_float4(a.conics[3 * g], a.conics[3 * g + 1], a.conics[3 * g + 2], a.opacities[g]);
#pragma unroll
            for (int c = 0; c < CH; ++c) s_col[tid * CH + c] = a.colors[(int64_t)g * C + c0 + c];
        }
        __syncthreads();
        for (int j = top - bottom - 1; j >= 0; --j) {
            const int entry = bottom - start + j;  // position in the tile's list
            const float2 xy = s_xy[j];
            const float4 co = s_co[j];
            const float dx = xy.x - fx, dy = xy.y - fy;
            const float sigma = gauss_sigma(co.x, co.y, co.z, dx, dy);
            const float vis = exp_neg(-sigma);  // the forward's exp: same cut-offs, exact T recovery
            const float al = minf(ALPHA_MAX, co.w * vis);
            const bool valid = inside && entry < n_last && sigma >= 0.f && al >= ALPHA_MIN;
            if (!__any_sync(0xffffffffu, valid)) continue;

            float g_xy[2] = {0.f, 0.f}, g_co[3] = {0.f, 0.f, 0.f}, g_o = 0.f, g_col[CH];
#pragma unroll
            for (int c = 0; c < CH; ++c) g_col[c] = 0.f;
            if (valid) {
                const float ra = 1.f / (1.f - al);
                T *= ra;  // transmittance in front of this Gaussian
                const float fac = al * T;
                float va = T_fin * ra * vA;
#pragma unroll
                for (int c = 0; c < CH; ++c) {
                    const float col = s_col[j * CH + c];
                    g_col[c] = fac * vC[c];
                    va += (col * T - buf[c] * ra) * vC[c];
                    buf[c] += col * fac;
                }
                if (co.w * vis <= ALPHA_MAX) {  // no gradient through the 0.99 clamp
                    const float v_sigma = -co.w * vis * va;
                    g_xy[0] = v_sigma * (co.x * dx + co.y * dy);
                    g_xy[1] = v_sigma * (co.y * dx + co.z * dy);
                    g_co[0] = 0.5f * v_sigma * dx * dx;
                    g_co[1] = v_sigma * dx * dy;
                    g_co[2] = 0.5f * v_sigma * dy * dy;
                    g_o = vis * va;
                }
            }
            // One atomicAdd per warp and value instead of one per pixel.
            const int g = s_id[j];
            g_xy[0] = warp_sum(g_xy[0]);
            g_xy[1] = warp_sum(g_xy[1]);
            g_co[0] = warp_sum(g_co[0]);
            g_co[1] = warp_sum(g_co[1]);
            g_co[2] = warp_sum(g_co[2]);
            g_o = warp_sum(g_o);
#pragma unroll
            for (int c = 0; c < CH; ++c) g_col[c] = warp_sum(g_col[c]);
            if (lane == 0) {
                // With several channel passes the geometry gradients add up: they are linear in dL/dalpha.
                atomicAdd(v_means2d + 2 * g, g_xy[0]);
                atomicAdd(v_means2d + 2 * g + 1, g_xy[1]);
                atomicAdd(v_conics + 3 * g, g_co[0]);
                atomicAdd(v_conics + 3 * g + 1, g_co[1]);
                atomicAdd(v_conics + 3 * g + 2, g_co[2]);
                atomicAdd(v_opacities + g, g_o);
#pragma unroll
                for (int c = 0; c < CH; ++c) atomicAdd(v_colors + (int64_t)g * C + c0 + c, g_col[c]);
            }
        }
    }
}

template <int CH>
void launch_forward(const CompositeArgs& a, int c0, const int32_t* ids, const int32_t* ranges, float* image,
                    float* alpha, int32_t* last, float* final_T, cudaStream_t stream) {
    const dim3 grid(tiles_x_of(a.width), tiles_y_of(a.height)), block(TILE, TILE);
    composite_forward_kernel<CH><<<grid, block, 0, stream>>>(a, tiles_x_of(a.width), c0, ids, ranges, image, alpha,
                                                             last, final_T);
    A3D_LAUNCH_CHECK("composite_forward_kernel");
}

template <int CH>
void launch_backward(const CompositeArgs& a, int c0, const int32_t* ids, const int32_t* ranges,
                     const int32_t* last, const float* final_T, const float* v_image, const float* v_alpha,
                     float* v_means2d, float* v_conics, float* v_opacities, float* v_colors, float* v_background,
                     cudaStream_t stream) {
    const dim3 grid(tiles_x_of(a.width), tiles_y_of(a.height)), block(TILE, TILE);
    composite_backward_kernel<CH><<<grid, block, 0, stream>>>(a, tiles_x_of(a.width), c0, ids, ranges, last, final_T,
                                                              v_image, v_alpha, v_means2d, v_conics, v_opacities,
                                                              v_colors, v_background);
    A3D_LAUNCH_CHECK("composite_backward_kernel");
}

unsigned blocks_for(int64_t n) { return (unsigned)((n + BLOCK - 1) / BLOCK); }

}  // namespace

int64_t bin_count_cuda(const CompositeArgs& a, int64_t* cum_tiles, const CudaScratch& scratch, void* stream_ptr) {
    if (a.n == 0) return 0;  // no zero-sized launches
    if (a.n > INT_MAX) throw std::runtime_error("avatar3d CUDA: more than 2^31-1 Gaussians");
    cudaStream_t stream = (cudaStream_t)stream_ptr;
    const int tx = tiles_x_of(a.width), ty = tiles_y_of(a.height);
    count_tiles_kernel<<<blocks_for(a.n), BLOCK, 0, stream>>>(a, tx, ty, cum_tiles);
    A3D_LAUNCH_CHECK("count_tiles_kernel");
    size_t temp_bytes = 0;
    A3D_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, temp_bytes, cum_tiles, cum_tiles, (int)a.n, stream));
    {
        const Scratch temp(scratch, temp_bytes, stream);
        A3D_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp.as<void>(), temp_bytes, cum_tiles, cum_tiles, (int)a.n,
                                                     stream));
    }
    int64_t total = 0;
    A3D_CUDA_CHECK(cudaMemcpyAsync(&total, cum_tiles + a.n - 1, sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
    A3D_CUDA_CHECK(cudaStreamSynchronize(stream));  // M sizes the next allocation
    return total;
}

void bin_fill_cuda(const CompositeArgs& a, const int64_t* cum_tiles, int64_t m, int32_t* gauss_ids,
                   int32_t* tile_ranges, const CudaScratch& scratch, void* stream_ptr) {
    cudaStream_t stream = (cudaStream_t)stream_ptr;
    const int tx = tiles_x_of(a.width), ty = tiles_y_of(a.height);
    const int n_tiles = tx * ty;
    // Tiles no Gaussian touches keep the empty range (0, 0).
    A3D_CUDA_CHECK(cudaMemsetAsync(tile_ranges, 0, sizeof(int32_t) * 2 * (size_t)n_tiles, stream));
    if (m == 0) return;
    if (m > INT_MAX) throw std::runtime_error("avatar3d CUDA: more than 2^31-1 tile intersections");
    const Scratch keys_in(scratch, sizeof(uint64_t) * m, stream), keys_out(scratch, sizeof(uint64_t) * m, stream),
        vals_in(scratch, sizeof(int32_t) * m, stream);
    emit_keys_kernel<<<blocks_for(a.n), BLOCK, 0, stream>>>(a, tx, ty, cum_tiles, keys_in.as<uint64_t>(),
                                                           vals_in.as<int32_t>());
    A3D_LAUNCH_CHECK("emit_keys_kernel");
    // Only the bits in use: 32 of depth and enough for the largest tile id.
    int tile_bits = 1;
    while ((1 << tile_bits) < n_tiles) ++tile_bits;
    const int end_bit = 32 + tile_bits;
    size_t temp_bytes = 0;
    A3D_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in.as<uint64_t>(),
                                                   keys_out.as<uint64_t>(), vals_in.as<int32_t>(), gauss_ids, (int)m,
                                                   0, end_bit, stream));
    {
        const Scratch temp(scratch, temp_bytes, stream);
        A3D_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.as<void>(), temp_bytes, keys_in.as<uint64_t>(),
                                                       keys_out.as<uint64_t>(), vals_in.as<int32_t>(), gauss_ids,
                                                       (int)m, 0, end_bit, stream));
    }
    tile_ranges_kernel<<<blocks_for(m), BLOCK, 0, stream>>>(m, keys_out.as<uint64_t>(), tile_ranges);
    A3D_LAUNCH_CHECK("tile_ranges_kernel");
}

void composite_forward_cuda(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                            float* image, float* alpha, int32_t* last, float* final_T, void* stream_ptr) {
    cudaStream_t stream = (cudaStream_t)stream_ptr;
    for (int c0 = 0; c0 < a.channels; c0 += MAX_CH) {
        switch (a.channels - c0 >= MAX_CH ? MAX_CH : a.channels - c0) {
            case 1: launch_forward<1>(a, c0, gauss_ids, tile_ranges, image, alpha, last, final_T, stream); break;
            case 2: launch_forward<2>(a, c0, gauss_ids, tile_ranges, image, alpha, last, final_T, stream); break;
            case 3: launch_forward<3>(a, c0, gauss_ids, tile_ranges, image, alpha, last, final_T, stream); break;
            default: launch_forward<4>(a, c0, gauss_ids, tile_ranges, image, alpha, last, final_T, stream); break;
        }
    }
}

void composite_backward_cuda(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                             const int32_t* last, const float* final_T, const float* v_image, const float* v_alpha,
                             float* v_means2d, float* v_conics, float* v_opacities, float* v_colors,
                             float* v_background, void* stream_ptr) {
    cudaStream_t stream = (cudaStream_t)stream_ptr;
    for (int c0 = 0; c0 < a.channels; c0 += MAX_CH) {
#define A3D_BWD(CH)                                                                                             \
    launch_backward<CH>(a, c0, gauss_ids, tile_ranges, last, final_T, v_image, v_alpha, v_means2d, v_conics,    \
                        v_opacities, v_colors, v_background, stream)
        switch (a.channels - c0 >= MAX_CH ? MAX_CH : a.channels - c0) {
            case 1: A3D_BWD(1); break;
            case 2: A3D_BWD(2); break;
            case 3: A3D_BWD(3); break;
            default: A3D_BWD(4); break;
        }
#undef A3D_BWD
    }
}

}  // namespace a3d
