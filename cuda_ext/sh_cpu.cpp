// CPU core of the view-dependent colour of SH coefficients, without gradients (a clip, the viewer). Training
// evaluates it in PyTorch with autograd (avatar3d/render/sh.py), the reference this is held to by the tests:
// rgb = max(SH(normalize(mean - camera centre)) + 0.5, 0), the direction in float64 as there.
#include <omp.h>

#include <cmath>

#include "a3d/cores.h"

namespace a3d {
namespace {

constexpr double SH_C0 = 0.28209479177387814;
constexpr double SH_C1 = 0.4886025119029199;
constexpr double SH_C2[5] = {1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
                             0.5462742152960396};
constexpr double SH_C3[7] = {-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
                             -0.4570457994644658, 1.445305721320277, -0.5900435899266435};
constexpr double DIR_EPS = 1e-12;  // F.normalize's eps

// sh.sh_basis at a unit direction (3DGS ordering and signs); returns how many of basis[16] were set.
int sh_basis(int degree, float x, float y, float z, float* basis) {
    basis[0] = (float)SH_C0;
    if (degree < 1) return 1;
    basis[1] = (float)(-SH_C1) * y;
    basis[2] = (float)SH_C1 * z;
    basis[3] = (float)(-SH_C1) * x;
    if (degree < 2) return 4;
    const float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    basis[4] = (float)SH_C2[0] * xy;
    basis[5] = (float)SH_C2[1] * yz;
    basis[6] = (float)SH_C2[2] * (2.f * zz - xx - yy);
    basis[7] = (float)SH_C2[3] * xz;
    basis[8] = (float)SH_C2[4] * (xx - yy);
    if (degree < 3) return 9;
    basis[9] = (float)SH_C3[0] * y * (3.f * xx - yy);
    basis[10] = (float)SH_C3[1] * xy * z;
    basis[11] = (float)SH_C3[2] * y * (4.f * zz - xx - yy);
    basis[12] = (float)SH_C3[3] * z * (2.f * zz - 3.f * xx - 3.f * yy);
    basis[13] = (float)SH_C3[4] * x * (4.f * zz - xx - yy);
    basis[14] = (float)SH_C3[5] * z * (xx - yy);
    basis[15] = (float)SH_C3[6] * x * (xx - 3.f * yy);
    return 16;
}

}  // namespace

void sh_colours_cpu(const ShArgs& a, float* rgb, int num_threads) {
#pragma omp parallel for num_threads(num_threads) schedule(static) if (a.n > 8192)
    for (int64_t i = 0; i < a.n; ++i) {
        const float* m = a.means + 3 * i;
        const double dx = (double)m[0] - a.centre[0], dy = (double)m[1] - a.centre[1], dz = (double)m[2] - a.centre[2];
        const double len = std::fmax(std::sqrt(dx * dx + dy * dy + dz * dz), DIR_EPS);
        float basis[16];
        const int k = sh_basis(a.degree, (float)(dx / len), (float)(dy / len), (float)(dz / len), basis);
        const float* c = a.coeffs + (int64_t)a.num_coeffs * 3 * i;  // [K,3]
        for (int ch = 0; ch < 3; ++ch) {
            float v = 0.f;
            for (int b = 0; b < k; ++b) v += basis[b] * c[3 * b + ch];
            v += 0.5f;
            rgb[3 * i + ch] = v > 0.f ? v : 0.f;
        }
    }
}

}  // namespace a3d
