// CUDA topk kernels (see topk.h). Placeholder until implemented.
#include "topk.h"
