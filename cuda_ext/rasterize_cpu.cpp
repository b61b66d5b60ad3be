// CPU core of the compositing op: tile binning, then per-tile front-to-back compositing and its reverse
// traversal. OpenMP over tiles. Within a tile, one Gaussian at a time over the lane groups (8 pixels, half a
// row: simd8.h) its alpha ellipse reaches, each group blended and coloured (or, in reverse, given all its
// gradients) in one pass with the values in registers.
//
// Fused multiply-adds in the x86-64-v3 clone (the rest of the build turns contraction off): the weight's
// polynomial is a chain of them, and they halve its latency. The forward and the backward evaluate a weight
// through the one inlined function below, so both make the same cut-off decisions.
#pragma GCC optimize("fp-contract=fast")
#include <omp.h>

#include <algorithm>
#include <memory>
#include <cstring>
#include <vector>

#include "a3d/cores.h"
#include "a3d/raster.h"
#include "a3d/simd8.h"

namespace a3d {
namespace {

using simd::f8;
using simd::i8;
using simd::splat;

#define INLINE static inline __attribute__((always_inline))

constexpr int P = TILE_PIXELS;
constexpr int LANES = 8;  // pixels per SIMD group (half a tile row): simd8.h's vectors
static_assert(sizeof(f8) == LANES * sizeof(float), "a lane group is one f8");
constexpr int GROUPS_PER_ROW = TILE / LANES;

struct TileGeom {
    int x0, y0;  // first pixel of the tile (pixel centres are at +0.5)
    int valid;   // pixels of the tile inside the image
    int inside[P];
};

void tile_geom(int tile, int tiles_x, int width, int height, TileGeom& g) {
    g.x0 = (tile % tiles_x) * TILE;
    g.y0 = (tile / tiles_x) * TILE;
    g.valid = 0;
    for (int p = 0; p < P; ++p) {
        const int x = g.x0 + p % TILE, y = g.y0 + p / TILE;
        g.inside[p] = (x < width && y < height) ? 1 : 0;
        g.valid += g.inside[p];
    }
}

// The part of a tile a Gaussian can reach: bit row * GROUPS_PER_ROW + h is set for the lane groups that meet
// its alpha >= 1/255 ellipse. Every other pixel would skip it, so leaving them out changes nothing but time.
// A bit mask, so that the loops over it (set bit by set bit) have one trip count instead of one per row
// (fewer mispredicted branches) and building it has no branches at all.
static_assert(TILE * GROUPS_PER_ROW <= 32, "a tile's lane groups must fit a 32-bit mask");
struct Span {
    uint32_t groups;
    bool empty() const { return groups == 0; }
};

constexpr int EXT = 3;  // per-Gaussian extent record: hx, hy, two_s (alpha_extent)

// Lane groups [lo[r], hi[r]) of each row r (as floats) that meet the Gaussian's ellipse (or its box when it
// has none).
INLINE void row_groups(const float* ext, const float* conic, float mx, float my, float fx0, float fy0,
                           float* lo_out, float* hi_out) {
    const float hx = ext[0], two_s = ext[2];
    const float box_lo = floorf(clampf(ceilf(mx - hx - fx0), 0.f, (float)TILE) * (1.f / LANES));
    const float box_hi = ceilf(clampf(floorf(mx + hx - fx0) + 1.f, 0.f, (float)TILE) * (1.f / LANES));
    if (!(two_s > 0.f)) {
        for (int r = 0; r < TILE; ++r) {
            lo_out[r] = box_lo;
            hi_out[r] = box_hi;
        }
        return;
    }
    // Row r: 0.5 (a dx² + c dy²) + b dx dy <= s  <=>  dx in [(-b dy - q)/a, (-b dy + q)/a], q² = 2 a s - det dy²,
    // and the pixel centre px = mx - dx. All 16 rows at once (vectorised).
    const float a = conic[0], b = conic[1], det = conic[0] * conic[2] - conic[1] * conic[1];
    const float inv_a = 1.f / a, a_two_s = a * two_s;
#pragma omp simd
    for (int r = 0; r < TILE; ++r) {
        const float dy = my - (fy0 + (float)r);
        const float q2 = a_two_s - det * dy * dy;
        const float q = sqrtf(maxf(q2, 0.f));
        const float x_lo = mx + (b * dy - q) * inv_a - 0.05f - fx0;
        const float x_hi = mx + (b * dy + q) * inv_a + 0.05f - fx0;
        const float cl = clampf(ceilf(x_lo), 0.f, (float)TILE);
        const float ch = clampf(floorf(x_hi) + 1.f, 0.f, (float)TILE);
        const float lo = maxf(box_lo, floorf(cl * (1.f / LANES)));
        const float hi = minf(box_hi, ceilf(ch * (1.f / LANES)));
        lo_out[r] = lo;
        hi_out[r] = q2 >= 0.f ? hi : lo;  // no pixel of this row reaches the ellipse
    }
}

// The bits of the groups [lo[r], hi[r]) of rows [r0, r1), eight rows at a time.
INLINE uint32_t group_bits(const float* lo, const float* hi, int r0, int r1) {
    static_assert(GROUPS_PER_ROW == 2, "two bits per row below");
    const simd::i8 shift{0, 2, 4, 6, 8, 10, 12, 14};
    uint32_t bits = 0;
    for (int half = 0; half < TILE / LANES; ++half) {
        const f8 row = splat((float)(half * LANES)) + simd::iota();
        const f8 lo8 = simd::load(lo + half * LANES), hi8 = simd::load(hi + half * LANES);
        const i8 in = (row >= (float)r0) & (row < (float)r1);
        const i8 g0 = in & (lo8 <= 0.f) & (0.f < hi8), g1 = in & (lo8 <= 1.f) & (1.f < hi8);
        bits |= (uint32_t)simd::hor(((g0 & 1) | (g1 & 2)) << shift) << (half * 2 * LANES);
    }
    return bits;
}

INLINE void tile_span(const float* ext, const float* conic, float mx, float my, const TileGeom& tg, Span& sp) {
    sp.groups = 0;
    const float hx = ext[0], hy = ext[1];
    if (hx < 0.f) return;
    const float fx0 = (float)tg.x0 + 0.5f, fy0 = (float)tg.y0 + 0.5f;
    const int r0 = (int)clampf(ceilf(my - hy - fy0), 0.f, (float)TILE);
    const int r1 = (int)clampf(floorf(my + hy - fy0) + 1.f, 0.f, (float)TILE);
    if (r0 >= r1) return;
    alignas(32) float lo[TILE], hi[TILE];
    row_groups(ext, conic, mx, my, fx0, fy0, lo, hi);
    sp.groups = group_bits(lo, hi, r0, r1);
}

// The weight of one Gaussian at a lane group in base 2: 2^-power with power = log2(e) sigma, i.e.
// power = ha dx² + b dx dy + hc dy² (ha = log2(e) a / 2, b = log2(e) b, hc = log2(e) c / 2): per row, with
// bdy = b dy and cdy = hc dy², two multiply-adds. exp2 needs no multiply by log2(e) in its range reduction.
struct Conic2 {
    float ha, b, hc;
};
constexpr float LOG2E = 1.44269504088896341f;
INLINE Conic2 conic2(float a, float b, float c) {
    return {0.5f * LOG2E * a, LOG2E * b, 0.5f * LOG2E * c};
}

struct Weight {
    f8 vis;    // exp(-sigma)
    f8 alpha;  // min(ALPHA_MAX, o vis)
    i8 ok;     // the Gaussian is blended here: sigma >= 0 and alpha >= ALPHA_MIN
};
INLINE Weight weight(f8 dx, float ha, float bdy, float cdy, float o) {
    const f8 power = (ha * dx + bdy) * dx + cdy;
    const f8 vis = simd::exp2_neg(power);
    const f8 al = simd::vmin(splat(ALPHA_MAX), o * vis);
    return {vis, al, (power >= 0.f) & (al >= ALPHA_MIN)};
}

struct FwdScratch {
    alignas(64) float T[P];
    alignas(64) int32_t last[P];  // entries processed
    alignas(64) int32_t live[P];  // -1 while the pixel is still compositing, else 0
    uint32_t live_groups;         // bit per lane group with a live pixel
    std::vector<float> acc;       // [C,P]
};

// One Gaussian against one lane group (8 pixels of a row starting at column x): blends it in front to back
// (the README's compositing rule) and adds its colour. Returns the lanes that stopped at it.
INLINE i8 forward_group(FwdScratch& s, float* __restrict acc, int C, const float* __restrict col, int base,
                        const Weight& wt, int32_t entry, bool record) {
    const f8 al = wt.alpha;
    const i8 live = simd::load_i(s.live + base);
    const i8 ok = wt.ok & live;
    const f8 t = simd::load(s.T + base);
    const f8 tn = t * (1.f - al);
    const i8 stop = (tn <= T_MIN) & ok;
    const i8 add = ok & ~stop;
    const f8 w = simd::select(add, al * t, splat(0.f));
    simd::store(s.T + base, simd::select(add, tn, t));
    simd::store_i(s.live + base, live & ~stop);  // unconditionally: cheaper than testing for a stop
    if (record)
        simd::store_i(s.last + base, simd::select_i(add, simd::splat_i(entry), simd::load_i(s.last + base)));
    if (C == 3) {  // RGB unrolled: with the trip count unknown, the loop's own work outweighed the blend's
        for (int ch = 0; ch < 3; ++ch) simd::store(acc + ch * P + base, simd::load(acc + ch * P + base) + w * col[ch]);
    } else {
        for (int ch = 0; ch < C; ++ch) simd::store(acc + ch * P + base, simd::load(acc + ch * P + base) + w * col[ch]);
    }
    return stop;
}

// One Gaussian over the lane groups `groups` of its span (those with live pixels); then, where a pixel stopped,
// drops the groups left with none from live_groups.
INLINE void forward_span(uint32_t groups, const TileGeom& tg, FwdScratch& s, float* acc, int C, const float* col,
                         float mx, float my, const Conic2& q, float o, int32_t entry, bool record) {
    const float fx0 = (float)tg.x0 + 0.5f, fy0 = (float)tg.y0 + 0.5f;
    i8 stopped = simd::splat_i(0);
    for (uint32_t left = groups; left != 0; left &= left - 1) {
        const int grp = __builtin_ctz(left);
        const int r = grp / GROUPS_PER_ROW, h = grp % GROUPS_PER_ROW;
        const float dy = my - (fy0 + (float)r);
        const f8 dx = mx - (splat(fx0 + (float)(h * LANES)) + simd::iota());
        const Weight wt = weight(dx, q.ha, q.b * dy, q.hc * dy * dy, o);
        stopped |= forward_group(s, acc, C, col, grp * LANES, wt, entry, record);
    }
    if (!simd::any(stopped)) return;
    for (uint32_t left = groups; left != 0; left &= left - 1) {
        const int grp = __builtin_ctz(left);
        if (!simd::any(simd::load_i(s.live + grp * LANES))) s.live_groups &= ~(1u << grp);
    }
}

// Blends the tile's entries [start,end). With `last` (a backward will follow): records each pixel's last entry
// and final T, and in spans[k] the lane groups entry k was evaluated in (those of its span with a live pixel).
A3D_CLONES void forward_tile(const CompositeArgs& a, const float* extents, const int32_t* ids, int start, int end,
                             const TileGeom& tg, FwdScratch& s, float* image, float* alpha, int32_t* last,
                             float* final_T, uint32_t* spans) {
    const int C = a.channels;
    const bool record = last != nullptr;  // (spans is nullptr for an empty list too)
    s.acc.assign((size_t)C * P, 0.f);
    float* acc = s.acc.data();
    for (int p = 0; p < P; ++p) {
        s.T[p] = 1.f;
        s.last[p] = 0;
        s.live[p] = tg.inside[p] ? -1 : 0;
    }
    s.live_groups = 0;
    for (int grp = 0; grp < P / LANES; ++grp)
        if (simd::any(simd::load_i(s.live + grp * LANES))) s.live_groups |= 1u << grp;
    Span sp;
    for (int k = start; k < end && s.live_groups != 0; ++k) {
        const int g = ids[k];
        const float mx = a.means2d[2 * g], my = a.means2d[2 * g + 1];
        const float* conic = a.conics + 3 * g;
        tile_span(extents + EXT * g, conic, mx, my, tg, sp);
        const uint32_t groups = sp.groups & s.live_groups;
        if (record) spans[k] = groups;
        if (groups == 0) continue;
        forward_span(groups, tg, s, acc, C, a.colors + (int64_t)g * C, mx, my, conic2(conic[0], conic[1], conic[2]),
                     a.opacities[g], k - start + 1, record);
    }
    // spans past k are left unwritten: they lie after every pixel's last entry, where the backward never reads
    for (int p = 0; p < P; ++p) {
        if (!tg.inside[p]) continue;
        const int x = tg.x0 + p % TILE, y = tg.y0 + p / TILE;
        const int64_t pix = (int64_t)y * a.width + x;
        for (int ch = 0; ch < C; ++ch) image[pix * C + ch] = acc[ch * P + p] + s.T[p] * a.background[ch];
        alpha[pix] = 1.f - s.T[p];
        if (record) {
            last[pix] = s.last[p];
            final_T[pix] = s.T[p];
        }
    }
}

constexpr int GS = 6;  // per-intersection geometry gradients: mean2d (2), conic (3), opacity (1)

struct BwdScratch {
    alignas(64) float T[P];        // transmittance in front of the Gaussians still to visit
    alignas(64) float Tfin[P];
    alignas(64) float vA[P];       // dL/dalpha_out - background·dL/dimage (per pixel)
    alignas(64) int32_t last[P];   // entries processed
    int group_last[P / LANES];     // largest `last` in each lane group: groups past it are skipped
    std::vector<float> vC;         // [C,P]
    std::vector<float> buf;        // [C,P] colour of what lies behind, built back to front
    std::vector<float> v_col;      // [C,LANES] one Gaussian's colour gradient, lane-wise partial sums
};

struct GeoSums {  // one Gaussian's mean2d, conic and opacity gradients, lane-wise partial sums
    f8 mx, my, a, b, c, o;
};

// One colour channel of backward_group: the colour's gradient, the part of dL/dalpha it carries, and the colour
// of what lies behind, built back to front.
INLINE void backward_channel(BwdScratch& s, float colour, int at, int vcol_at, i8 m, f8 t, f8 ra, f8 fac, f8& va) {
    const f8 vc = simd::load(s.vC.data() + at);
    const f8 bf = simd::load(s.buf.data() + at);
    simd::store(s.v_col.data() + vcol_at, simd::load(s.v_col.data() + vcol_at) + fac * vc);
    va += (simd::select(m, colour * t, splat(0.f)) - bf * ra) * vc;
    simd::store(s.buf.data() + at, bf + colour * fac);
}

// Reverse step of one Gaussian over one lane group: restores T in front of it and adds its gradients to the
// partial sums. Returns the lanes that had blended it.
INLINE i8 backward_group(BwdScratch& s, GeoSums& g, int C, const float* __restrict col, int base, f8 dx, float dy,
                           const Weight& wt, float ca, float cb, float cc, float o, int32_t idx) {
    const f8 vis = wt.vis, al = wt.alpha;
    const i8 m = (simd::splat_i(idx) < simd::load_i(s.last + base)) & wt.ok;
    const f8 zero = splat(0.f);
    const f8 ra = simd::select(m, 1.f / (1.f - al), zero);  // 1/(1-alpha) where it was blended
    const f8 T_behind = simd::load(s.T + base);
    const f8 t = simd::select(m, T_behind * ra, T_behind);  // transmittance in front of this Gaussian
    simd::store(s.T + base, t);
    const f8 fac = simd::select(m, al * t, zero);
    f8 va = simd::load(s.Tfin + base) * ra * simd::load(s.vA + base);
    if (C == 3) {  // RGB unrolled (as in forward_group)
        for (int ch = 0; ch < 3; ++ch) backward_channel(s, col[ch], ch * P + base, ch * LANES, m, t, ra, fac, va);
    } else {
        for (int ch = 0; ch < C; ++ch) backward_channel(s, col[ch], ch * P + base, ch * LANES, m, t, ra, fac, va);
    }
    // alpha = min(0.99, o vis): no gradient through the clamp
    const f8 va_live = simd::select(m & (o * vis <= ALPHA_MAX), va, zero);
    const f8 v_sigma = -o * vis * va_live;
    g.mx += v_sigma * (ca * dx + cb * dy);
    g.my += v_sigma * (cb * dx + cc * dy);
    g.a += 0.5f * v_sigma * dx * dx;
    g.b += v_sigma * dx * dy;
    g.c += 0.5f * v_sigma * dy * dy;
    g.o += vis * va_live;
    return m;
}

// One Gaussian's gradients over the groups of a span that blended it, into geo [GS] and vcol [C].
INLINE void backward_span(const Span& sp, const TileGeom& tg, BwdScratch& s, int C, const float* col, float mx,
                          float my, float ca, float cb, float cc, float o, int32_t idx, float* geo, float* vcol) {
    const float fx0 = (float)tg.x0 + 0.5f, fy0 = (float)tg.y0 + 0.5f;
    const Conic2 q = conic2(ca, cb, cc);
    GeoSums g{splat(0.f), splat(0.f), splat(0.f), splat(0.f), splat(0.f), splat(0.f)};
    std::fill(s.v_col.begin(), s.v_col.end(), 0.f);
    i8 blended = simd::splat_i(0);
    for (uint32_t left = sp.groups; left != 0; left &= left - 1) {
        const int grp = __builtin_ctz(left);
        if (idx >= s.group_last[grp]) continue;  // past every pixel's last contributor
        const int r = grp / GROUPS_PER_ROW, h = grp % GROUPS_PER_ROW;
        const float dy = my - (fy0 + (float)r);
        const f8 dx = mx - (splat(fx0 + (float)(h * LANES)) + simd::iota());
        const Weight wt = weight(dx, q.ha, q.b * dy, q.hc * dy * dy, o);
        blended |= backward_group(s, g, C, col, grp * LANES, dx, dy, wt, ca, cb, cc, o, idx);
    }
    if (!simd::any(blended)) {  // after every pixel's last contributor, or out of reach: no gradient
        std::memset(geo, 0, GS * sizeof(float));
        std::memset(vcol, 0, C * sizeof(float));
        return;
    }
    geo[0] = simd::hsum(g.mx); geo[1] = simd::hsum(g.my); geo[2] = simd::hsum(g.a);
    geo[3] = simd::hsum(g.b); geo[4] = simd::hsum(g.c); geo[5] = simd::hsum(g.o);
    for (int ch = 0; ch < C; ++ch) vcol[ch] = simd::hsum(simd::load(s.v_col.data() + ch * LANES));
}

// Per-pixel state of the reverse pass from the forward's outputs and the incoming gradients, and the tile's
// part of the background's gradient (v_bg [C]); returns the largest `last` of the tile.
int backward_init(const CompositeArgs& a, const TileGeom& tg, const int32_t* last, const float* final_T,
                  const float* v_image, const float* v_alpha, BwdScratch& s, float* v_bg) {
    const int C = a.channels;
    s.vC.assign((size_t)C * P, 0.f);
    s.buf.assign((size_t)C * P, 0.f);
    s.v_col.assign((size_t)C * LANES, 0.f);
    int maxlast = 0;
    for (int p = 0; p < P; ++p) {
        s.T[p] = 1.f; s.Tfin[p] = 1.f; s.vA[p] = 0.f; s.last[p] = 0;
        if (!tg.inside[p]) continue;
        const int x = tg.x0 + p % TILE, y = tg.y0 + p / TILE;
        const int64_t pix = (int64_t)y * a.width + x;
        s.T[p] = s.Tfin[p] = final_T[pix];
        s.last[p] = last[pix];
        maxlast = std::max(maxlast, (int)last[pix]);
        float bgdot = 0.f;
        for (int ch = 0; ch < C; ++ch) {
            const float v = v_image[pix * C + ch];
            s.vC[ch * P + p] = v;
            bgdot += a.background[ch] * v;
            v_bg[ch] += s.Tfin[p] * v;
        }
        s.vA[p] = v_alpha[pix] - bgdot;
    }
    for (int grp = 0; grp < P / LANES; ++grp) {
        s.group_last[grp] = 0;
        for (int l = 0; l < LANES; ++l) s.group_last[grp] = std::max(s.group_last[grp], s.last[grp * LANES + l]);
    }
    return maxlast;
}

// Writes the gradient of every intersection [start,end) of this tile into isect_geo [M,6] / isect_col [M,C]. The
// spans are the forward's: every entry up to the last one blended anywhere in the tile was visited there.
A3D_CLONES void backward_tile(const CompositeArgs& a, const uint32_t* spans, const int32_t* ids, int start, int end,
                              const TileGeom& tg, const int32_t* last, const float* final_T, const float* v_image,
                              const float* v_alpha, BwdScratch& s, float* isect_geo, float* isect_col,
                              float* v_bg) {
    const int C = a.channels;
    const int maxlast = backward_init(a, tg, last, final_T, v_image, v_alpha, s, v_bg);
    Span sp;
    for (int k = end - 1; k >= start; --k) {
        const int g = ids[k];
        const float mx = a.means2d[2 * g], my = a.means2d[2 * g + 1];
        const float* conic = a.conics + 3 * g;
        sp.groups = k < start + maxlast ? spans[k] : 0u;
        backward_span(sp, tg, s, C, a.colors + (int64_t)g * C, mx, my, conic[0], conic[1], conic[2], a.opacities[g],
                      k - start, isect_geo + (int64_t)k * GS, isect_col + (int64_t)k * C);
    }
}

// extents [N,EXT]: per Gaussian, see alpha_extent.
std::vector<float> alpha_extents(const CompositeArgs& a, int num_threads) {
    std::vector<float> ext((size_t)a.n * EXT);
#pragma omp parallel for num_threads(num_threads) schedule(static) if (a.n > 8192)
    for (int64_t i = 0; i < a.n; ++i)
        alpha_extent(a.conics[3 * i], a.conics[3 * i + 1], a.conics[3 * i + 2], a.opacities[i], ext[EXT * i],
                     ext[EXT * i + 1], ext[EXT * i + 2]);
    return ext;
}

// Sums the intersections' gradients per Gaussian, in intersection order. Each thread owns a range of Gaussians
// and scans every intersection for its own: the sums do not depend on the thread count.
void reduce_per_gaussian(const CompositeArgs& a, const int32_t* gauss_ids, int64_t m, const float* isect_geo,
                         const float* isect_col, float* v_means2d, float* v_conics, float* v_opacities,
                         float* v_colors, int num_threads) {
    const int C = a.channels;
    std::memset(v_means2d, 0, sizeof(float) * 2 * a.n);
    std::memset(v_conics, 0, sizeof(float) * 3 * a.n);
    std::memset(v_opacities, 0, sizeof(float) * a.n);
    std::memset(v_colors, 0, sizeof(float) * C * a.n);
#pragma omp parallel num_threads(num_threads) if (m > 65536)
    {
        const int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
        const int64_t lo = a.n * part / parts, hi = a.n * (part + 1) / parts;
        for (int64_t k = 0; k < m; ++k) {
            const int64_t g = gauss_ids[k];
            if (g < lo || g >= hi) continue;
            const float* geo = isect_geo + k * GS;
            v_means2d[2 * g] += geo[0];
            v_means2d[2 * g + 1] += geo[1];
            v_conics[3 * g] += geo[2];
            v_conics[3 * g + 1] += geo[3];
            v_conics[3 * g + 2] += geo[4];
            v_opacities[g] += geo[5];
            const float* col = isect_col + k * C;
            for (int ch = 0; ch < C; ++ch) v_colors[g * C + ch] += col[ch];
        }
    }
}

}  // namespace

int64_t bin_count_cpu(const CompositeArgs& a, int32_t* tiles_per_gauss, int num_threads) {
    const int tx = tiles_x_of(a.width), ty = tiles_y_of(a.height);
    int64_t total = 0;
#pragma omp parallel for num_threads(num_threads) reduction(+ : total) schedule(static) if (a.n > 8192)
    for (int64_t i = 0; i < a.n; ++i) {
        int cnt = 0;
        if (a.radii[i] > 0) {
            int x0, y0, x1, y1;
            tile_rect(a.means2d[2 * i], a.means2d[2 * i + 1], a.radii[i], tx, ty, x0, y0, x1, y1);
            cnt = (x1 - x0) * (y1 - y0);
        }
        tiles_per_gauss[i] = cnt;
        total += cnt;
    }
    return total;
}

int64_t depth_order_cpu(const CompositeArgs& a, const int32_t* tiles_per_gauss, int32_t* order) {
    // LSD radix sort of depth_key, 8 bits a pass; every pass is stable, so equal depths keep index order.
    std::vector<uint32_t> keys, keys_next;
    std::vector<int32_t> next;
    int64_t n = 0;
    for (int64_t i = 0; i < a.n; ++i) n += tiles_per_gauss[i] > 0;
    keys.resize(n);
    keys_next.resize(n);
    next.resize(n);
    n = 0;
    for (int64_t i = 0; i < a.n; ++i) {
        if (tiles_per_gauss[i] == 0) continue;
        order[n] = (int32_t)i;
        keys[n++] = depth_key(a.depths[i]);
    }
    int32_t* cur = order;
    int32_t* alt = next.data();
    for (int shift = 0; shift < 32; shift += 8) {
        int64_t start[257] = {0};
        for (int64_t k = 0; k < n; ++k) ++start[((keys[k] >> shift) & 255u) + 1];
        if (n == 0 || std::count(start + 1, start + 257, n) == 1) continue;  // one digit for all: nothing moves
        for (int d = 0; d < 256; ++d) start[d + 1] += start[d];
        for (int64_t k = 0; k < n; ++k) {
            const int64_t pos = start[(keys[k] >> shift) & 255u]++;
            keys_next[pos] = keys[k];
            alt[pos] = cur[k];
        }
        keys.swap(keys_next);
        std::swap(cur, alt);
    }
    if (cur != order) std::copy(cur, cur + n, order);
    return n;
}

// Calls visit(tile) for every tile of every Gaussian in order[lo, hi), in that order.
template <typename Visit>
void for_each_tile(const CompositeArgs& a, const int32_t* order, int64_t lo, int64_t hi, Visit visit) {
    const int tx = tiles_x_of(a.width), ty = tiles_y_of(a.height);
    for (int64_t k = lo; k < hi; ++k) {
        const int32_t i = order[k];
        int x0, y0, x1, y1;
        tile_rect(a.means2d[2 * i], a.means2d[2 * i + 1], a.radii[i], tx, ty, x0, y0, x1, y1);
        for (int y = y0; y < y1; ++y)
            for (int x = x0; x < x1; ++x) visit(i, y * tx + x);
    }
}

void bin_fill_cpu(const CompositeArgs& a, const int32_t* order, int64_t n_order, int64_t m, int32_t* gauss_ids,
                  int32_t* tile_ranges, int num_threads) {
    const int n_tiles = tiles_x_of(a.width) * tiles_y_of(a.height);
    // Each thread takes a contiguous part of the depth order, counts its entries per tile, and after a prefix sum
    // over (tile, part) scatters them: each tile's list comes out in depth order, the same whatever the threads.
    const int parts = n_order > 16384 ? std::max(1, num_threads) : 1;
    std::vector<int64_t> cursor((size_t)parts * n_tiles, 0);  // [part][tile]: counts, then write positions
    auto at = [&](int part, int t) -> int64_t& { return cursor[(size_t)part * n_tiles + t]; };
    auto lo = [&](int part) { return n_order * part / parts; };
#pragma omp parallel num_threads(parts)
    {
        // parts by thread, so that every part is done even if the runtime gives fewer threads than asked
        for (int part = omp_get_thread_num(); part < parts; part += omp_get_num_threads())
            for_each_tile(a, order, lo(part), lo(part + 1), [&](int32_t, int t) { at(part, t) += 1; });
#pragma omp barrier
#pragma omp single
        {
            int64_t start = 0;
            for (int t = 0; t < n_tiles; ++t) {
                tile_ranges[2 * t] = (int32_t)start;
                for (int p = 0; p < parts; ++p) {
                    const int64_t count = at(p, t);
                    at(p, t) = start;
                    start += count;
                }
                tile_ranges[2 * t + 1] = (int32_t)start;
            }
            (void)m;  // == start
        }
        for (int part = omp_get_thread_num(); part < parts; part += omp_get_num_threads())
            for_each_tile(a, order, lo(part), lo(part + 1), [&](int32_t i, int t) { gauss_ids[at(part, t)++] = i; });
    }
}

void composite_forward_cpu(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                           float* image, float* alpha, int32_t* last, float* final_T, uint32_t* spans,
                           int num_threads) {
    const int tx = tiles_x_of(a.width), ty = tiles_y_of(a.height);
    const int n_tiles = tx * ty;
    const std::vector<float> ext = alpha_extents(a, num_threads);
#pragma omp parallel num_threads(num_threads)
    {
        TileGeom tg;
        FwdScratch s;
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < n_tiles; ++t) {
            tile_geom(t, tx, a.width, a.height, tg);
            forward_tile(a, ext.data(), gauss_ids, tile_ranges[2 * t], tile_ranges[2 * t + 1], tg, s, image, alpha, last,
                         final_T, spans);
        }
    }
}

