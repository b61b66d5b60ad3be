// Projection of one 3D Gaussian (cuda_ext/README.md steps 1-8) and its vector-Jacobian product.
// Matrices are row-major float[9] (3x3) / float[6] (2x3). Torch-free; used by the CPU and CUDA cores.
#pragma once

#include "common.h"

namespace a3d {

struct Camera {
    float R[9];  // world->camera rotation (viewmat[:3,:3])
    float t[3];  // world->camera translation (viewmat[:3,3])
    float fx, fy, cx, cy;
    int width, height;
    float near_plane, far_plane;
    bool antialiased;
};

// viewmat: [4,4] row-major, K: [3,3] row-major
A3D_HD Camera make_camera(const float* viewmat, const float* K, int width, int height,
                          float near_plane, float far_plane, bool antialiased) {
    Camera cam;
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) cam.R[3 * i + j] = viewmat[4 * i + j];
        cam.t[i] = viewmat[4 * i + 3];
    }
    cam.fx = K[0]; cam.fy = K[4]; cam.cx = K[2]; cam.cy = K[5];
    cam.width = width; cam.height = height;
    cam.near_plane = near_plane; cam.far_plane = far_plane;
    cam.antialiased = antialiased;
    return cam;
}

// Rotation matrix of a normalised quaternion (w,x,y,z).
template <typename T>
A3D_HD void quat_to_rot(const T* q, T* R) {
    const T w = q[0], x = q[1], y = q[2], z = q[3];
    R[0] = 1 - 2 * (y * y + z * z); R[1] = 2 * (x * y - w * z);     R[2] = 2 * (x * z + w * y);
    R[3] = 2 * (x * y + w * z);     R[4] = 1 - 2 * (x * x + z * z); R[5] = 2 * (y * z - w * x);
    R[6] = 2 * (x * z - w * y);     R[7] = 2 * (y * z + w * x);     R[8] = 1 - 2 * (x * x + y * y);
}

// VJP of quat_to_rot: v_R [9] -> v_q [4] (w.r.t. the normalised quaternion).
A3D_HD void quat_to_rot_vjp(const float* q, const float* G, float* v_q) {
    const float w = q[0], x = q[1], y = q[2], z = q[3];
    v_q[0] = 2.f * (-z * G[1] + y * G[2] + z * G[3] - x * G[5] - y * G[6] + x * G[7]);
    v_q[1] = 2.f * (y * G[1] + z * G[2] + y * G[3] - 2.f * x * G[4] - w * G[5] + z * G[6] + w * G[7] - 2.f * x * G[8]);
    v_q[2] = 2.f * (-2.f * y * G[0] + x * G[1] + w * G[2] + x * G[3] + z * G[5] - w * G[6] + z * G[7] - 2.f * y * G[8]);
    v_q[3] = 2.f * (-2.f * z * G[0] - w * G[1] + x * G[2] + w * G[3] - 2.f * z * G[4] + y * G[5] + x * G[6] + y * G[7]);
}

// C = A B (3x3), C = A Bᵀ, C = Aᵀ B
template <typename T>
A3D_HD void mm3(const T* A, const T* B, T* C) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            C[3 * i + j] = A[3 * i] * B[j] + A[3 * i + 1] * B[3 + j] + A[3 * i + 2] * B[6 + j];
}
template <typename T>
A3D_HD void mm3_bt(const T* A, const T* B, T* C) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            C[3 * i + j] = A[3 * i] * B[3 * j] + A[3 * i + 1] * B[3 * j + 1] + A[3 * i + 2] * B[3 * j + 2];
}
template <typename T>
A3D_HD void mm3_at(const T* A, const T* B, T* C) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            C[3 * i + j] = A[i] * B[j] + A[3 + i] * B[3 + j] + A[6 + i] * B[6 + j];
}

// Row i of t = R p + t_cw, accumulated in double (README step 1). World coordinates are metres from the
// origin while a Gaussian near the camera is centimetres deep: in float32 the sum cancels, and its rounding
// (~1e-7 of |p|) becomes a relative error of |p|/z in the depth, which 1/z and 1/z^2 in the projection
// amplify (a 1e-3 px error in mean2d at 1 cm). The float products are exact in double; the one rounding
// left is the final cast. Nine FMAs per Gaussian: negligible next to the rest of the projection.
A3D_HD float camera_coord(const Camera& cam, const float* mean, int i) {
    const float* R = cam.R;
    return (float)((double)R[3 * i] * (double)mean[0] + (double)R[3 * i + 1] * (double)mean[1] +
                   (double)R[3 * i + 2] * (double)mean[2] + (double)cam.t[i]);
}

