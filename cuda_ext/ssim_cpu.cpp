// CPU core of the training loss's SSIM map (avatar3d/training/losses.py: padded_ssim_map is its PyTorch
// reference): an 11-tap Gaussian window (sigma 1.5), zero padding, the constants of Wang et al., the map the mean
// of the channels' SSIM. Forward and its gradient in a few passes over the planes, instead of the ~30 tensor ops
// (and their autograd) of the reference: the loss was a quarter of a training step.
#include <cmath>
#include <vector>

#include "a3d/cores.h"

namespace a3d {
namespace {

constexpr int WIN = SSIM_WINDOW, RAD = WIN / 2;
constexpr float C1 = 0.01f * 0.01f, C2 = 0.03f * 0.03f;

struct Window {
    float g[WIN];
    Window() {  // as the reference: exp(-x²/(2σ²)) over x = -5..5, normalised to sum 1
        float sum = 0.f;
        for (int k = 0; k < WIN; ++k) {
            const float x = (float)(k - RAD);
            g[k] = std::exp(-x * x / (2.f * SSIM_SIGMA * SSIM_SIGMA));
            sum += g[k];
        }
        for (float& v : g) v /= sum;
    }
};

// dst[j] = sum_k g[k] src[j+k-RAD] over one row (zero outside it); tap by tap, so that the loop over j vectorises.
inline void blur_row(const float* __restrict src, float* __restrict dst, int W, const Window& w) {
    for (int j = 0; j < W; ++j) dst[j] = 0.f;
    for (int k = 0; k < WIN; ++k) {
        const int lo = k < RAD ? RAD - k : 0, hi = k > RAD ? W - (k - RAD) : W;
        const float gk = w.g[k];
        const float* s = src + (k - RAD);
#pragma omp simd
        for (int j = lo; j < hi; ++j) dst[j] += gk * s[j];
    }
}

// Buffers that live as long as the thread: a training step calls this op every step with the same sizes, and
// fresh allocations of tens of MB cost more in page faults than the arithmetic.
float* scratch(std::vector<float>& buffer, size_t n) {
    if (buffer.size() < n) buffer.resize(n);
    return buffer.data();
}

// out[r][j] = sum_k g[k] in[r+k-RAD][j] (zero outside the column), for `planes` planes of H×W.
void blur_cols(const float* in, float* out, int planes, int H, int W, const Window& w, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < (int64_t)planes * H; ++row) {
        const int64_t plane = row / H;
        const int r = (int)(row % H);
        const float* src = in + plane * H * W;
        float* dst = out + row * W;
        for (int j = 0; j < W; ++j) dst[j] = 0.f;
        const int k0 = r < RAD ? RAD - r : 0, k1 = r + RAD >= H ? H - 1 - r + RAD : WIN - 1;
        for (int k = k0; k <= k1; ++k) {
            const float gk = w.g[k];
            const float* line = src + (int64_t)(r + k - RAD) * W;
#pragma omp simd
            for (int j = 0; j < W; ++j) dst[j] += gk * line[j];
        }
    }
}

// The SSIM of one pixel of one channel from its five blurred statistics, and (when d is given) its partial
// derivatives by the blurred x, x² and xy (the render's: the target is a constant).
inline float ssim_at(float mx, float my, float exx, float eyy, float exy, float* d) {
    const float sxx = exx - mx * mx, syy = eyy - my * my, sxy = exy - mx * my;
    const float a1 = 2.f * mx * my + C1, a2 = 2.f * sxy + C2;
    const float b1 = mx * mx + my * my + C1, b2 = sxx + syy + C2;
    const float s = (a1 * a2) / (b1 * b2);
    if (d != nullptr) {
        const float ds_a1 = a2 / (b1 * b2), ds_a2 = a1 / (b1 * b2), ds_b1 = -s / b1, ds_b2 = -s / b2;
        // a1, b1 depend on mx directly; a2 through sxy = exy - mx my, b2 through sxx = exx - mx²
        d[0] = ds_a1 * 2.f * my + ds_b1 * 2.f * mx - ds_a2 * 2.f * my - ds_b2 * 2.f * mx;
        d[1] = ds_b2;        // by exx
        d[2] = ds_a2 * 2.f;  // by exy
    }
    return s;
}

}  // namespace

