// Host stand-in for cub::DeviceScan::InclusiveSum (tests/cuda_emu): a
// sequential inclusive prefix sum (in == out allowed, like CUB).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace cub {

struct DeviceScan {
    template <class In, class Out, class N>
    static cudaError_t InclusiveSum(void* temp, std::size_t& temp_bytes, In in, Out out, N n,
                                    cudaStream_t = nullptr) {
        if (temp == nullptr) {
            temp_bytes = 64;
            return cudaSuccess;
        }
        if (n <= 0) return cudaSuccess;
        auto acc = in[0];
        out[0] = acc;
        for (N i = 1; i < n; ++i) {
            acc = acc + in[i];
            out[i] = acc;
        }
        return cudaSuccess;
    }
};

}  // namespace cub