// Everything the forward computes and the VJP reuses.
struct ProjState {
    float t[3];       // camera-space mean
    float qn[4];      // normalised quaternion
    float qnorm;
    float Rq[9];      // rotation of the Gaussian
    float M[9];       // Rq diag(s)
    float covc[9];    // camera-space covariance
    float J[6];       // clamped projection Jacobian
    float rx, ry;     // x/z, y/z before the clamp
    float rxc, ryc;   // after the clamp
    bool x_in, y_in;  // clamp inactive (gradient passes)
    float a0, b0, c0; // J covc Jᵀ before dilation
    float a, b, c;    // after dilation
    float det;
    float ratio;      // antialiasing det ratio
};

// det(J covc Jᵀ) before the dilation, as the sum of the squared 2x2 minors of N = J R M (Cauchy-Binet; covc =
// (R M)(R M)ᵀ). a0 c0 - b0² cancels to nothing for a flat Gaussian seen nearly edge-on (float32 lost all of it:
// a 1 % error in the antialiased opacity); the minors keep the relative precision and the sum cannot go negative.
// Its gradient goes through the minors too (projected_det_vjp): through a0 c0 - b0² it is a sum of large terms
// that cancel for the same Gaussians (1e-3 relative error in the gradient of a flat Gaussian's rotation).
// N = J (R M) [2x3] (RM [3x3] kept for the backward) and its three 2x2 minors m = (m01, m02, m12).
template <typename T>
A3D_HD void projected_minors(const T* R, const T* M, const T* J, T* RM, T* N, T* m) {
    mm3(R, M, RM);
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            N[3 * i + j] = J[3 * i] * RM[j] + J[3 * i + 1] * RM[3 + j] + J[3 * i + 2] * RM[6 + j];
    m[0] = N[0] * N[4] - N[1] * N[3];
    m[1] = N[0] * N[5] - N[2] * N[3];
    m[2] = N[1] * N[5] - N[2] * N[4];
}

A3D_HD float projected_det(const float* R, const float* M, const float* J) {
    float RM[9], N[6], m[3];
    projected_minors(R, M, J, RM, N, m);
    return m[0] * m[0] + m[1] * m[1] + m[2] * m[2];
}

// v_J [6] += d(projected_det)/dJ * v_pd, v_M [9] += d(projected_det)/dM * v_pd (N = J RM, RM = R M).
A3D_HD void projected_det_vjp(const float* R, const float* M, const float* J, float v_pd, float* v_J, float* v_M) {
    float RM[9], N[6], m[3];
    projected_minors(R, M, J, RM, N, m);
    const float m01 = m[0], m02 = m[1], m12 = m[2];
    const float k = 2.f * v_pd;
    const float v_N[6] = {k * (m01 * N[4] + m02 * N[5]), k * (-m01 * N[3] + m12 * N[5]), k * (-m02 * N[3] - m12 * N[4]),
                          k * (-m01 * N[1] - m02 * N[2]), k * (m01 * N[0] - m12 * N[2]), k * (m02 * N[0] + m12 * N[1])};
    // N = J RM: v_J = v_N RMᵀ, v_RM = Jᵀ v_N, v_M = Rᵀ v_RM
    float v_RM[9];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            v_J[3 * i + j] += v_N[3 * i] * RM[3 * j] + v_N[3 * i + 1] * RM[3 * j + 1] + v_N[3 * i + 2] * RM[3 * j + 2];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) v_RM[3 * i + j] = J[i] * v_N[j] + J[3 + i] * v_N[3 + j];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            v_M[3 * i + j] += R[i] * v_RM[j] + R[3 + i] * v_RM[3 + j] + R[6 + i] * v_RM[6 + j];
}

