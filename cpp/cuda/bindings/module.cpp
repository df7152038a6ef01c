// metarec_fast._cuda: the optional CUDA kernels, a separate extension module so
// that a CPU-only build and wheel carry no CUDA dependency. The CUDA runtime is
// linked statically; the driver is loaded only when a function is called.
#include <pybind11/stl.h>

#include "common.h"
#include "runtime.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "metarec-fast CUDA kernels. Use the wrappers in metarec_fast.ops (device='cuda').";
    m.attr("__version__") = METAREC_VERSION;
    m.attr("cuda_architectures") = METAREC_CUDA_ARCHITECTURES;
    m.def("device_count", &metarec::cuda::device_count,
          "Usable CUDA devices; 0 without a driver or device (never raises).");
    m.def("device_name", &metarec::cuda::device_name, py::arg("device"));
    m.def("runtime_version", &metarec::cuda::runtime_version,
          "CUDA runtime version the module was built with (e.g. 13000).");
    m.def("driver_version", &metarec::cuda::driver_version,
          "Version of the installed driver's CUDA API; 0 without a driver.");
    bind_cuda_topk(m);
    bind_cuda_embedding(m);
    bind_cuda_adapt(m);
}
