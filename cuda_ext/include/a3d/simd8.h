// Eight float lanes as a GCC/Clang vector type, for the CPU compositor's pixel groups (half a tile row).
// Portable: the compiler maps each operation to one AVX2 instruction where the function is compiled for
// AVX2 (the compositor's target_clones) and to two SSE instructions otherwise. Every operation is the
// scalar one lane by lane, in the same order and without contraction into FMAs, so a lane's result is
// bit-identical to the scalar header functions (raster.h) the CUDA kernels use.
#pragma once
#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vectors: every function here is inlined, no ABI crosses

#include <cstdint>
#include <cstring>

#include "common.h"

// A hot loop marked A3D_CLONES gets an AVX2 clone picked at load time (where these vectors are one instruction
// each); the default clone runs on any x86-64.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define A3D_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define A3D_CLONES
#endif

namespace a3d {
namespace simd {

typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));  // lane masks: -1 (true) or 0
typedef long long q4 __attribute__((vector_size(32)));

#define A3D_V8 static inline __attribute__((always_inline))

A3D_V8 f8 splat(float x) { return f8{x, x, x, x, x, x, x, x}; }
A3D_V8 i8 splat_i(int32_t x) { return i8{x, x, x, x, x, x, x, x}; }
A3D_V8 f8 iota() { return f8{0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f}; }

// Loads and stores of 8 consecutive values (the scratch arrays are 32-byte aligned; memcpy lets the compiler
// emit aligned or unaligned moves as it proves).
A3D_V8 f8 load(const float* p) { f8 v; std::memcpy(&v, p, sizeof v); return v; }
A3D_V8 i8 load_i(const int32_t* p) { i8 v; std::memcpy(&v, p, sizeof v); return v; }
A3D_V8 void store(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }
A3D_V8 void store_i(int32_t* p, i8 v) { std::memcpy(p, &v, sizeof v); }

A3D_V8 f8 select(i8 m, f8 a, f8 b) { return m ? a : b; }
A3D_V8 i8 select_i(i8 m, i8 a, i8 b) { return m ? a : b; }
A3D_V8 f8 vmin(f8 a, f8 b) { return a < b ? a : b; }  // minf lane by lane
A3D_V8 f8 vmax(f8 a, f8 b) { return a > b ? a : b; }  // maxf lane by lane
A3D_V8 f8 as_float(i8 m) { return m ? splat(1.f) : splat(0.f); }  // 1.0 / 0.0

A3D_V8 bool any(i8 m) {
    const q4 q = (q4)m;
    return (q[0] | q[1] | q[2] | q[3]) != 0;
}

A3D_V8 int count(i8 m) {  // lanes set
    int n = 0;
    for (int l = 0; l < 8; ++l) n -= m[l];
    return n;
}

A3D_V8 int32_t hor(i8 v) {  // bitwise or of the lanes
    return ((v[0] | v[1]) | (v[2] | v[3])) | ((v[4] | v[5]) | (v[6] | v[7]));
}

A3D_V8 float hsum(f8 v) {  // fixed order: pairs, then pairs of pairs
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

// exp_neg (raster.h) lane by lane: the same Cephes polynomial and the same operations.
A3D_V8 f8 exp_neg(f8 x) {
    x = vmax(x, splat(-30.0f));
    const f8 fn = x * 1.44269504088896341f - 0.5f;
    const i8 n = __builtin_convertvector(fn, i8);  // truncation toward zero, as the scalar (int)
    const f8 nf = __builtin_convertvector(n, f8);
    f8 r = x - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    f8 p = splat(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    const f8 y = p * r * r + r + 1.0f;
    const f8 scale = (f8)((n + 127) << 23);
    return y * scale;
}

#undef A3D_V8

}  // namespace simd
}  // namespace a3d