void composite_backward_cpu(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                            const uint32_t* spans, const int32_t* last, const float* final_T, const float* v_image,
                            const float* v_alpha, float* v_means2d, float* v_conics, float* v_opacities,
                            float* v_colors, float* v_background, int num_threads) {
    const int C = a.channels;
    const int tx = tiles_x_of(a.width), ty = tiles_y_of(a.height);
    const int n_tiles = tx * ty;
    const int64_t m = n_tiles > 0 ? tile_ranges[2 * (n_tiles - 1) + 1] : 0;
    // Per-intersection gradients (each written by exactly one tile, so not zeroed first) and per-tile background
    // gradients, then reductions in a fixed order: no atomics, and the result depends neither on the thread
    // count nor on which thread took which tile.
    std::unique_ptr<float[]> isect_geo(new float[(size_t)m * GS]), isect_col(new float[(size_t)m * C]);
    std::vector<float> v_bg_tiles((size_t)n_tiles * C, 0.f);
#pragma omp parallel num_threads(num_threads)
    {
        TileGeom tg;
        BwdScratch s;
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < n_tiles; ++t) {
            tile_geom(t, tx, a.width, a.height, tg);
            backward_tile(a, spans, gauss_ids, tile_ranges[2 * t], tile_ranges[2 * t + 1], tg, last, final_T, v_image,
                          v_alpha, s, isect_geo.get(), isect_col.get(), v_bg_tiles.data() + (size_t)t * C);
        }
    }
    for (int ch = 0; ch < C; ++ch) {
        float acc = 0.f;
        for (int t = 0; t < n_tiles; ++t) acc += v_bg_tiles[(size_t)t * C + ch];
        v_background[ch] = acc;
    }
    reduce_per_gaussian(a, gauss_ids, m, isect_geo.get(), isect_col.get(), v_means2d, v_conics, v_opacities, v_colors,
                        num_threads);
}

}  // namespace a3d