void ssim_forward_cpu(const float* x, const float* y, int H, int W, int C, float* ssim_map, float* stats,
                      int num_threads) {
    static thread_local std::vector<float> rows_buffer;
    const Window w;
    const int64_t hw = (int64_t)H * W;
    float* rows = scratch(rows_buffer, (size_t)5 * C * hw);  // planes [stat][channel]: x, y, x², y², xy
#pragma omp parallel num_threads(num_threads)
    {
        std::vector<float> line((size_t)5 * W);
#pragma omp for schedule(static)
        for (int64_t cr = 0; cr < (int64_t)C * H; ++cr) {
            const int c = (int)(cr / H);
            const int64_t r = cr % H;
            for (int j = 0; j < W; ++j) {
                const float xv = x[(r * W + j) * C + c], yv = y[(r * W + j) * C + c];
                line[j] = xv;
                line[W + j] = yv;
                line[2 * W + j] = xv * xv;
                line[3 * W + j] = yv * yv;
                line[4 * W + j] = xv * yv;
            }
            for (int i = 0; i < 5; ++i) blur_row(line.data() + i * W, rows + ((int64_t)i * C + c) * hw + r * W, W, w);
        }
    }
    blur_cols(rows, stats, 5 * C, H, W, w, num_threads);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t p = 0; p < hw; ++p) {
        float sum = 0.f;
        for (int c = 0; c < C; ++c) {
            const float* st = stats + (int64_t)c * hw + p;
            const int64_t step = (int64_t)C * hw;
            sum += ssim_at(st[0], st[step], st[2 * step], st[3 * step], st[4 * step], nullptr);
        }
        ssim_map[p] = sum / (float)C;
    }
}

void ssim_backward_cpu(const float* x, const float* y, const float* stats, const float* v_map, int H, int W, int C,
                       float* v_x, int num_threads) {
    const Window w;
    const int64_t hw = (int64_t)H * W;
    static thread_local std::vector<float> partials_buffer, rows_buffer, blurred_buffer;
    float* partials = scratch(partials_buffer, (size_t)3 * C * hw);  // planes [which][channel]: dL/d blurred x, x², xy
    float* rows = scratch(rows_buffer, (size_t)3 * C * hw);
    float* blurred = scratch(blurred_buffer, (size_t)3 * C * hw);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t p = 0; p < hw; ++p) {
        const float g = v_map[p] / (float)C;
        for (int c = 0; c < C; ++c) {
            const float* st = stats + (int64_t)c * hw + p;
            const int64_t step = (int64_t)C * hw;
            float d[3];
            ssim_at(st[0], st[step], st[2 * step], st[3 * step], st[4 * step], d);
            for (int i = 0; i < 3; ++i) partials[(i * C + c) * hw + p] = g * d[i];
        }
    }
    // The blur's adjoint is the same blur: the window is symmetric and zero padding drops the same terms.
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t row = 0; row < (int64_t)3 * C * H; ++row) blur_row(partials + row * W, rows + row * W, W, w);
    blur_cols(rows, blurred, 3 * C, H, W, w, num_threads);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t p = 0; p < hw; ++p) {
        for (int c = 0; c < C; ++c) {
            const float bm = blurred[(0 * C + c) * hw + p], bxx = blurred[(1 * C + c) * hw + p],
                        bxy = blurred[(2 * C + c) * hw + p];
            v_x[p * C + c] = bm + 2.f * x[p * C + c] * bxx + y[p * C + c] * bxy;
        }
    }
}

}  // namespace a3d
