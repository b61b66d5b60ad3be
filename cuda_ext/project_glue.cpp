// Torch glue of the projection op: checks, allocation, dispatch to the CPU core or the CUDA launcher.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "a3d/cores.h"
#include "glue.h"
#include "stage_times.h"

#include "glue_cuda.h"

namespace a3d {
namespace {

void check_f32(const at::Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
    TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32, got ", t.scalar_type());
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(t.dim() == (int64_t)shape.size(), name, " must have ", shape.size(), " dims, got ", t.sizes());
    int i = 0;
    for (int64_t s : shape) {
        TORCH_CHECK(s < 0 || t.size(i) == s, name, " has shape ", t.sizes(), ", dim ", i, " must be ", s);
        ++i;
    }
}

ProjectArgs make_args(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                      const at::Tensor& opacities, const at::Tensor& viewmat_cpu, const at::Tensor& K_cpu,
                      int64_t width, int64_t height, double near_plane, double far_plane, bool antialiased) {
    const int64_t n = means.size(0);
    check_f32(means, "means", {n, 3});
    check_f32(quats, "quats", {n, 4});
    check_f32(scales, "scales", {n, 3});
    check_f32(opacities, "opacities", {n});
    check_f32(viewmat_cpu, "viewmat", {4, 4});
    check_f32(K_cpu, "K", {3, 3});
    TORCH_CHECK(width > 0 && height > 0, "width and height must be positive");
    for (const at::Tensor* t : {&quats, &scales, &opacities})
        TORCH_CHECK(t->device() == means.device(), "all Gaussian tensors must be on the same device");
    ProjectArgs a;
    a.n = n;
    a.means = means.data_ptr<float>();
    a.quats = quats.data_ptr<float>();
    a.scales = scales.data_ptr<float>();
    a.opacities = opacities.data_ptr<float>();
    a.viewmat = viewmat_cpu.data_ptr<float>();  // host pointers on every backend (camera is set up on the host)
    a.K = K_cpu.data_ptr<float>();
    a.width = (int)width;
    a.height = (int)height;
    a.near_plane = (float)near_plane;
    a.far_plane = (float)far_plane;
    a.antialiased = antialiased;
    return a;
}

}  // namespace

std::vector<at::Tensor> project_forward(const at::Tensor& means_in, const at::Tensor& quats_in,
                                        const at::Tensor& scales_in, const at::Tensor& opacities_in,
                                        const at::Tensor& viewmat, const at::Tensor& K, int64_t width,
                                        int64_t height, double near_plane, double far_plane, bool antialiased) {
    const at::Tensor means = means_in.contiguous(), quats = quats_in.contiguous(), scales = scales_in.contiguous(),
                     opacities = opacities_in.contiguous();
    const at::Tensor vm = viewmat.to(at::kCPU).contiguous(), kk = K.to(at::kCPU).contiguous();
    const ProjectArgs a = make_args(means, quats, scales, opacities, vm, kk, width, height, near_plane, far_plane,
                                    antialiased);
    const int64_t n = a.n;
    const auto fopt = means.options();
    at::Tensor means2d = at::empty({n, 2}, fopt), conics = at::empty({n, 3}, fopt), depths = at::empty({n}, fopt);
    at::Tensor radii = at::empty({n}, fopt.dtype(at::kInt)), opac_eff = at::empty({n}, fopt);
    if (means.is_cuda()) {
#ifdef A3D_WITH_CUDA
        const c10::cuda::CUDAGuard guard(means.device());
        project_forward_cuda(a, means2d.data_ptr<float>(), conics.data_ptr<float>(), depths.data_ptr<float>(),
                             radii.data_ptr<int32_t>(), opac_eff.data_ptr<float>(), current_stream());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
#else
        TORCH_CHECK(false, "avatar3d._C was built without CUDA; rebuild with AVATAR3D_CUDA=1");
#endif
    } else {
        StageTimer timer(stage_times().project);
        project_forward_cpu(a, means2d.data_ptr<float>(), conics.data_ptr<float>(), depths.data_ptr<float>(),
                            radii.data_ptr<int32_t>(), opac_eff.data_ptr<float>(), at::get_num_threads());
    }
    return {means2d, conics, depths, radii, opac_eff};
}

std::vector<at::Tensor> project_backward(const at::Tensor& means_in, const at::Tensor& quats_in,
                                         const at::Tensor& scales_in, const at::Tensor& opacities_in,
                                         const at::Tensor& viewmat, const at::Tensor& K, int64_t width,
                                         int64_t height, double near_plane, double far_plane, bool antialiased,
                                         const at::Tensor& radii_in, const at::Tensor& v_means2d_in,
                                         const at::Tensor& v_conics_in, const at::Tensor& v_depths_in,
                                         const at::Tensor& v_opac_in) {
    const at::Tensor means = means_in.contiguous(), quats = quats_in.contiguous(), scales = scales_in.contiguous(),
                     opacities = opacities_in.contiguous();
    const at::Tensor vm = viewmat.to(at::kCPU).contiguous(), kk = K.to(at::kCPU).contiguous();
    const ProjectArgs a = make_args(means, quats, scales, opacities, vm, kk, width, height, near_plane, far_plane,
                                    antialiased);
    const int64_t n = a.n;
    const at::Tensor radii = radii_in.contiguous(), v_means2d = v_means2d_in.contiguous(),
                     v_conics = v_conics_in.contiguous(), v_depths = v_depths_in.contiguous(),
                     v_opac = v_opac_in.contiguous();
    TORCH_CHECK(radii.scalar_type() == at::kInt && radii.numel() == n, "radii must be int32 [N]");
    check_f32(v_means2d, "v_means2d", {n, 2});
    check_f32(v_conics, "v_conics", {n, 3});
    check_f32(v_depths, "v_depths", {n});
    check_f32(v_opac, "v_opacities_eff", {n});
    // The kernels dereference these on the Gaussians' device (a CPU tensor there is an illegal address on CUDA).
    for (const at::Tensor* t : {&radii, &v_means2d, &v_conics, &v_depths, &v_opac})
        TORCH_CHECK(t->device() == means.device(), "radii and the upstream gradients must be on ", means.device(),
                    ", got ", t->device());
    const auto fopt = means.options();
    at::Tensor v_means = at::empty({n, 3}, fopt), v_quats = at::empty({n, 4}, fopt),
               v_scales = at::empty({n, 3}, fopt), v_opacities = at::empty({n}, fopt);
    if (means.is_cuda()) {
#ifdef A3D_WITH_CUDA
        const c10::cuda::CUDAGuard guard(means.device());
        project_backward_cuda(a, radii.data_ptr<int32_t>(), v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                              v_depths.data_ptr<float>(), v_opac.data_ptr<float>(), v_means.data_ptr<float>(),
                              v_quats.data_ptr<float>(), v_scales.data_ptr<float>(), v_opacities.data_ptr<float>(),
                              current_stream());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
#else
        TORCH_CHECK(false, "avatar3d._C was built without CUDA; rebuild with AVATAR3D_CUDA=1");
#endif
    } else {
        StageTimer timer(stage_times().project_backward);
        project_backward_cpu(a, radii.data_ptr<int32_t>(), v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                             v_depths.data_ptr<float>(), v_opac.data_ptr<float>(), v_means.data_ptr<float>(),
                             v_quats.data_ptr<float>(), v_scales.data_ptr<float>(), v_opacities.data_ptr<float>(),
                             at::get_num_threads());
    }
    return {v_means, v_quats, v_scales, v_opacities};
}

bool has_cuda() {
#ifdef A3D_WITH_CUDA
    return true;
#else
    return false;
#endif
}

}  // namespace a3d
