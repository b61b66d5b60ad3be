// pybind11 bindings of avatar3d._C (the only bindings file). The Python side is avatar3d/render/native.py.
#include <torch/extension.h>

#include "glue.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "avatar3d native rasterizer kernels (C++/OpenMP, optional CUDA)";
    m.def("project_forward", &a3d::project_forward, "Project 3D Gaussians to 2D (forward)");
    m.def("project_backward", &a3d::project_backward, "Projection vector-Jacobian product");
    m.def("composite_forward", &a3d::composite_forward, "Tile-based front-to-back compositing (forward)");
    m.def("composite_backward", &a3d::composite_backward, "Compositing backward by reverse traversal");
    m.def("has_cuda", &a3d::has_cuda, "Whether the extension was built with CUDA kernels");
}
