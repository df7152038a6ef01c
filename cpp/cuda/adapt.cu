// CUDA adapt kernels (see adapt.h). Placeholder until implemented.
#include "adapt.h"
