// Torch glue of the SSIM loss op (CPU): checks, allocation, dispatch to the core.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "a3d/cores.h"
#include "glue.h"

namespace a3d {
namespace {

void check_image(const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor (the SSIM op has no CUDA kernel)");
    TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32, got ", t.scalar_type());
    TORCH_CHECK(t.dim() == 3 && t.size(0) > 0 && t.size(1) > 0 && t.size(2) > 0, name,
                " must be a non-empty [H,W,C] image, got ", t.sizes());
}

}  // namespace

std::vector<at::Tensor> ssim_forward(const at::Tensor& x_in, const at::Tensor& y_in) {
    const at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
    check_image(x, "x");
    check_image(y, "y");
    TORCH_CHECK(x.sizes() == y.sizes(), "x and y must have the same shape, got ", x.sizes(), " and ", y.sizes());
    const int64_t H = x.size(0), W = x.size(1), C = x.size(2);
    at::Tensor map = at::empty({H, W}, x.options()), stats = at::empty({5, C, H, W}, x.options());
    ssim_forward_cpu(x.data_ptr<float>(), y.data_ptr<float>(), (int)H, (int)W, (int)C, map.data_ptr<float>(),
                     stats.data_ptr<float>(), at::get_num_threads());
    return {map, stats};
}

at::Tensor ssim_backward(const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& stats_in,
                         const at::Tensor& v_map_in) {
    const at::Tensor x = x_in.contiguous(), y = y_in.contiguous(), stats = stats_in.contiguous(),
                     v_map = v_map_in.contiguous();
    check_image(x, "x");
    const int64_t H = x.size(0), W = x.size(1), C = x.size(2);
    TORCH_CHECK(y.sizes() == x.sizes() && y.scalar_type() == at::kFloat, "y must match x");
    TORCH_CHECK(stats.sizes() == at::IntArrayRef({5, C, H, W}) && stats.scalar_type() == at::kFloat,
                "stats must be float32 [5,C,H,W] from ssim_forward");
    TORCH_CHECK(v_map.sizes() == at::IntArrayRef({H, W}) && v_map.scalar_type() == at::kFloat,
                "v_map must be float32 [H,W]");
    at::Tensor v_x = at::empty_like(x);
    ssim_backward_cpu(x.data_ptr<float>(), y.data_ptr<float>(), stats.data_ptr<float>(), v_map.data_ptr<float>(),
                      (int)H, (int)W, (int)C, v_x.data_ptr<float>(), at::get_num_threads());
    return v_x;
}

}  // namespace a3d