// The 2D footprint of one Gaussian (README steps 2-5), in float64 from the float32 inputs. Every value is later
// rounded once to float32, so the conic carries only its own rounding (6e-8 relative): a flat Gaussian seen as a
// thin line has a near-singular conic whose quadratic form cancels along the line, amplifying a conic error by
// its condition number times the squared distance (a float32 chain's 1e-6 became a 1e-5 pixel error).
// In double: 40 multiply-adds per Gaussian, next to the per-pixel work of compositing.
constexpr double EPS2D_WIDE = 0.3;  // EPS2D (the float constant is 0.3 rounded to float32)

struct Footprint {
    double covc[9];        // camera-space covariance
    double J[6];           // clamped projection Jacobian
    double a0, b0, c0;     // J covc Jᵀ before the dilation
    double pdet;           // det(J covc Jᵀ), from the minors
    double det;            // det of the dilated footprint
};

// quat [4] (unnormalised), scale [3]; z the camera depth, (tx, ty) the clamped tangents times z.
A3D_HD void footprint(const Camera& cam, const float* quat, const float* scale, float z, float tx, float ty,
                      Footprint& fp) {
    double q[4], Rq[9], M[9], R[9], cov[9], tmp[9];
    const double qnorm = sqrt((double)quat[0] * quat[0] + (double)quat[1] * quat[1] + (double)quat[2] * quat[2] +
                              (double)quat[3] * quat[3]);
    for (int i = 0; i < 4; ++i) q[i] = quat[i] / qnorm;
    quat_to_rot(q, Rq);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
            M[3 * i + j] = Rq[3 * i + j] * (double)scale[j];
            R[3 * i + j] = (double)cam.R[3 * i + j];
        }
    mm3_bt(M, M, cov);
    mm3(R, cov, tmp);
    mm3_bt(tmp, R, fp.covc);
    const double zd = z, fx = cam.fx, fy = cam.fy;
    fp.J[0] = fx / zd; fp.J[1] = 0.0; fp.J[2] = -fx * (double)tx / (zd * zd);
    fp.J[3] = 0.0; fp.J[4] = fy / zd; fp.J[5] = -fy * (double)ty / (zd * zd);
    double B[6];  // J covc
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            B[3 * i + j] = fp.J[3 * i] * fp.covc[j] + fp.J[3 * i + 1] * fp.covc[3 + j] + fp.J[3 * i + 2] * fp.covc[6 + j];
    fp.a0 = B[0] * fp.J[0] + B[1] * fp.J[1] + B[2] * fp.J[2];
    fp.b0 = B[0] * fp.J[3] + B[1] * fp.J[4] + B[2] * fp.J[5];
    fp.c0 = B[3] * fp.J[3] + B[4] * fp.J[4] + B[5] * fp.J[5];
    double RM[9], N[6], m[3];
    projected_minors(R, M, fp.J, RM, N, m);
    fp.pdet = m[0] * m[0] + m[1] * m[1] + m[2] * m[2];
    // every term >= 0: a c - b² cancels when the dilation makes most of det (a thin-line footprint)
    fp.det = fp.pdet + EPS2D_WIDE * (fp.a0 + fp.c0) + EPS2D_WIDE * EPS2D_WIDE;
}

