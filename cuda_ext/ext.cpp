// pybind11 bindings of avatar3d._C (the only bindings file). The Python side is avatar3d/render/native.py.
#include <torch/extension.h>

#include "glue.h"
#include "stage_times.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    using namespace pybind11::literals;
    m.doc() = "avatar3d native rasterizer kernels (C++/OpenMP, optional CUDA)";
    m.def("project_forward", &a3d::project_forward, "Project 3D Gaussians to 2D (forward)");
    m.def("project_backward", &a3d::project_backward, "Projection vector-Jacobian product");
    m.def("composite_forward", &a3d::composite_forward, "Tile-based front-to-back compositing (forward)");
    m.def("composite_backward", &a3d::composite_backward, "Compositing backward by reverse traversal");
    m.def("ssim_forward", &a3d::ssim_forward, "The training loss's SSIM map and its statistics (CPU)");
    m.def("ssim_backward", &a3d::ssim_backward, "The SSIM map's gradient by the first image (CPU)");
    m.def("sh_colours", &a3d::sh_colours, "View-dependent colour of SH coefficients (CPU, no gradient)");
    m.def("bind_world", &a3d::bind_world, "Rig-bound Gaussians posed in world space for a frame (CPU, no gradient)");
    m.def("finish_frame", &a3d::finish_frame, "A rendered frame to uint8 over its background plate (CPU)");
    m.def("stage_times", [] {
        const a3d::StageTimes& t = a3d::stage_times();
        return pybind11::dict("project"_a = t.project, "intersect"_a = t.intersect, "sort"_a = t.sort,
                              "blend"_a = t.blend, "blend_backward"_a = t.blend_backward,
                              "project_backward"_a = t.project_backward);
    }, "Milliseconds of each stage of the last CPU rasterization on this thread (CUDA stages are not timed)");
    m.def("has_cuda", &a3d::has_cuda, "Whether the extension was built with CUDA kernels");
}
