// Shared constants and the host/device qualifier of the rasterizer math (cuda_ext/README.md).
// Torch-free: included by the C++ cores, the CUDA kernels and nothing else.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define A3D_HD __host__ __device__ __forceinline__
#else
#define A3D_HD inline
#endif

namespace a3d {

constexpr int TILE = 16;                   // tile edge in pixels (one CUDA block / one OpenMP task per tile)
constexpr int TILE_PIXELS = TILE * TILE;
constexpr float EPS2D = 0.3f;              // screen-space dilation (pixels^2) and antialiasing filter
constexpr float CLIP_MARGIN = 0.3f;        // tangent clamp margin as a fraction of the image size
constexpr float ALPHA_MIN = 1.0f / 255.0f; // below this a Gaussian is skipped at a pixel
constexpr float ALPHA_MAX = 0.99f;         // alpha is clamped to this
constexpr float T_MIN = 1e-4f;             // compositing stops before transmittance falls to this

// Plain compares (not fminf/fmaxf, which are library calls that block vectorisation on the CPU).
A3D_HD float minf(float a, float b) { return a < b ? a : b; }
A3D_HD float maxf(float a, float b) { return a > b ? a : b; }
A3D_HD float clampf(float v, float lo, float hi) { return minf(maxf(v, lo), hi); }
A3D_HD int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

}  // namespace a3d
