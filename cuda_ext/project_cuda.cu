// CUDA core of the projection op: one thread per Gaussian, the math of include/a3d/projection.h.
// Torch-free: compiles with plain nvcc.
#include <cuda_runtime.h>

#include "a3d/cores.h"
#include "a3d/cuda_check.h"
#include "a3d/projection.h"

namespace a3d {
namespace {

constexpr int BLOCK = 256;

__global__ void project_forward_kernel(ProjectArgs a, Camera cam, float* __restrict__ means2d,
                                       float* __restrict__ conics, float* __restrict__ depths,
                                       int32_t* __restrict__ radii, float* __restrict__ opacities_eff) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= a.n) return;
    ProjState st;
    int r;
    project_gaussian(cam, a.means + 3 * i, a.quats + 4 * i, a.scales + 3 * i, a.opacities[i], st, means2d + 2 * i,
                     conics + 3 * i, depths[i], r, opacities_eff[i]);
    radii[i] = r;
}

__global__ void project_backward_kernel(ProjectArgs a, Camera cam, const int32_t* __restrict__ radii,
                                        const float* __restrict__ v_means2d, const float* __restrict__ v_conics,
                                        const float* __restrict__ v_depths, const float* __restrict__ v_opac_eff,
                                        float* __restrict__ v_means, float* __restrict__ v_quats,
                                        float* __restrict__ v_scales, float* __restrict__ v_opacities) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= a.n) return;
    float* vm = v_means + 3 * i;
    float* vq = v_quats + 4 * i;
    float* vs = v_scales + 3 * i;
    const float vd = v_depths ? v_depths[i] : 0.f;
    if (radii[i] <= 0) {
        // Culled: only the depth (camera-space z, always returned) carries a gradient.
        for (int j = 0; j < 3; ++j) vm[j] = cam.R[6 + j] * vd;
        vq[0] = vq[1] = vq[2] = vq[3] = 0.f;
        vs[0] = vs[1] = vs[2] = 0.f;
        v_opacities[i] = 0.f;
        return;
    }
    ProjState st;
    float m2d[2], con[3], depth, oeff;
    int r;
    project_gaussian(cam, a.means + 3 * i, a.quats + 4 * i, a.scales + 3 * i, a.opacities[i], st, m2d, con, depth,
                     r, oeff);
    float vo;
    project_gaussian_vjp(cam, a.scales + 3 * i, a.opacities[i], st, v_means2d + 2 * i, v_conics + 3 * i, vd,
                         v_opac_eff[i], vm, vq, vs, vo);
    v_opacities[i] = vo;
}

}  // namespace

// viewmat and K are host pointers (the camera is set up on the host and passed by value).
void project_forward_cuda(const ProjectArgs& a, float* means2d, float* conics, float* depths, int32_t* radii,
                          float* opacities_eff, void* stream) {
    if (a.n == 0) return;
    const Camera cam = make_camera(a.viewmat, a.K, a.width, a.height, a.near_plane, a.far_plane, a.antialiased);
    const unsigned blocks = (unsigned)((a.n + BLOCK - 1) / BLOCK);
    project_forward_kernel<<<blocks, BLOCK, 0, (cudaStream_t)stream>>>(a, cam, means2d, conics, depths, radii,
                                                                        opacities_eff);
    A3D_LAUNCH_CHECK("project_forward_kernel");
}

void project_backward_cuda(const ProjectArgs& a, const int32_t* radii, const float* v_means2d,
                           const float* v_conics, const float* v_depths, const float* v_opacities_eff,
                           float* v_means, float* v_quats, float* v_scales, float* v_opacities, void* stream) {
    if (a.n == 0) return;
    const Camera cam = make_camera(a.viewmat, a.K, a.width, a.height, a.near_plane, a.far_plane, a.antialiased);
    const unsigned blocks = (unsigned)((a.n + BLOCK - 1) / BLOCK);
    project_backward_kernel<<<blocks, BLOCK, 0, (cudaStream_t)stream>>>(
        a, cam, radii, v_means2d, v_conics, v_depths, v_opacities_eff, v_means, v_quats, v_scales, v_opacities);
    A3D_LAUNCH_CHECK("project_backward_kernel");
}

}  // namespace a3d
