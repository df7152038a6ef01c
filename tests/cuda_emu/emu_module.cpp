// metarec_fast._cuda for the host emulation (tests/cuda_emu/cuda_runtime.h):
// the real bindings (cpp/cuda/bindings) and launchers/kernels (cpp/cuda/*.cu),
// compiled with g++ so that the Python wrappers' CUDA paths run end to end on
// the CPU, "device" pointers being host memory (CPU torch tensors). Built by
// tests/cuda_backends.py; only the device queries are stand-ins (one device).
#include <pybind11/pybind11.h>

#include <cuda_runtime.h>

#include "bindings/common.h"
#include "topk.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda_emu, m) {
    m.doc() = "metarec-fast CUDA kernels under the host emulation (tests only).";
    m.attr("__version__") = "emulated";
    m.attr("cuda_architectures") = "emulated";
    m.def("device_count", [] { return 1; });
    m.def("device_name", [](int) { return std::string("host emulation"); }, py::arg("device"));
    m.def("runtime_version", [] { return 0; });
    m.def("driver_version", [] { return 0; });
    bind_cuda_topk(m);
    bind_cuda_embedding(m);
    bind_cuda_adapt(m);
}
