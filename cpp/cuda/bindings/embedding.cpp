// Python bindings of the CUDA embedding kernels. Placeholder until implemented.
#include "common.h"

void bind_cuda_embedding(pybind11::module_& m) { (void)m; }
