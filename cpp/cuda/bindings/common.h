// Shared by the CUDA binding files. Tensors arrive as raw device pointers
// (integers from torch's data_ptr()) with the caller's stream handle; the
// Python wrappers (python/metarec_fast/_gpu.py and ops/) have already
// validated shapes, dtypes, devices and ids.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <utility>

#include <cuda_runtime.h>

namespace metarec_cuda_py {

namespace py = pybind11;

template <class T>
T* device_ptr(std::uintptr_t p) {
    return reinterpret_cast<T*>(p);
}

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Launches are asynchronous, but argument checks and stream-ordered
// allocations can block briefly: release the GIL like the CPU bindings.
template <class Fn>
decltype(auto) without_gil(Fn&& fn) {
    py::gil_scoped_release release;
    return std::forward<Fn>(fn)();
}

}  // namespace metarec_cuda_py

void bind_cuda_topk(pybind11::module_& m);
void bind_cuda_embedding(pybind11::module_& m);
void bind_cuda_adapt(pybind11::module_& m);
