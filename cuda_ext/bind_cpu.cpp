// CPU core of posing rig-bound Gaussians for a frame, without gradients (a clip, the viewer, an export).
// Training poses them in PyTorch with autograd (avatar3d/gaussians/binding.py); this is the same maths in one
// pass per Gaussian instead of some twenty tensor operations, and the tests hold it to that reference.
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "a3d/cores.h"

namespace a3d {
namespace {

constexpr float FRAME_EPS = 1e-12f;  // binding.triangle_frames' eps: a degenerate edge or normal stays finite
constexpr float QUAT_EPS = 1e-12f;   // binding.local_to_world's floor on a quaternion's norm

struct Frame {
    float origin[3];
    float R[9];  // row-major; column c is the frame's axis c (x along the first edge, z along the normal)
    float scale;  // mean edge length
    float q[4];   // R as a unit quaternion (w, x, y, z), w >= 0
};

inline float norm3(const float* a) { return std::sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2]); }

inline void cross3(const float* a, const float* b, float* out) {
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

// rotation.matrix_to_quaternion: Shepperd's method, the candidate of the largest diagonal combination (the
// first on a tie, as argmax), normalised, with w >= 0.
void shepperd(const float* m, float* q) {
    const float d[4] = {1 + m[0] + m[4] + m[8], 1 + m[0] - m[4] - m[8], 1 - m[0] + m[4] - m[8],
                        1 - m[0] - m[4] + m[8]};
    int best = 0;
    for (int i = 1; i < 4; ++i)
        if (d[i] > d[best]) best = i;
    const float s21 = m[7], s12 = m[5], s02 = m[2], s20 = m[6], s10 = m[3], s01 = m[1];
    const float cand[4][4] = {{d[0], s21 - s12, s02 - s20, s10 - s01},
                              {s21 - s12, d[1], s10 + s01, s02 + s20},
                              {s02 - s20, s10 + s01, d[2], s21 + s12},
                              {s10 - s01, s02 + s20, s21 + s12, d[3]}};
    const float* c = cand[best];
    const float n = std::sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2] + c[3] * c[3]);
    const float sign = c[0] / n < 0.f ? -1.f : 1.f;
    for (int i = 0; i < 4; ++i) q[i] = sign * (c[i] / n);
}

// binding.triangle_frames for one triangle.
void triangle_frame(const float* v0, const float* v1, const float* v2, Frame& f) {
    float e1[3], e2[3], e3[3], n[3], x[3], y[3], z[3];
    for (int i = 0; i < 3; ++i) {
        e1[i] = v1[i] - v0[i];
        e2[i] = v2[i] - v0[i];
        e3[i] = v2[i] - v1[i];
    }
    const float len1 = norm3(e1);
    const float len_x = std::fmax(len1, FRAME_EPS);
    for (int i = 0; i < 3; ++i) x[i] = e1[i] / len_x;
    cross3(e1, e2, n);
    const float len_z = std::fmax(norm3(n), FRAME_EPS);
    for (int i = 0; i < 3; ++i) z[i] = n[i] / len_z;
    cross3(z, x, y);
    for (int r = 0; r < 3; ++r) {
        f.R[3 * r] = x[r];
        f.R[3 * r + 1] = y[r];
        f.R[3 * r + 2] = z[r];
        f.origin[r] = (v0[r] + v1[r] + v2[r]) / 3.f;
    }
    f.scale = (len1 + norm3(e2) + norm3(e3)) / 3.f;
    shepperd(f.R, f.q);
}

// rotation.quaternion_multiply: a ⊗ b (w, x, y, z).
inline void quat_mul(const float* a, const float* b, float* out) {
    out[0] = a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3];
    out[1] = a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2];
    out[2] = a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1];
    out[3] = a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0];
}

// binding.local_to_world for one Gaussian in its parent's frame.
void place(const Frame& f, const float* local_mean, const float* local_quat, const float* log_scale, float* mean,
           float* quat, float* scale) {
    for (int r = 0; r < 3; ++r) {
        const float* row = f.R + 3 * r;
        mean[r] = f.origin[r] + f.scale * (row[0] * local_mean[0] + row[1] * local_mean[1] + row[2] * local_mean[2]);
        scale[r] = f.scale * std::exp(log_scale[r]);
    }
    const float qn = std::fmax(std::sqrt(local_quat[0] * local_quat[0] + local_quat[1] * local_quat[1] +
                                         local_quat[2] * local_quat[2] + local_quat[3] * local_quat[3]),
                               QUAT_EPS);
    const float unit[4] = {local_quat[0] / qn, local_quat[1] / qn, local_quat[2] / qn, local_quat[3] / qn};
    quat_mul(f.q, unit, quat);
}

}  // namespace

int64_t bind_world_cpu(const BindArgs& a, float* means, float* quats, float* scales, int num_threads) {
    // Each used triangle's frame once (a triangle carries several Gaussians, rarely next to each other), then
    // every Gaussian placed in its parent's frame.
    std::vector<uint8_t> used((size_t)a.num_faces, 0);
    int64_t bad = 0;
    for (int64_t i = 0; i < a.n; ++i) {
        const int64_t p = a.parent[i];
        if (p >= 0 && p < a.num_faces) used[p] = 1;
    }
    std::unique_ptr<Frame[]> frames(new Frame[(size_t)a.num_faces]);  // only the used ones are written and read
#pragma omp parallel for num_threads(num_threads) schedule(static) reduction(+ : bad) if (a.num_faces > 4096)
    for (int64_t f = 0; f < a.num_faces; ++f) {
        if (!used[f]) continue;
        const int64_t* tri = a.faces + 3 * f;
        bool ok = true;
        for (int c = 0; c < 3; ++c) ok = ok && tri[c] >= 0 && tri[c] < a.num_vertices;
        if (!ok) {  // the glue reports it
            used[f] = 0;
            ++bad;
            continue;
        }
        triangle_frame(a.vertices + 3 * tri[0], a.vertices + 3 * tri[1], a.vertices + 3 * tri[2], frames[f]);
    }
#pragma omp parallel for num_threads(num_threads) schedule(static) reduction(+ : bad) if (a.n > 4096)
    for (int64_t i = 0; i < a.n; ++i) {
        const int64_t p = a.parent[i];
        if (p < 0 || p >= a.num_faces || !used[p]) {  // the outputs stay finite; the glue reports it
            bad += p < 0 || p >= a.num_faces;
            for (int c = 0; c < 3; ++c) means[3 * i + c] = scales[3 * i + c] = 0.f;
            for (int c = 0; c < 4; ++c) quats[4 * i + c] = c == 0 ? 1.f : 0.f;
            continue;
        }
        place(frames[p], a.local_means + 3 * i, a.local_quats + 4 * i, a.log_scales + 3 * i, means + 3 * i,
              quats + 4 * i, scales + 3 * i);
    }
    return bad;
}

}  // namespace a3d
