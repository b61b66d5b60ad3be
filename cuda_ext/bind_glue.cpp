// Torch glue of posing rig-bound Gaussians (CPU, no gradient): checks, allocation, dispatch to the core.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "a3d/cores.h"
#include "glue.h"

namespace a3d {
namespace {

void check_rows(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t rows, int64_t cols) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor (on a GPU the PyTorch binding runs)");
    TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(cols == 0 ? t.dim() == 1 : (t.dim() == 2 && t.size(1) == cols), name, " must be [",
                rows < 0 ? "any" : std::to_string(rows), cols ? "," + std::to_string(cols) : "", "], got ", t.sizes());
    TORCH_CHECK(rows < 0 || t.size(0) == rows, name, " has ", t.size(0), " rows, expected ", rows);
}

}  // namespace

std::vector<at::Tensor> bind_world(const at::Tensor& vertices_in, const at::Tensor& faces_in,
                                   const at::Tensor& parent_in, const at::Tensor& local_means_in,
                                   const at::Tensor& local_quats_in, const at::Tensor& log_scales_in) {
    const at::Tensor vertices = vertices_in.contiguous(), faces = faces_in.contiguous(),
                     parent = parent_in.contiguous(), local_means = local_means_in.contiguous(),
                     local_quats = local_quats_in.contiguous(), log_scales = log_scales_in.contiguous();
    const int64_t n = parent.size(0);
    check_rows(vertices, "vertices", at::kFloat, -1, 3);
    check_rows(faces, "faces", at::kLong, -1, 3);
    check_rows(parent, "parent", at::kLong, -1, 0);
    check_rows(local_means, "local_means", at::kFloat, n, 3);
    check_rows(local_quats, "local_quats", at::kFloat, n, 4);
    check_rows(log_scales, "log_scales", at::kFloat, n, 3);
    at::Tensor means = at::empty({n, 3}, local_means.options());
    at::Tensor quats = at::empty({n, 4}, local_means.options());
    at::Tensor scales = at::empty({n, 3}, local_means.options());
    const BindArgs a{n,
                     vertices.data_ptr<float>(),
                     vertices.size(0),
                     faces.data_ptr<int64_t>(),
                     faces.size(0),
                     parent.data_ptr<int64_t>(),
                     local_means.data_ptr<float>(),
                     local_quats.data_ptr<float>(),
                     log_scales.data_ptr<float>()};
    const int64_t bad = bind_world_cpu(a, means.data_ptr<float>(), quats.data_ptr<float>(),
                                       scales.data_ptr<float>(), at::get_num_threads());
    TORCH_CHECK(bad == 0, bad, " parent or triangle indices are out of range (", faces.size(0), " triangles, ",
                vertices.size(0), " vertices): the Gaussians do not belong to this rig");
    return {means, quats, scales};
}

}  // namespace a3d
