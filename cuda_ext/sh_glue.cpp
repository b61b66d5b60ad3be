// Torch glue of the SH colour op (CPU, no gradient): checks, allocation, dispatch to the core.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "a3d/cores.h"
#include "glue.h"

namespace a3d {

at::Tensor sh_colours(const at::Tensor& coeffs_in, const at::Tensor& means_in, const at::Tensor& centre_in,
                      int64_t degree) {
    const at::Tensor coeffs = coeffs_in.contiguous(), means = means_in.contiguous(), centre = centre_in.contiguous();
    TORCH_CHECK(coeffs.device().is_cpu() && means.device().is_cpu() && centre.device().is_cpu(),
                "sh_colours takes CPU tensors (on a GPU the PyTorch evaluation runs)");
    TORCH_CHECK(degree >= 0 && degree <= 3, "SH degree must be 0..3, got ", degree);
    TORCH_CHECK(coeffs.scalar_type() == at::kFloat && coeffs.dim() == 3 && coeffs.size(2) == 3 &&
                    coeffs.size(1) >= (degree + 1) * (degree + 1),
                "coeffs must be float32 [N,K>=", (degree + 1) * (degree + 1), ",3], got ", coeffs.scalar_type(), " ",
                coeffs.sizes());
    TORCH_CHECK(means.scalar_type() == at::kFloat && means.dim() == 2 && means.size(1) == 3 &&
                    means.size(0) == coeffs.size(0),
                "means must be float32 [N,3] with N = ", coeffs.size(0), ", got ", means.sizes());
    TORCH_CHECK(centre.scalar_type() == at::kDouble && centre.numel() == 3, "centre must be float64 [3]");
    at::Tensor rgb = at::empty({coeffs.size(0), 3}, means.options());
    const ShArgs a{coeffs.size(0), (int)degree, (int)coeffs.size(1), coeffs.data_ptr<float>(), means.data_ptr<float>(),
                   centre.data_ptr<double>()};
    sh_colours_cpu(a, rgb.data_ptr<float>(), at::get_num_threads());
    return rgb;
}

}  // namespace a3d