// Full forward of one Gaussian. Returns false when culled (outputs then hold the oracle's zeros).
// mean [3], quat [4], scale [3]; outputs mean2d [2], conic [3].
A3D_HD bool project_gaussian(const Camera& cam, const float* mean, const float* quat, const float* scale,
                             float opacity, ProjState& st, float* mean2d, float* conic, float& depth,
                             int& radius, float& opacity_eff) {
    st.t[0] = camera_coord(cam, mean, 0);
    st.t[1] = camera_coord(cam, mean, 1);
    st.t[2] = camera_coord(cam, mean, 2);
    depth = st.t[2];
    mean2d[0] = mean2d[1] = 0.f;
    conic[0] = conic[1] = conic[2] = 0.f;
    radius = 0;
    opacity_eff = 0.f;
    const float z = st.t[2];
    if (!(z > cam.near_plane && z < cam.far_plane)) return false;

    st.qnorm = sqrtf(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
    for (int i = 0; i < 4; ++i) st.qn[i] = quat[i] / st.qnorm;
    quat_to_rot(st.qn, st.Rq);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) st.M[3 * i + j] = st.Rq[3 * i + j] * scale[j];
    const float W = (float)cam.width, H = (float)cam.height;
    const float lim_x_pos = (W - cam.cx) / cam.fx + (CLIP_MARGIN * W) / cam.fx;
    const float lim_x_neg = cam.cx / cam.fx + (CLIP_MARGIN * W) / cam.fx;
    const float lim_y_pos = (H - cam.cy) / cam.fy + (CLIP_MARGIN * H) / cam.fy;
    const float lim_y_neg = cam.cy / cam.fy + (CLIP_MARGIN * H) / cam.fy;
    st.rx = st.t[0] / z;
    st.ry = st.t[1] / z;
    st.rxc = clampf(st.rx, -lim_x_neg, lim_x_pos);
    st.ryc = clampf(st.ry, -lim_y_neg, lim_y_pos);
    st.x_in = st.rx >= -lim_x_neg && st.rx <= lim_x_pos;
    st.y_in = st.ry >= -lim_y_neg && st.ry <= lim_y_pos;

    Footprint fp;
    footprint(cam, quat, scale, z, z * st.rxc, z * st.ryc, fp);
    for (int i = 0; i < 9; ++i) st.covc[i] = (float)fp.covc[i];
    for (int i = 0; i < 6; ++i) st.J[i] = (float)fp.J[i];
    st.a0 = (float)fp.a0; st.b0 = (float)fp.b0; st.c0 = (float)fp.c0;
    const double a = fp.a0 + EPS2D_WIDE, c = fp.c0 + EPS2D_WIDE;
    st.a = (float)a; st.b = st.b0; st.c = (float)c;
    st.det = (float)fp.det;
    if (!(fp.det > 0.0)) return false;

    float opac = opacity;
    st.ratio = 0.f;
    if (cam.antialiased) {
        st.ratio = (float)(fp.pdet / fp.det);
        opac = st.ratio > 0.f ? opacity * sqrtf(st.ratio) : 0.f;
    }
    const float mx = cam.fx * st.t[0] / z + cam.cx;
    const float my = cam.fy * st.t[1] / z + cam.cy;
    const double mid = 0.5 * (a + c), spread = mid * mid - fp.det;
    const float lam = (float)(mid + sqrt(spread > 0.1 ? spread : 0.1));
    const float r = ceilf(3.0f * sqrtf(lam));
    if (!(r > 0.f)) return false;
    if (mx + r <= 0.f || mx - r >= W || my + r <= 0.f || my - r >= H) return false;

    mean2d[0] = mx; mean2d[1] = my;
    conic[0] = (float)(c / fp.det); conic[1] = (float)(-fp.b0 / fp.det); conic[2] = (float)(a / fp.det);
    radius = (int)r;
    opacity_eff = opac;
    return true;
}

