// Per-pixel Gaussian weight and tile membership, shared by the CPU and CUDA compositors.
#pragma once

#include <cstdint>

#include "common.h"

namespace a3d {

// Tiles touched by a projected Gaussian: [x0,x1) x [y0,y1), clamped to the tile grid.
A3D_HD void tile_rect(float mx, float my, int radius, int tiles_x, int tiles_y,
                      int& x0, int& y0, int& x1, int& y1) {
    const float r = (float)radius;
    x0 = clampi((int)floorf((mx - r) / (float)TILE), 0, tiles_x);
    x1 = clampi((int)ceilf((mx + r) / (float)TILE), 0, tiles_x);
    y0 = clampi((int)floorf((my - r) / (float)TILE), 0, tiles_y);
    y1 = clampi((int)ceilf((my + r) / (float)TILE), 0, tiles_y);
}

// Depth as a sort key: the float's bits mapped so that unsigned order is float order (for negative values too,
// although visible Gaussians have depth > near > 0). Both binnings sort (tile, depth_key, index).
A3D_HD uint32_t depth_key(float d) {
#if defined(__CUDA_ARCH__)
    const uint32_t u = __float_as_uint(d);
#else
    const uint32_t u = __builtin_bit_cast(uint32_t, d);
#endif
    return u ^ ((u & 0x80000000u) ? 0xffffffffu : 0x80000000u);
}

// Mahalanobis half-distance sigma = 0.5 (a dx^2 + c dy^2) + b dx dy, d = mean2d - pixel centre.
A3D_HD float gauss_sigma(float a, float b, float c, float dx, float dy) {
    return 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
}

// Where alpha = min(0.99, o exp(-sigma)) can reach ALPHA_MIN: sigma <= log(o / ALPHA_MIN). Gives the box half
// extents hx, hy (pixels) around mean2d and two_s = 2 log(o / ALPHA_MIN), all inflated by a margin for float
// rounding (4% on two_s, 2% + 0.02 px on the box). The CPU uses it to skip pixels that would skip the
// Gaussian anyway. hx < 0: the Gaussian reaches ALPHA_MIN nowhere; hx huge: no bound (not positive definite).
A3D_HD void alpha_extent(float a, float b, float c, float o, float& hx, float& hy, float& two_s) {
    two_s = 0.f;
    if (!(o >= ALPHA_MIN)) {
        hx = hy = -1.f;
        return;
    }
    const float det = a * c - b * b;
    if (!(det > 0.f) || !(a > 0.f) || !(c > 0.f)) {
        hx = hy = 1e30f;
        return;
    }
    two_s = 2.f * logf(o / ALPHA_MIN) * 1.04f;
    hx = sqrtf(two_s * c / det) * 1.02f + 0.02f;
    hy = sqrtf(two_s * a / det) * 1.02f + 0.02f;
}

// exp(x) for x <= 0 written without branches or library calls so that CPU loops vectorise
// (Cephes polynomial, ~1 ulp). x is clamped at -30: exp(-30) ~ 1e-13 is far below the alpha cut-off
// for any opacity <= 1, and the clamp keeps every result a normal float (denormals are very slow on CPUs).
A3D_HD float exp_neg(float x) {
    x = maxf(x, -30.0f);
    const float fn = x * 1.44269504088896341f - 0.5f;
    const int n = (int)fn;  // truncation toward zero == floor(x*log2e + 0.5) for x <= 0 up to ties
    const float nf = (float)n;
    float r = x - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    const float y = p * r * r + r + 1.0f;
#if defined(__CUDA_ARCH__)
    const float scale = __int_as_float((n + 127) << 23);
#else
    const float scale = __builtin_bit_cast(float, (n + 127) << 23);
#endif
    return y * scale;
}

}  // namespace a3d
