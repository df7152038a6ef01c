// Shared by the CUDA kernels: error checking, stream handles, device guards.
//
// Conventions (cpp/cuda/*.h): launchers take raw device pointers that the
// Python layer got from torch tensors (no libtorch linked), run on the caller's
// stream and never synchronise unless they must read a result on the host.
// Scratch memory is stream-ordered (cudaMallocAsync/cudaFreeAsync). Errors are
// C++ exceptions, translated by pybind11 like the CPU kernels':
// std::invalid_argument -> ValueError, std::out_of_range -> IndexError,
// std::runtime_error (a CUDA API error, with its name) -> RuntimeError.
#pragma once

#include <cuda_runtime.h>

// Every kernel launch goes through this macro (a parenthesised kernel name
// when it has template arguments), so that tests/cuda_emu/cuda_runtime.h can
// define it to run the kernels on the host and check their logic.
#ifndef METAREC_CUDA_LAUNCH
#define METAREC_CUDA_LAUNCH(kernel, grid, block, stream, ...) \
    kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace metarec {
namespace cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(err) +
                             " (" + cudaGetErrorString(err) + ")");
}

inline void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw_cuda_error(err, what);
}

// After a kernel launch: reports a bad launch configuration at once (errors
// inside the kernel surface at the caller's next synchronisation).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// Makes `device` current for the scope and restores the previous device.
class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        check(cudaGetDevice(&previous_), "cudaGetDevice");
        if (device != previous_) check(cudaSetDevice(device), "cudaSetDevice");
    }
    ~DeviceGuard() { cudaSetDevice(previous_); }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int previous_ = 0;
};

// Stream-ordered scratch memory, freed on the same stream.
class DeviceBuffer {
public:
    DeviceBuffer(std::size_t bytes, cudaStream_t stream) : stream_(stream), bytes_(bytes) {
        if (bytes_ > 0) check(cudaMallocAsync(&ptr_, bytes_, stream_), "cudaMallocAsync");
    }
    ~DeviceBuffer() {
        if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    template <class T>
    T* as() const {
        return static_cast<T*>(ptr_);
    }
    std::size_t bytes() const { return bytes_; }

private:
    void* ptr_ = nullptr;
    cudaStream_t stream_ = nullptr;
    std::size_t bytes_ = 0;
};

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace cuda
}  // namespace metarec
