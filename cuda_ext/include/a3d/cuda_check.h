// Error checking for the torch-free CUDA cores: a failed CUDA call or launch throws std::runtime_error (pybind11
// turns it into a Python RuntimeError) instead of letting later steps run on garbage. CUDA sources only.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace a3d {

inline void cuda_check(cudaError_t err, const char* what, const char* file, int line) {
    if (err != cudaSuccess)
        throw std::runtime_error(std::string("avatar3d CUDA error in ") + what + " (" + file + ":" +
                                 std::to_string(line) + "): " + cudaGetErrorString(err));
}

}  // namespace a3d

#define A3D_CUDA_CHECK(expr) ::a3d::cuda_check((expr), #expr, __FILE__, __LINE__)
// After a <<<...>>> launch: configuration errors (too many threads, too much shared memory) surface here.
#define A3D_LAUNCH_CHECK(name) ::a3d::cuda_check(cudaGetLastError(), name, __FILE__, __LINE__)
