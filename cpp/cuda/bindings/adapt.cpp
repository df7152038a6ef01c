// Python bindings of the CUDA adapt kernels. Placeholder until implemented.
#include "common.h"

void bind_cuda_adapt(pybind11::module_& m) { (void)m; }
