// Torch glue of the frame-finishing op (CPU): checks, allocation, dispatch to the core.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "a3d/cores.h"
#include "glue.h"

namespace a3d {

std::vector<at::Tensor> finish_frame(const at::Tensor& image_in, const at::Tensor& alpha_in,
                                     const at::Tensor& plate_in, const at::Tensor& pixel_to_plate_in,
                                     bool keep_seen) {
    const at::Tensor image = image_in.contiguous(), alpha = alpha_in.contiguous(), plate = plate_in.contiguous();
    const at::Tensor M = pixel_to_plate_in.contiguous();
    TORCH_CHECK(image.device().is_cpu() && alpha.device().is_cpu() && plate.device().is_cpu(),
                "finish_frame takes CPU tensors (on a GPU use avatar3d.render.reference.finish)");
    TORCH_CHECK(image.scalar_type() == at::kFloat && image.dim() == 3 && image.size(2) == 3,
                "image must be float32 [H,W,3], got ", image.scalar_type(), " ", image.sizes());
    const int64_t H = image.size(0), W = image.size(1);
    TORCH_CHECK(alpha.scalar_type() == at::kFloat && alpha.numel() == H * W,
                "alpha must be float32 with H*W elements ([H,W] or [H,W,1]), got ", alpha.sizes());
    const bool has_plate = plate.numel() > 0;
    if (has_plate) {
        TORCH_CHECK(plate.scalar_type() == at::kByte && plate.dim() == 3 && plate.size(2) == 3 &&
                        plate.size(0) > 0 && plate.size(1) > 0,
                    "plate must be uint8 [h,w,3], got ", plate.scalar_type(), " ", plate.sizes());
        TORCH_CHECK(M.device().is_cpu() && M.scalar_type() == at::kDouble && M.numel() == 9,
                    "pixel_to_plate must be a float64 [3,3] CPU tensor");
    }
    at::Tensor rgb = at::empty({H, W, 3}, image.options().dtype(at::kByte));
    at::Tensor alpha_u8 = at::empty({H, W}, image.options().dtype(at::kByte));
    at::Tensor seen = at::empty({has_plate && keep_seen ? H : 0, W, 3}, image.options().dtype(at::kByte));
    bool identity = false;
    if (has_plate && plate.size(0) == H && plate.size(1) == W) {
        const double* m = M.data_ptr<double>();
        identity = m[0] == 1 && m[1] == 0 && m[2] == 0 && m[3] == 0 && m[4] == 1 && m[5] == 0 && m[6] == 0 &&
                   m[7] == 0 && m[8] == 1;
    }
    FinishArgs a{image.data_ptr<float>(), alpha.data_ptr<float>(), (int)W, (int)H,
                 has_plate ? plate.data_ptr<uint8_t>() : nullptr, has_plate ? (int)plate.size(1) : 0,
                 has_plate ? (int)plate.size(0) : 0, has_plate ? M.data_ptr<double>() : nullptr, identity};
    finish_frame_cpu(a, rgb.data_ptr<uint8_t>(), alpha_u8.data_ptr<uint8_t>(),
                     seen.numel() ? seen.data_ptr<uint8_t>() : nullptr, at::get_num_threads());
    return {rgb, alpha_u8, seen};
}

}  // namespace a3d
