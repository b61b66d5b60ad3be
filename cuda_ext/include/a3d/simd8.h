// Eight float lanes as a GCC/Clang vector type, for the CPU compositor's pixel groups (half a tile row).
// Portable: the compiler maps each operation to one AVX2 instruction where the function is compiled for
// x86-64-v3 (AVX2 + FMA: the target_clones below) and to two SSE instructions otherwise. A file that wants
// fused multiply-adds in its v3 clone asks for contraction itself (rasterize_cpu.cpp does); the default clone
// has no FMA instruction, so its results may differ from the v3 clone's by float rounding.
#pragma once
#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vectors: every function here is inlined, no ABI crosses

#include <cstdint>
#include <cstring>

#include "common.h"

// A hot loop marked A3D_CLONES gets an x86-64-v3 clone (AVX2, FMA) picked at load time, where these vectors are
// one instruction each; the default clone runs on any x86-64.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define A3D_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
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

// 2^-p lane by lane for p >= 0 (Cephes' exp2f polynomial on [-1/2, 1/2], about 2e-7 relative). p is clamped to
// [0, 100]: 2^-100 is far below any cut-off and still a normal float (denormals are very slow on CPUs); a negative
// p (not a weight: the caller masks it) gives 1.
A3D_V8 f8 exp2_neg(f8 p) {
    p = vmin(vmax(p, splat(0.f)), splat(100.f));
    const i8 n = __builtin_convertvector(p + 0.5f, i8);  // round(p): truncation of a positive value
    const f8 f = __builtin_convertvector(n, f8) - p;       // in [-1/2, 1/2]: 2^-p = 2^f 2^-n
    f8 y = splat(1.535336188319500e-4f);
    y = y * f + 1.339887440266574e-3f;
    y = y * f + 9.618437357674640e-3f;
    y = y * f + 5.550332471162809e-2f;
    y = y * f + 2.402264791363012e-1f;
    y = y * f + 6.931472028550421e-1f;
    y = y * f + 1.0f;
    return y * (f8)((127 - n) << 23);
}

#undef A3D_V8

}  // namespace simd
}  // namespace a3d
