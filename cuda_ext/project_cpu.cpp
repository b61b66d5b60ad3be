// CPU core of the projection op: one independent Gaussian per iteration, OpenMP over Gaussians.
#include <omp.h>

#include "a3d/cores.h"
#include "a3d/projection.h"

namespace a3d {

void project_forward_cpu(const ProjectArgs& a, float* means2d, float* conics, float* depths, int32_t* radii,
                         float* opacities_eff, int num_threads) {
    const Camera cam = make_camera(a.viewmat, a.K, a.width, a.height, a.near_plane, a.far_plane, a.antialiased);
#pragma omp parallel for num_threads(num_threads) schedule(static) if (a.n > 4096)
    for (int64_t i = 0; i < a.n; ++i) {
        ProjState st;
        int r;
        project_gaussian(cam, a.means + 3 * i, a.quats + 4 * i, a.scales + 3 * i, a.opacities[i], st,
                         means2d + 2 * i, conics + 3 * i, depths[i], r, opacities_eff[i]);
        radii[i] = r;
    }
}

void project_backward_cpu(const ProjectArgs& a, const int32_t* radii, const float* v_means2d, const float* v_conics,
                          const float* v_depths, const float* v_opacities_eff, float* v_means, float* v_quats,
                          float* v_scales, float* v_opacities, int num_threads) {
    const Camera cam = make_camera(a.viewmat, a.K, a.width, a.height, a.near_plane, a.far_plane, a.antialiased);
#pragma omp parallel for num_threads(num_threads) schedule(static) if (a.n > 4096)
    for (int64_t i = 0; i < a.n; ++i) {
        float* vm = v_means + 3 * i;
        float* vq = v_quats + 4 * i;
        float* vs = v_scales + 3 * i;
        if (radii[i] <= 0) {
            // Culled: only the depth (camera-space z, always returned) carries a gradient.
            const float* R = cam.R;
            const float vd = v_depths ? v_depths[i] : 0.f;
            for (int j = 0; j < 3; ++j) vm[j] = R[6 + j] * vd;
            vq[0] = vq[1] = vq[2] = vq[3] = 0.f;
            vs[0] = vs[1] = vs[2] = 0.f;
            v_opacities[i] = 0.f;
            continue;
        }
        ProjState st;
        float m2d[2], con[3], depth, oeff;
        int r;
        project_gaussian(cam, a.means + 3 * i, a.quats + 4 * i, a.scales + 3 * i, a.opacities[i], st, m2d, con,
                         depth, r, oeff);
        project_gaussian_vjp(cam, a.scales + 3 * i, a.opacities[i], st, v_means2d + 2 * i, v_conics + 3 * i,
                             v_depths ? v_depths[i] : 0.f, v_opacities_eff[i], vm, vq, vs, v_opacities[i]);
    }
}

}  // namespace a3d
