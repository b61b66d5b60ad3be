// CPU core of a rendered frame's last step (avatar3d/render/finish.py; its PyTorch reference is
// avatar3d/render/reference/finish.py): the rasterizer's float picture and alpha to uint8, composited over a
// background plate seen through a homography. One pass over the pixels instead of a warp, a composite and two
// conversions, each a pass of its own (and the warp's threads competing with the rasterizer's).
#include <cmath>
#include <cstdint>
#include <vector>

#include "a3d/cores.h"
#include "a3d/simd8.h"

namespace a3d {
namespace {

// Index i reflected into [0, n) without repeating the border pixel (OpenCV's BORDER_REFLECT_101), for any i.
inline int reflect101(int i, int n) {
    if (i >= 0 && i < n) return i;  // the common case, without the division
    if (n == 1) return 0;
    const int period = 2 * n - 2;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

// floor(x) as an int for |x| < 2^31 (std::floor is a library call on the baseline x86-64 target).
inline int floor_int(double x) {
    const int i = (int)x;  // truncates toward zero
    return x < i ? i - 1 : i;
}

inline uint8_t to_u8(float v) {  // clamp to [0,1], then round half up as (v * 255 + 0.5) truncated
    v = v < 0.f ? 0.f : (v > 1.f ? 1.f : v);
    return (uint8_t)(v * 255.f + 0.5f);
}

typedef float f4 __attribute__((vector_size(16)));

inline f4 rgb_of(const uint8_t* p) {  // one plate pixel's three bytes as floats (the fourth lane 0)
    return f4{(float)p[0], (float)p[1], (float)p[2], 0.f};
}

inline uint8_t round_u8(float v) {  // a sample in [0,255] to the nearest level (half up)
    return (uint8_t)(v + 0.5f);
}

inline float clamp01(float v) { return v < 0.f ? 0.f : (v > 1.f ? 1.f : v); }

// The plate's weight under a pixel, 1 - clamp(alpha); below PLATE_MIN_WEIGHT the plate is not seen there.
inline float plate_weight(float alpha) { return 1.f - clamp01(alpha); }

// One plate sample: pixel `col` of a row whose plate coordinates are u, v, rounded to uint8 into seen[col].
void sample_pixel(const FinishArgs& a, const float* u, const float* v, int col, uint8_t* seen) {
    const int pw = a.plate_width, ph = a.plate_height;
    const int iu = floor_int(u[col]), iv = floor_int(v[col]);
    const float wx = u[col] - (float)iu, wy = v[col] - (float)iv;
    int x0 = iu, x1 = iu + 1, y0 = iv, y1 = iv + 1;
    if (iu < 0 || iu + 1 >= pw) x0 = reflect101(iu, pw), x1 = reflect101(iu + 1, pw);
    if (iv < 0 || iv + 1 >= ph) y0 = reflect101(iv, ph), y1 = reflect101(iv + 1, ph);
    const uint8_t* r0 = a.plate + (int64_t)y0 * pw * 3;
    const uint8_t* r1 = a.plate + (int64_t)y1 * pw * 3;
    const f4 mix = (1.f - wy) * ((1.f - wx) * rgb_of(r0 + x0 * 3) + wx * rgb_of(r0 + x1 * 3)) +
                   wy * ((1.f - wx) * rgb_of(r1 + x0 * 3) + wx * rgb_of(r1 + x1 * 3));
    for (int ch = 0; ch < 3; ++ch) seen[col * 3 + ch] = round_u8(mix[ch]);
}

// reflect101 lane by lane for indices at most one reflection away, -n < i < 2n - 1 (`ok` clears the lanes that
// are not: their samples are left to sample_pixel).
static inline __attribute__((always_inline)) simd::i8 reflect_once(simd::i8 i, int n, simd::i8& ok) {
    using simd::i8;
    ok &= (i > -n) & (i < 2 * n - 1);
    i = i < 0 ? -i : i;
    return i >= n ? (2 * n - 2) - i : i;
}

// Eight samples at once (pixels col .. col+7): the corner bytes gathered lane by lane, the weights and the mix in
// vectors, the very operations of sample_pixel. Returns false (nothing written) when a lane lies further outside
// the plate than one reflection (or the plate is a single row or column): sample_pixel does those.
A3D_CLONES bool sample_group(const FinishArgs& a, const float* u, const float* v, int col, uint8_t* seen) {
    using simd::f8;
    using simd::i8;
    const int pw = a.plate_width, ph = a.plate_height;
    if (pw < 2 || ph < 2) return false;
    const f8 fu = simd::load(u + col), fv = simd::load(v + col);
    i8 iu = __builtin_convertvector(fu, i8), iv = __builtin_convertvector(fv, i8);  // toward zero...
    iu += (i8)(fu < __builtin_convertvector(iu, f8));  // ...then down where that rounded up (a mask is -1)
    iv += (i8)(fv < __builtin_convertvector(iv, f8));
    i8 ok = simd::splat_i(-1);
    const i8 x0 = reflect_once(iu, pw, ok), x1 = reflect_once(iu + 1, pw, ok);
    const i8 y0 = reflect_once(iv, ph, ok), y1 = reflect_once(iv + 1, ph, ok);
    if (simd::any(~ok)) return false;
    const f8 wx = fu - __builtin_convertvector(iu, f8), wy = fv - __builtin_convertvector(iv, f8);
    const i8 left = x0 * 3, right = x1 * 3, top = y0 * (pw * 3), bottom = y1 * (pw * 3);
    f8 corner[4][3];  // [top-left, top-right, bottom-left, bottom-right][channel]
    for (int l = 0; l < 8; ++l) {
        const uint8_t* p00 = a.plate + top[l] + left[l];
        const uint8_t* p01 = a.plate + top[l] + right[l];
        const uint8_t* p10 = a.plate + bottom[l] + left[l];
        const uint8_t* p11 = a.plate + bottom[l] + right[l];
        for (int ch = 0; ch < 3; ++ch) {
            corner[0][ch][l] = (float)p00[ch];
            corner[1][ch][l] = (float)p01[ch];
            corner[2][ch][l] = (float)p10[ch];
            corner[3][ch][l] = (float)p11[ch];
        }
    }
    const f8 one = simd::splat(1.f);
    for (int ch = 0; ch < 3; ++ch) {
        const f8 mix = (one - wy) * ((one - wx) * corner[0][ch] + wx * corner[1][ch]) +
                       wy * ((one - wx) * corner[2][ch] + wx * corner[3][ch]);
        const i8 level = __builtin_convertvector(mix + 0.5f, i8);  // round_u8: truncation of v + 0.5
        for (int l = 0; l < 8; ++l) seen[(col + l) * 3 + ch] = (uint8_t)level[l];
    }
    return true;
}

// One row of the plate as the output pixels see it, rounded to uint8: seen [W,3], at every pixel (`all`) or only
// where the plate shows through the picture (else left as it was; a group of eight where one pixel shows is
// sampled whole). Two passes: the map's coordinates (u, v) per pixel, then the bilinear samples.
A3D_CLONES void plate_row(const FinishArgs& a, int row, bool all, float* u, float* v, uint8_t* seen) {
    if (a.identity) {  // the picture is the frame's own size, pixel for pixel: what the sampling gives exactly
        const uint8_t* src = a.plate + (int64_t)row * a.plate_width * 3;
        for (int k = 0; k < a.width * 3; ++k) seen[k] = src[k];
        return;
    }
    const double* M = a.pixel_to_plate;
    const double py = row + 0.5;
    // Along a row the map's numerators and denominator are affine in x: evaluate them in double, divide once.
    const double nx0 = M[1] * py + M[2], ny0 = M[4] * py + M[5], w0 = M[7] * py + M[8];
    for (int col = 0; col < a.width; ++col) {
        const double px = col + 0.5, inv_w = 1.0 / (M[6] * px + w0);
        u[col] = (float)((M[0] * px + nx0) * inv_w - 0.5);
        v[col] = (float)((M[3] * px + ny0) * inv_w - 0.5);
    }
    const float* alpha = a.alpha + (int64_t)row * a.width;
    auto shows = [&](int col) { return all || plate_weight(alpha[col]) >= PLATE_MIN_WEIGHT; };
    int col = 0;
    for (; col + 8 <= a.width; col += 8) {
        bool any = false;
        for (int l = 0; l < 8; ++l) any |= shows(col + l);
        if (!any || sample_group(a, u, v, col, seen)) continue;
        for (int l = 0; l < 8; ++l)
            if (shows(col + l)) sample_pixel(a, u, v, col + l, seen);
    }
    for (; col < a.width; ++col)
        if (shows(col)) sample_pixel(a, u, v, col, seen);
}

void finish_row(const FinishArgs& a, int row, const uint8_t* seen, uint8_t* __restrict rgb_out,
                uint8_t* __restrict alpha_out) {
    const int64_t first = (int64_t)row * a.width;
    const float* __restrict image = a.image + first * 3;
    const float* __restrict alpha = a.alpha + first;
    rgb_out += first * 3;
    alpha_out += first;
    for (int col = 0; col < a.width; ++col) {
        const float al = clamp01(alpha[col]), keep = 1.f - al;
        const bool shows = seen != nullptr && keep >= PLATE_MIN_WEIGHT;
        for (int ch = 0; ch < 3; ++ch) {
            const float back = shows ? (float)seen[col * 3 + ch] * (1.f / 255.f) : 0.f;
            rgb_out[col * 3 + ch] = to_u8(image[col * 3 + ch] + keep * back);
        }
        alpha_out[col] = to_u8(al);
    }
}

}  // namespace

void finish_frame_cpu(const FinishArgs& a, uint8_t* rgb, uint8_t* alpha, uint8_t* seen_out, int num_threads) {
#pragma omp parallel num_threads(num_threads)
    {
        const bool plate = a.plate != nullptr;
        std::vector<float> coords(plate ? (size_t)a.width * 2 : 0);  // u, v of a row
        std::vector<uint8_t> row_seen(plate && seen_out == nullptr ? (size_t)a.width * 3 : 0);
#pragma omp for schedule(static)
        for (int row = 0; row < a.height; ++row) {
            uint8_t* seen = nullptr;
            if (plate) {
                seen = seen_out != nullptr ? seen_out + (int64_t)row * a.width * 3 : row_seen.data();
                plate_row(a, row, seen_out != nullptr, coords.data(), coords.data() + a.width, seen);
            }
            finish_row(a, row, seen, rgb, alpha);
        }
    }
}

}  // namespace a3d
