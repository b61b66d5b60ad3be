// CPU core of the compositing op: tile binning, then per-tile front-to-back compositing and its reverse
// traversal. OpenMP over tiles; the per-pixel loops run over the tile's 256 pixels with no branches so that
// they vectorise (one Gaussian at a time, all pixels of the tile in SIMD lanes).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "a3d/cores.h"
#include "a3d/raster.h"

// Hot loops get an AVX2 clone picked at load time; the default clone runs on any x86-64.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define A3D_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define A3D_CLONES
#endif

namespace a3d {
namespace {

constexpr int P = TILE_PIXELS;
constexpr int LANES = 8;  // pixels per SIMD group (half a tile row)
constexpr int GROUPS_PER_ROW = TILE / LANES;

struct TileGeom {
    int x0, y0;               // first pixel of the tile
    int valid;                // pixels of the tile inside the image
    alignas(64) float px[P];  // pixel centres
    alignas(64) float py[P];
    alignas(64) int inside[P];
};

void tile_geom(int tile, int tiles_x, int width, int height, TileGeom& g) {
    g.x0 = (tile % tiles_x) * TILE;
    g.y0 = (tile / tiles_x) * TILE;
    g.valid = 0;
    for (int p = 0; p < P; ++p) {
        const int x = g.x0 + p % TILE, y = g.y0 + p / TILE;
        g.px[p] = (float)x + 0.5f;
        g.py[p] = (float)y + 0.5f;
        g.inside[p] = (x < width && y < height) ? 1 : 0;
        g.valid += g.inside[p];
    }
}

// The part of a tile a Gaussian can reach: rows [r0,r1), and in row r the lane groups [lo[r],hi[r]) that meet
// its alpha >= 1/255 ellipse. Every other pixel would skip it, so leaving them out changes nothing but time.
struct Span {
    int r0, r1;
    int lo[TILE], hi[TILE];
    bool empty() const { return r0 >= r1; }
};

constexpr int EXT = 3;  // per-Gaussian extent record: hx, hy, two_s (alpha_extent)

A3D_CLONES void tile_span(const float* ext, const float* conic, float mx, float my, const TileGeom& tg, Span& sp) {
    const float hx = ext[0], hy = ext[1], two_s = ext[2];
    sp.r0 = sp.r1 = 0;
    if (hx < 0.f) return;
    const float fx0 = (float)tg.x0 + 0.5f, fy0 = (float)tg.y0 + 0.5f;
    sp.r0 = (int)clampf(ceilf(my - hy - fy0), 0.f, (float)TILE);
    sp.r1 = (int)clampf(floorf(my + hy - fy0) + 1.f, 0.f, (float)TILE);
    const float box_lo = floorf(clampf(ceilf(mx - hx - fx0), 0.f, (float)TILE) * (1.f / LANES));
    const float box_hi = ceilf(clampf(floorf(mx + hx - fx0) + 1.f, 0.f, (float)TILE) * (1.f / LANES));
    if (!(two_s > 0.f)) {  // no ellipse bound: the box
        for (int r = 0; r < TILE; ++r) {
            sp.lo[r] = (int)box_lo;
            sp.hi[r] = (int)box_hi;
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
        sp.lo[r] = (int)lo;
        sp.hi[r] = (int)(q2 >= 0.f ? hi : lo);  // no pixel of this row reaches the ellipse
    }
}

struct FwdScratch {
    alignas(64) float T[P];
    alignas(64) float w[P];
    alignas(64) float last[P];  // entries processed, as float (exact below 2^24) to keep the loops all-float
    alignas(64) float live[P];  // 1 while the pixel is still compositing
    float group_live[P / LANES];  // live pixels per lane group
    std::vector<float> acc;     // [C,P]
};

// One Gaussian against the pixels of a span. Masks are 0/1 floats and selects are m*x + (1-m)*y (exact for
// 0/1), the form GCC vectorises. Returns the number of pixels that stopped at this Gaussian.
A3D_CLONES float forward_pixels(const Span& sp, const float* __restrict px, const float* __restrict py,
                                float* __restrict T, float* __restrict w, float* __restrict last,
                                float* __restrict live, float* __restrict group_live, float mx, float my,
                                float ca, float cb, float cc, float o, float entry, float& n_added) {
    float nstop = 0.f, nadd = 0.f;
    for (int r = sp.r0; r < sp.r1; ++r) {
        for (int h = sp.lo[r]; h < sp.hi[r]; ++h) {
            const int grp = r * GROUPS_PER_ROW + h;
            if (group_live[grp] == 0.f) continue;  // every pixel of the group has stopped
            const int base = grp * LANES;
            float gstop = 0.f;
#pragma omp simd reduction(+ : gstop, nadd)
            for (int l = 0; l < LANES; ++l) {
                const int p = base + l;
                const float dx = mx - px[p], dy = my - py[p];
                const float sigma = gauss_sigma(ca, cb, cc, dx, dy);
                const float al = minf(ALPHA_MAX, o * exp_neg(-sigma));
                const float lv = live[p], t = T[p], lp = last[p];
                const float ok = (float)(sigma >= 0.f) * (float)(al >= ALPHA_MIN) * lv;
                const float tn = t * (1.f - al);
                const float stop = (float)(tn <= T_MIN) * ok;
                const float add = ok - stop;
                w[p] = add * al * t;
                T[p] = add * tn + (1.f - add) * t;
                last[p] = add * entry + (1.f - add) * lp;
                live[p] = lv - stop;
                gstop += stop;
                nadd += add;
            }
            group_live[grp] -= gstop;
            nstop += gstop;
        }
    }
    n_added = nadd;
    return nstop;
}

// Groups that had stopped before this Gaussian were not evaluated (their w is stale); groups that stopped at
// it have w = 0. Both are skipped.
A3D_CLONES void accumulate_color(const Span& sp, const float* __restrict w, const float* __restrict group_live,
                                 float* __restrict acc, float col) {
    for (int r = sp.r0; r < sp.r1; ++r) {
        for (int h = sp.lo[r]; h < sp.hi[r]; ++h) {
            const int grp = r * GROUPS_PER_ROW + h;
            if (group_live[grp] == 0.f) continue;
            const int base = grp * LANES;
#pragma omp simd
            for (int l = 0; l < LANES; ++l) acc[base + l] += w[base + l] * col;
        }
    }
}

void forward_tile(const CompositeArgs& a, const float* extents, const int32_t* ids, int start, int end,
                  const TileGeom& tg, FwdScratch& s, float* image, float* alpha, int32_t* last, float* final_T) {
    const int C = a.channels;
    s.acc.assign((size_t)C * P, 0.f);
    float* acc = s.acc.data();
    for (int p = 0; p < P; ++p) {
        s.T[p] = 1.f;
        s.last[p] = 0.f;
        s.live[p] = tg.inside[p] ? 1.f : 0.f;
    }
    for (int grp = 0; grp < P / LANES; ++grp) {
        s.group_live[grp] = 0.f;
        for (int l = 0; l < LANES; ++l) s.group_live[grp] += s.live[grp * LANES + l];
    }
    float active = (float)tg.valid;
    Span sp;
    for (int k = start; k < end && active > 0.5f; ++k) {
        const int g = ids[k];
        const float mx = a.means2d[2 * g], my = a.means2d[2 * g + 1];
        tile_span(extents + EXT * g, a.conics + 3 * g, mx, my, tg, sp);
        if (sp.empty()) continue;
        float nadd;
        active -= forward_pixels(sp, tg.px, tg.py, s.T, s.w, s.last, s.live, s.group_live, mx, my, a.conics[3 * g],
                                 a.conics[3 * g + 1], a.conics[3 * g + 2], a.opacities[g], (float)(k - start + 1),
                                 nadd);
        if (nadd > 0.f)
            for (int ch = 0; ch < C; ++ch) accumulate_color(sp, s.w, s.group_live, acc + ch * P, a.colors[(int64_t)g * C + ch]);
    }
    for (int p = 0; p < P; ++p) {
        if (!tg.inside[p]) continue;
        const int x = tg.x0 + p % TILE, y = tg.y0 + p / TILE;
        const int64_t pix = (int64_t)y * a.width + x;
        for (int ch = 0; ch < C; ++ch) image[pix * C + ch] = acc[ch * P + p] + s.T[p] * a.background[ch];
        alpha[pix] = 1.f - s.T[p];
        last[pix] = (int32_t)s.last[p];
        final_T[pix] = s.T[p];
    }
}

constexpr int GS = 6;  // per-intersection geometry gradients: mean2d (2), conic (3), opacity (1)

struct BwdScratch {
    alignas(64) float T[P];
    alignas(64) float Tfin[P];
    alignas(64) float vA[P];    // dL/dalpha_out - background·dL/dimage (per pixel)
    alignas(64) float last[P];  // entries processed, as float
    alignas(64) float dx[P];
    alignas(64) float dy[P];
    alignas(64) float vis[P];
    alignas(64) float mask[P];
    alignas(64) float fac[P];
    alignas(64) float ra[P];
    alignas(64) float va[P];
    float group_last[P / LANES];  // largest `last` in each lane group: groups past it are skipped
    std::vector<float> vC;    // [C,P]
    std::vector<float> buf;   // [C,P]
    std::vector<float> v_bg;  // [C] per thread
};

// Reverse step of one Gaussian over a span: restores T in front of it, the blend factor and the
// colour-independent part of dL/dalpha. Returns how many pixels it contributed to.
A3D_CLONES float backward_pixels_geom(const Span& sp, BwdScratch& s, const float* __restrict px,
                                      const float* __restrict py, float mx, float my, float ca, float cb, float cc,
                                      float o, float idx) {
    float* __restrict T = s.T;
    float nm = 0.f;
    for (int r = sp.r0; r < sp.r1; ++r) {
        for (int h = sp.lo[r]; h < sp.hi[r]; ++h) {
            const int grp = r * GROUPS_PER_ROW + h;
            if (idx >= s.group_last[grp]) continue;  // past every pixel's last contributor
            const int base = grp * LANES;
#pragma omp simd reduction(+ : nm)
            for (int l = 0; l < LANES; ++l) {
                const int p = base + l;
                const float dx = mx - px[p], dy = my - py[p];
                const float sigma = gauss_sigma(ca, cb, cc, dx, dy);
                const float vis = exp_neg(-sigma);
                const float al = minf(ALPHA_MAX, o * vis);
                const float m = (float)(idx < s.last[p]) * (float)(sigma >= 0.f) * (float)(al >= ALPHA_MIN);
                const float ra = m / (1.f - al);                      // 1/(1-alpha) where contributing, else 0
                const float t = m * (T[p] * ra) + (1.f - m) * T[p];  // transmittance in front of this Gaussian
                T[p] = t;
                s.dx[p] = dx;
                s.dy[p] = dy;
                s.vis[p] = vis;
                s.mask[p] = m;
                s.fac[p] = m * al * t;
                s.ra[p] = ra;
                s.va[p] = s.Tfin[p] * ra * s.vA[p];
                nm += m;
            }
        }
    }
    return nm;
}

// Colour channel ch: dL/dcolour (returned) and its part of dL/dalpha; advances the back-to-front buffer.
A3D_CLONES float backward_pixels_color(const Span& sp, BwdScratch& s, const float* __restrict vc,
                                       float* __restrict bf, float col, float idx) {
    float sum = 0.f;
    for (int r = sp.r0; r < sp.r1; ++r) {
        for (int h = sp.lo[r]; h < sp.hi[r]; ++h) {
            const int grp = r * GROUPS_PER_ROW + h;
            if (idx >= s.group_last[grp]) continue;  // past every pixel's last contributor
            const int base = grp * LANES;
#pragma omp simd reduction(+ : sum)
            for (int l = 0; l < LANES; ++l) {
                const int p = base + l;
                sum += s.fac[p] * vc[p];
                s.va[p] += (col * s.T[p] * s.mask[p] - bf[p] * s.ra[p]) * vc[p];
                bf[p] += col * s.fac[p];
            }
        }
    }
    return sum;
}

// dL/dalpha -> mean2d, conic and opacity gradients, summed over the span into geo[6].
A3D_CLONES void backward_pixels_sum(const Span& sp, const BwdScratch& s, float ca, float cb, float cc, float o,
                                    float idx, float* geo) {
    float g_mx = 0.f, g_my = 0.f, g_a = 0.f, g_b = 0.f, g_c = 0.f, g_o = 0.f;
    for (int r = sp.r0; r < sp.r1; ++r) {
        for (int h = sp.lo[r]; h < sp.hi[r]; ++h) {
            const int grp = r * GROUPS_PER_ROW + h;
            if (idx >= s.group_last[grp]) continue;  // past every pixel's last contributor
            const int base = grp * LANES;
#pragma omp simd reduction(+ : g_mx, g_my, g_a, g_b, g_c, g_o)
            for (int l = 0; l < LANES; ++l) {
                const int p = base + l;
                const float vis = s.vis[p];
                // alpha = min(0.99, o vis): no gradient through the clamp
                const float live = s.mask[p] * (float)(o * vis <= ALPHA_MAX);
                const float va = live * s.va[p];
                const float v_sigma = -o * vis * va;
                const float dx = s.dx[p], dy = s.dy[p];
                g_mx += v_sigma * (ca * dx + cb * dy);
                g_my += v_sigma * (cb * dx + cc * dy);
                g_a += 0.5f * v_sigma * dx * dx;
                g_b += v_sigma * dx * dy;
                g_c += 0.5f * v_sigma * dy * dy;
                g_o += vis * va;
            }
        }
    }
    geo[0] = g_mx; geo[1] = g_my; geo[2] = g_a; geo[3] = g_b; geo[4] = g_c; geo[5] = g_o;
}

// Writes the gradient of every intersection [start,end) of this tile into isect_geo [M,6] / isect_col [M,C].
void backward_tile(const CompositeArgs& a, const float* extents, const int32_t* ids, int start, int end,
                   const TileGeom& tg, const int32_t* last, const float* final_T, const float* v_image,
                   const float* v_alpha, BwdScratch& s, float* isect_geo, float* isect_col) {
    const int C = a.channels;
    s.vC.assign((size_t)C * P, 0.f);
    s.buf.assign((size_t)C * P, 0.f);
    float* vC = s.vC.data();
    float* buf = s.buf.data();
    int maxlast = 0;
    for (int p = 0; p < P; ++p) {
        s.T[p] = 1.f; s.Tfin[p] = 1.f; s.vA[p] = 0.f; s.last[p] = 0.f;
        if (!tg.inside[p]) continue;
        const int x = tg.x0 + p % TILE, y = tg.y0 + p / TILE;
        const int64_t pix = (int64_t)y * a.width + x;
        s.T[p] = s.Tfin[p] = final_T[pix];
        s.last[p] = (float)last[pix];
        maxlast = std::max(maxlast, (int)last[pix]);
        float bgdot = 0.f;
        for (int ch = 0; ch < C; ++ch) {
            const float v = v_image[pix * C + ch];
            vC[ch * P + p] = v;
            bgdot += a.background[ch] * v;
            s.v_bg[ch] += s.Tfin[p] * v;
        }
        s.vA[p] = v_alpha[pix] - bgdot;
    }
    for (int grp = 0; grp < P / LANES; ++grp) {
        s.group_last[grp] = 0.f;
        for (int l = 0; l < LANES; ++l) s.group_last[grp] = std::max(s.group_last[grp], s.last[grp * LANES + l]);
    }
    Span sp;
    for (int k = end - 1; k >= start; --k) {
        float* geo = isect_geo + (int64_t)k * GS;
        float* vcol = isect_col + (int64_t)k * C;
        const int g = ids[k];
        const float mx = a.means2d[2 * g], my = a.means2d[2 * g + 1];
        sp.r0 = sp.r1 = 0;
        if (k < start + maxlast) tile_span(extents + EXT * g, a.conics + 3 * g, mx, my, tg, sp);
        float nm = 0.f;
        const float ca = a.conics[3 * g], cb = a.conics[3 * g + 1], cc = a.conics[3 * g + 2];
        const float o = a.opacities[g];
        if (!sp.empty()) nm = backward_pixels_geom(sp, s, tg.px, tg.py, mx, my, ca, cb, cc, o, (float)(k - start));
        if (nm == 0.f) {  // after every pixel's last contributor, or out of reach: no gradient
            std::memset(geo, 0, GS * sizeof(float));
            std::memset(vcol, 0, C * sizeof(float));
            continue;
        }
        for (int ch = 0; ch < C; ++ch)
            vcol[ch] = backward_pixels_color(sp, s, vC + ch * P, buf + ch * P, a.colors[(int64_t)g * C + ch],
                                             (float)(k - start));
        backward_pixels_sum(sp, s, ca, cb, cc, o, (float)(k - start), geo);
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

void bin_fill_cpu(const CompositeArgs& a, const int32_t* tiles_per_gauss, int64_t m, int32_t* gauss_ids,
                  int32_t* tile_ranges, int num_threads) {
    const int tx = tiles_x_of(a.width), ty = tiles_y_of(a.height);
    const int n_tiles = tx * ty;
    std::vector<int32_t> cursor(n_tiles + 1, 0);
    // Count per tile, prefix-sum, then scatter in Gaussian order (so equal depths keep index order).
    for (int64_t i = 0; i < a.n; ++i) {
        if (tiles_per_gauss[i] == 0) continue;
        int x0, y0, x1, y1;
        tile_rect(a.means2d[2 * i], a.means2d[2 * i + 1], a.radii[i], tx, ty, x0, y0, x1, y1);
        for (int y = y0; y < y1; ++y)
            for (int x = x0; x < x1; ++x) cursor[y * tx + x + 1] += 1;
    }
    for (int t = 0; t < n_tiles; ++t) cursor[t + 1] += cursor[t];
    for (int t = 0; t < n_tiles; ++t) {
        tile_ranges[2 * t] = cursor[t];
        tile_ranges[2 * t + 1] = cursor[t + 1];
    }
    (void)m;  // == cursor[n_tiles]
    for (int64_t i = 0; i < a.n; ++i) {
        if (tiles_per_gauss[i] == 0) continue;
        int x0, y0, x1, y1;
        tile_rect(a.means2d[2 * i], a.means2d[2 * i + 1], a.radii[i], tx, ty, x0, y0, x1, y1);
        for (int y = y0; y < y1; ++y)
            for (int x = x0; x < x1; ++x) gauss_ids[cursor[y * tx + x]++] = (int32_t)i;
    }
#pragma omp parallel num_threads(num_threads)
    {
        std::vector<std::pair<float, int32_t>> keys;
#pragma omp for schedule(dynamic, 4)
        for (int t = 0; t < n_tiles; ++t) {
            const int s = tile_ranges[2 * t], e = tile_ranges[2 * t + 1];
            if (e - s < 2) continue;
            keys.resize(e - s);
            for (int k = s; k < e; ++k) keys[k - s] = {a.depths[gauss_ids[k]], gauss_ids[k]};
            std::sort(keys.begin(), keys.end());  // (depth, index): stable by index
            for (int k = s; k < e; ++k) gauss_ids[k] = keys[k - s].second;
        }
    }
}

void composite_forward_cpu(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                           float* image, float* alpha, int32_t* last, float* final_T, int num_threads) {
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
                         final_T);
        }
    }
}

void composite_backward_cpu(const CompositeArgs& a, const int32_t* gauss_ids, const int32_t* tile_ranges,
                            const int32_t* last, const float* final_T, const float* v_image, const float* v_alpha,
                            float* v_means2d, float* v_conics, float* v_opacities, float* v_colors,
                            float* v_background, int num_threads) {
    const int C = a.channels;
    const int tx = tiles_x_of(a.width), ty = tiles_y_of(a.height);
    const int n_tiles = tx * ty;
    const int64_t m = n_tiles > 0 ? tile_ranges[2 * (n_tiles - 1) + 1] : 0;
    // Per-intersection gradients (each written by exactly one tile), then an ordered per-Gaussian reduction:
    // no atomics, and the result does not depend on the thread count.
    std::vector<float> isect_geo((size_t)m * GS), isect_col((size_t)m * C);
    std::vector<float> v_bg_all((size_t)num_threads * C, 0.f);
    const std::vector<float> ext = alpha_extents(a, num_threads);
#pragma omp parallel num_threads(num_threads)
    {
        TileGeom tg;
        BwdScratch s;
        s.v_bg.assign(C, 0.f);
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < n_tiles; ++t) {
            tile_geom(t, tx, a.width, a.height, tg);
            backward_tile(a, ext.data(), gauss_ids, tile_ranges[2 * t], tile_ranges[2 * t + 1], tg, last, final_T, v_image,
                          v_alpha, s, isect_geo.data(), isect_col.data());
        }
        const int tid = omp_get_thread_num();
        for (int ch = 0; ch < C; ++ch) v_bg_all[(size_t)tid * C + ch] = s.v_bg[ch];
    }
    for (int ch = 0; ch < C; ++ch) {
        float acc = 0.f;
        for (int t = 0; t < num_threads; ++t) acc += v_bg_all[(size_t)t * C + ch];
        v_background[ch] = acc;
    }
    std::memset(v_means2d, 0, sizeof(float) * 2 * a.n);
    std::memset(v_conics, 0, sizeof(float) * 3 * a.n);
    std::memset(v_opacities, 0, sizeof(float) * a.n);
    std::memset(v_colors, 0, sizeof(float) * C * a.n);
    for (int64_t k = 0; k < m; ++k) {
        const int64_t g = gauss_ids[k];
        const float* geo = isect_geo.data() + k * GS;
        v_means2d[2 * g] += geo[0];
        v_means2d[2 * g + 1] += geo[1];
        v_conics[3 * g] += geo[2];
        v_conics[3 * g + 1] += geo[3];
        v_conics[3 * g + 2] += geo[4];
        v_opacities[g] += geo[5];
        const float* col = isect_col.data() + k * C;
        for (int ch = 0; ch < C; ++ch) v_colors[g * C + ch] += col[ch];
    }
}

}  // namespace a3d
