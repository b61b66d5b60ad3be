// Torch glue of the compositing op: checks, allocation (including the sorted intersection list kept for the
// backward pass), dispatch to the CPU core or the CUDA launchers.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "a3d/cores.h"
#include "glue.h"
#include "stage_times.h"

#include "glue_cuda.h"

namespace a3d {
namespace {

void check(const at::Tensor& t, const char* name, at::ScalarType dtype, std::initializer_list<int64_t> shape,
           const at::Device& device) {
    TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(t.device() == device, name, " is on ", t.device(), ", expected ", device);
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(t.dim() == (int64_t)shape.size(), name, " must have ", shape.size(), " dims, got ", t.sizes());
    int i = 0;
    for (int64_t s : shape) {
        TORCH_CHECK(s < 0 || t.size(i) == s, name, " has shape ", t.sizes(), ", dim ", i, " must be ", s);
        ++i;
    }
}

CompositeArgs make_args(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                        const at::Tensor& colors, const at::Tensor& background, const at::Tensor& radii,
                        const at::Tensor& depths, int64_t width, int64_t height) {
    const int64_t n = means2d.size(0);
    const at::Device dev = means2d.device();
    check(means2d, "means2d", at::kFloat, {n, 2}, dev);
    check(conics, "conics", at::kFloat, {n, 3}, dev);
    check(opacities, "opacities_eff", at::kFloat, {n}, dev);
    check(colors, "colors", at::kFloat, {n, -1}, dev);
    const int64_t c = colors.size(1);
    TORCH_CHECK(c >= 1, "colors must have at least one channel");
    check(background, "background", at::kFloat, {c}, dev);
    if (radii.defined()) check(radii, "radii", at::kInt, {n}, dev);
    if (depths.defined()) check(depths, "depths", at::kFloat, {n}, dev);
    TORCH_CHECK(width > 0 && height > 0, "width and height must be positive");
    CompositeArgs a;
    a.n = n;
    a.channels = (int)c;
    a.means2d = means2d.data_ptr<float>();
    a.conics = conics.data_ptr<float>();
    a.opacities = opacities.data_ptr<float>();
    a.colors = colors.data_ptr<float>();
    a.background = background.data_ptr<float>();
    a.radii = radii.defined() ? radii.data_ptr<int32_t>() : nullptr;
    a.depths = depths.defined() ? depths.data_ptr<float>() : nullptr;
    a.width = (int)width;
    a.height = (int)height;
    return a;
}

}  // namespace

std::vector<at::Tensor> composite_forward(const at::Tensor& means2d_in, const at::Tensor& conics_in,
                                          const at::Tensor& opacities_in, const at::Tensor& colors_in,
                                          const at::Tensor& background_in, const at::Tensor& radii_in,
                                          const at::Tensor& depths_in, int64_t width, int64_t height,
                                          bool for_backward) {
    const at::Tensor means2d = means2d_in.contiguous(), conics = conics_in.contiguous(),
                     opacities = opacities_in.contiguous(), colors = colors_in.contiguous(),
                     background = background_in.contiguous(), radii = radii_in.contiguous(),
                     depths = depths_in.contiguous();
    const CompositeArgs a =
        make_args(means2d, conics, opacities, colors, background, radii, depths, width, height);
    const int64_t n_tiles = (int64_t)tiles_x_of(a.width) * tiles_y_of(a.height);
    const auto fopt = means2d.options();
    const auto iopt = fopt.dtype(at::kInt);
    at::Tensor image = at::empty({height, width, a.channels}, fopt);
    at::Tensor alpha = at::empty({height, width, 1}, fopt);
    at::Tensor last = at::empty({height, width}, iopt);
    at::Tensor final_T = at::empty({height, width}, fopt);
    at::Tensor tile_ranges = at::empty({n_tiles, 2}, iopt);
    at::Tensor gauss_ids;
    at::Tensor spans = at::empty({0}, iopt);  // CPU only: each entry's lane groups, for the backward
    if (means2d.is_cuda()) {
#ifdef A3D_WITH_CUDA
        const c10::cuda::CUDAGuard guard(means2d.device());
        void* stream = current_stream();
        const CudaScratch scratch = torch_scratch();
        // Inclusive prefix sum of tiles per Gaussian, int64 so that an overflow is caught below, not wrapped.
        at::Tensor cum_tiles = at::empty({a.n}, fopt.dtype(at::kLong));
        const int64_t m = bin_count_cuda(a, cum_tiles.data_ptr<int64_t>(), scratch, stream);
        TORCH_CHECK(m < (int64_t)INT32_MAX, "too many tile intersections (", m, ") for int32 indices");
        gauss_ids = at::empty({m}, iopt);
        bin_fill_cuda(a, cum_tiles.data_ptr<int64_t>(), m, gauss_ids.data_ptr<int32_t>(),
                      tile_ranges.data_ptr<int32_t>(), scratch, stream);
        composite_forward_cuda(a, gauss_ids.data_ptr<int32_t>(), tile_ranges.data_ptr<int32_t>(),
                               image.data_ptr<float>(), alpha.data_ptr<float>(), last.data_ptr<int32_t>(),
                               final_T.data_ptr<float>(), stream);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
#else
        TORCH_CHECK(false, "avatar3d._C was built without CUDA; rebuild with AVATAR3D_CUDA=1");
#endif
    } else {
        const int threads = at::get_num_threads();
        StageTimes& times = stage_times();
        at::Tensor per_gauss = at::empty({a.n}, iopt), order = at::empty({a.n}, iopt);
        int64_t m = 0, n_order = 0;
        {
            StageTimer timer(times.intersect);
            m = bin_count_cpu(a, per_gauss.data_ptr<int32_t>(), threads);
        }
        TORCH_CHECK(m < (int64_t)INT32_MAX, "too many tile intersections (", m, ") for int32 indices");
        {
            StageTimer timer(times.sort);
            n_order = depth_order_cpu(a, per_gauss.data_ptr<int32_t>(), order.data_ptr<int32_t>());
        }
        {
            StageTimer timer(times.intersect, /*add=*/true);
            gauss_ids = at::empty({m}, iopt);
            bin_fill_cpu(a, order.data_ptr<int32_t>(), n_order, m, gauss_ids.data_ptr<int32_t>(),
                         tile_ranges.data_ptr<int32_t>(), threads);
        }
        StageTimer timer(times.blend);
        if (!for_backward) {
            last = at::empty({0}, iopt);
            final_T = at::empty({0}, fopt);
        }
        spans = at::empty({for_backward ? m : 0}, iopt);
        composite_forward_cpu(a, gauss_ids.data_ptr<int32_t>(), tile_ranges.data_ptr<int32_t>(),
                              image.data_ptr<float>(), alpha.data_ptr<float>(),
                              for_backward ? last.data_ptr<int32_t>() : nullptr,
                              for_backward ? final_T.data_ptr<float>() : nullptr,
                              for_backward ? reinterpret_cast<uint32_t*>(spans.data_ptr<int32_t>()) : nullptr,
                              threads);
    }
    return {image, alpha, gauss_ids, tile_ranges, last, final_T, spans};
}

std::vector<at::Tensor> composite_backward(const at::Tensor& means2d_in, const at::Tensor& conics_in,
                                           const at::Tensor& opacities_in, const at::Tensor& colors_in,
                                           const at::Tensor& background_in, const at::Tensor& gauss_ids_in,
                                           const at::Tensor& tile_ranges_in, const at::Tensor& spans_in,
                                           const at::Tensor& last_in,
                                           const at::Tensor& final_T_in, const at::Tensor& v_image_in,
                                           const at::Tensor& v_alpha_in, int64_t width, int64_t height) {
    const at::Tensor means2d = means2d_in.contiguous(), conics = conics_in.contiguous(),
                     opacities = opacities_in.contiguous(), colors = colors_in.contiguous(),
                     background = background_in.contiguous(), gauss_ids = gauss_ids_in.contiguous(),
                     tile_ranges = tile_ranges_in.contiguous(), spans = spans_in.contiguous(),
                     last = last_in.contiguous(),
                     final_T = final_T_in.contiguous(), v_image = v_image_in.contiguous(),
                     v_alpha = v_alpha_in.contiguous();
    const CompositeArgs a = make_args(means2d, conics, opacities, colors, background, at::Tensor(), at::Tensor(),
                                      width, height);
    const at::Device dev = means2d.device();
    const int64_t n_tiles = (int64_t)tiles_x_of(a.width) * tiles_y_of(a.height);
    check(gauss_ids, "gauss_ids", at::kInt, {-1}, dev);
    check(tile_ranges, "tile_ranges", at::kInt, {n_tiles, 2}, dev);
    check(last, "last", at::kInt, {height, width}, dev);
    check(final_T, "final_T", at::kFloat, {height, width}, dev);
    check(v_image, "v_image", at::kFloat, {height, width, a.channels}, dev);
    TORCH_CHECK(v_alpha.numel() == height * width && v_alpha.scalar_type() == at::kFloat,
                "v_alpha must be float32 [H,W,1]");
    TORCH_CHECK(v_alpha.device() == dev, "v_alpha is on ", v_alpha.device(), ", expected ", dev);
    const auto fopt = means2d.options();
    at::Tensor v_means2d = at::zeros({a.n, 2}, fopt), v_conics = at::zeros({a.n, 3}, fopt),
               v_opac = at::zeros({a.n}, fopt), v_colors = at::zeros({a.n, a.channels}, fopt),
               v_bg = at::zeros({a.channels}, fopt);
    if (means2d.is_cuda()) {
#ifdef A3D_WITH_CUDA
        const c10::cuda::CUDAGuard guard(means2d.device());
        composite_backward_cuda(a, gauss_ids.data_ptr<int32_t>(), tile_ranges.data_ptr<int32_t>(),
                                last.data_ptr<int32_t>(), final_T.data_ptr<float>(), v_image.data_ptr<float>(),
                                v_alpha.data_ptr<float>(), v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                                v_opac.data_ptr<float>(), v_colors.data_ptr<float>(), v_bg.data_ptr<float>(),
                                current_stream());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
#else
        TORCH_CHECK(false, "avatar3d._C was built without CUDA; rebuild with AVATAR3D_CUDA=1");
#endif
    } else {
        check(spans, "spans", at::kInt, {gauss_ids.size(0)}, dev);
        StageTimer timer(stage_times().blend_backward);
        composite_backward_cpu(a, gauss_ids.data_ptr<int32_t>(), tile_ranges.data_ptr<int32_t>(),
                               reinterpret_cast<const uint32_t*>(spans.data_ptr<int32_t>()), last.data_ptr<int32_t>(), final_T.data_ptr<float>(), v_image.data_ptr<float>(),
                               v_alpha.data_ptr<float>(), v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                               v_opac.data_ptr<float>(), v_colors.data_ptr<float>(), v_bg.data_ptr<float>(),
                               at::get_num_threads());
    }
    return {v_means2d, v_conics, v_opac, v_colors, v_bg};
}

}  // namespace a3d
