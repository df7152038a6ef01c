// Python bindings of the CUDA topk kernels. Placeholder until implemented.
#include "common.h"

void bind_cuda_topk(pybind11::module_& m) { (void)m; }
