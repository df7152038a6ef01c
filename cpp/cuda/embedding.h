// CUDA embedding kernels: declarations. Placeholder until implemented.
#pragma once

#include "common.cuh"
