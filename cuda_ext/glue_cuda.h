// CUDA helpers of the torch glue (only with A3D_WITH_CUDA): the current stream, torch's caching allocator as
// the cores' scratch memory, and the launch check. c10 headers only (no cuBLAS/cuSPARSE via ATen/cuda).
#pragma once

#ifdef A3D_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "a3d/cores.h"

namespace a3d {

// The stream torch queues this device's work on (call under a CUDAGuard for the inputs' device).
inline void* current_stream() { return (void*)c10::cuda::getCurrentCUDAStream().stream(); }

// Stream-ordered scratch from torch's caching allocator: no cudaMalloc per frame, and memory torch can reuse.
inline CudaScratch torch_scratch() {
    CudaScratch s;
    s.alloc = [](size_t bytes, void* stream) -> void* {
        return c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(bytes, (cudaStream_t)stream);
    };
    s.release = [](void* p) { c10::cuda::CUDACachingAllocator::raw_delete(p); };
    return s;
}

}  // namespace a3d
#endif
