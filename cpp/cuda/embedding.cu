// CUDA embedding kernels (see embedding.h). Placeholder until implemented.
#include "embedding.h"