// VJP of project_gaussian for a visible Gaussian (call only when the forward returned true).
// Upstream: v_mean2d [2], v_conic [3], v_depth, v_opacity_eff.
// Outputs (overwritten): v_mean [3], v_quat [4], v_scale [3], v_opacity.
A3D_HD void project_gaussian_vjp(const Camera& cam, const float* scale, float opacity, const ProjState& st,
                                 const float* v_mean2d, const float* v_conic, float v_depth, float v_opac_eff,
                                 float* v_mean, float* v_quat, float* v_scale, float& v_opacity) {
    const float z = st.t[2];
    const float fx = cam.fx, fy = cam.fy;
    // opacity (antialiased: opac_eff = o sqrt(ratio))
    float v_rho = 0.f, rho = 0.f;
    if (cam.antialiased) {
        rho = st.ratio > 0.f ? sqrtf(st.ratio) : 0.f;
        v_opacity = v_opac_eff * rho;
        v_rho = v_opac_eff * opacity;
    } else {
        v_opacity = v_opac_eff;
    }
    // conic = (c, -b, a) / det  ->  gradients on the dilated (a, b, c)
    const float inv_det = 1.f / st.det;
    const float ca = st.c * inv_det, cb = -st.b * inv_det, cc = st.a * inv_det;
    float v_det = -(v_conic[0] * ca + v_conic[1] * cb + v_conic[2] * cc) * inv_det;
    float v_a = v_conic[2] * inv_det;
    float v_c = v_conic[0] * inv_det;
    float v_b = -v_conic[1] * inv_det;
    float v_pd = 0.f;  // gradient on projected_det = det(J covc Jᵀ), taken through the minors below
    if (cam.antialiased && st.ratio > 0.f) {
        // ratio = pd / det
        const float v_ratio = v_rho * 0.5f / rho;
        v_pd += v_ratio * inv_det;
        v_det += -v_ratio * st.ratio * inv_det;
    }
    // det = pd + eps (a0 + c0) + eps²
    v_pd += v_det;
    v_a += v_det * EPS2D;
    v_c += v_det * EPS2D;
    // cov2d = J covc Jᵀ: G symmetric (off-diagonal shared)
    const float G[4] = {v_a, 0.5f * v_b, 0.5f * v_b, v_c};
    // v_covc = Jᵀ G J
    float GJ[6];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) GJ[3 * i + j] = G[2 * i] * st.J[j] + G[2 * i + 1] * st.J[3 + j];
    float v_covc[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) v_covc[3 * i + j] = st.J[i] * GJ[j] + st.J[3 + i] * GJ[3 + j];
    // v_J = 2 G J covc
    float v_J[6];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            v_J[3 * i + j] = 2.f * (GJ[3 * i] * st.covc[j] + GJ[3 * i + 1] * st.covc[3 + j] + GJ[3 * i + 2] * st.covc[6 + j]);

    float v_M[9] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};  // the minors' part; the covariance's added below
    projected_det_vjp(cam.R, st.M, st.J, v_pd, v_J, v_M);

    // J -> camera-space mean
    float v_t[3] = {0.f, 0.f, v_depth};
    const float z2 = z * z, z3 = z2 * z;
    const float tx = z * st.rxc, ty = z * st.ryc;
    v_t[2] += -fx / z2 * v_J[0] - fy / z2 * v_J[4] + 2.f * fx * tx / z3 * v_J[2] + 2.f * fy * ty / z3 * v_J[5];
    const float v_tx = -fx / z2 * v_J[2];
    const float v_ty = -fy / z2 * v_J[5];
    // tx = z clamp(x/z): inside the range d/dx = 1, d/dz = 0; outside d/dx = 0, d/dz = clamped ratio
    if (st.x_in) v_t[0] += v_tx; else v_t[2] += v_tx * st.rxc;
    if (st.y_in) v_t[1] += v_ty; else v_t[2] += v_ty * st.ryc;
    // mean2d = f t.xy / z + c
    v_t[0] += v_mean2d[0] * fx / z;
    v_t[1] += v_mean2d[1] * fy / z;
    v_t[2] += -(v_mean2d[0] * fx * st.t[0] + v_mean2d[1] * fy * st.t[1]) / z2;
    // t = R p + t_cw
    const float* R = cam.R;
    for (int j = 0; j < 3; ++j) v_mean[j] = R[j] * v_t[0] + R[3 + j] * v_t[1] + R[6 + j] * v_t[2];

    // covc = R cov Rᵀ -> v_cov = Rᵀ v_covc R; cov = M Mᵀ -> v_M = 2 v_cov M (v_cov symmetric)
    float tmp[9], v_cov[9], v_M_cov[9];
    mm3_at(R, v_covc, tmp);
    mm3(tmp, R, v_cov);
    mm3(v_cov, st.M, v_M_cov);
    for (int i = 0; i < 9; ++i) v_M[i] += 2.f * v_M_cov[i];
    // M = Rq diag(s)
    float v_Rq[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) v_Rq[3 * i + j] = v_M[3 * i + j] * scale[j];
    for (int j = 0; j < 3; ++j)
        v_scale[j] = v_M[j] * st.Rq[j] + v_M[3 + j] * st.Rq[3 + j] + v_M[6 + j] * st.Rq[6 + j];
    // quaternion, through the normalisation: v_q = (v_qn - qn (qn·v_qn)) / |q|
    float v_qn[4];
    quat_to_rot_vjp(st.qn, v_Rq, v_qn);
    const float dot = st.qn[0] * v_qn[0] + st.qn[1] * v_qn[1] + st.qn[2] * v_qn[2] + st.qn[3] * v_qn[3];
    for (int i = 0; i < 4; ++i) v_quat[i] = (v_qn[i] - st.qn[i] * dot) / st.qnorm;
}

}  // namespace a3d
