// A host emulation of the CUDA runtime and device intrinsics that
// cpp/cuda/topk.cu uses, so its kernels can run (slowly) on a machine without
// a GPU: every CUDA thread of a block is a fiber, blocks run one after the
// other, __syncthreads / warp shuffles / ballots are barriers between fibers,
// __shared__ variables are function statics (shared by the block's threads),
// device memory is poisoned host memory. Used only by tests/test_cuda_emulated.py to
// check the kernels' logic (indexing, synchronisation, selection, merges)
// against a brute-force reference. Not a CUDA implementation.
#pragma once

#include <ucontext.h>

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3() = default;
    dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The running fiber's indices (one OS thread runs every fiber).
inline dim3 threadIdx;
inline dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorMemoryAllocation = 2;
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };

#ifndef EMU_SM_COUNT
#define EMU_SM_COUNT 2
#endif

inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline cudaError_t cudaGetDevice(int* d) {
    *d = 0;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
    *v = EMU_SM_COUNT;
    return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, std::size_t n, cudaStream_t) {
    *p = std::malloc(n == 0 ? 1 : n);
    if (*p == nullptr) return cudaErrorMemoryAllocation;
    std::memset(*p, 0xA5, n);  // poison: reading before writing shows up
    return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
    std::free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t n, cudaStream_t) {
    std::memset(p, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind,
                                   cudaStream_t) {
    std::memcpy(dst, src, n);
    return cudaSuccess;
}

struct float4 {
    float x, y, z, w;
};
struct double2 {
    double x, y;
};

#define __align__(n) __attribute__((aligned(n)))
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

namespace emu {

// Every CUDA thread of a block is a fiber (ucontext) on the calling OS
// thread; a fiber runs until it reaches a barrier, then the scheduler resumes
// another runnable fiber, in a shuffled order so that missing barriers show
// up as wrong results. All fibers blocked = a deadlock (e.g. a barrier that
// only some threads reach): reported, and the process aborts.
constexpr std::size_t kStack = 256 * 1024;

struct Fiber {
    ucontext_t ctx{};
    std::unique_ptr<char[]> stack;
    bool done = false;
    int waiting = 0;  // 0 runnable, 1 block barrier, 2 warp barrier
    dim3 tid;
};

struct Scheduler {
    ucontext_t main{};
    std::vector<Fiber> fibers;
    int cur = -1;
    int block_arrived = 0;
    int or_acc = 0;
    int or_result = 0;
    std::vector<int> warp_arrived;
    std::vector<std::uint64_t> warp_slot;  // 32 per warp
    std::function<void()> body;
    std::uint64_t rng = 0x9E3779B97F4A7C15ull;
};

inline Scheduler* S = nullptr;

inline void yield_to_scheduler() {
    Fiber& me = S->fibers[S->cur];
    swapcontext(&me.ctx, &S->main);
}

inline void block_barrier() {
    if (++S->block_arrived == static_cast<int>(S->fibers.size())) {
        S->block_arrived = 0;
        S->or_result = S->or_acc;
        S->or_acc = 0;
        for (auto& f : S->fibers) {
            if (f.waiting == 1) f.waiting = 0;
        }
        return;
    }
    S->fibers[S->cur].waiting = 1;
    yield_to_scheduler();
}

inline void warp_barrier() {
    const int w = static_cast<int>(threadIdx.x / 32);
    if (++S->warp_arrived[w] == 32) {
        S->warp_arrived[w] = 0;
        for (int l = 0; l < 32; ++l) {
            Fiber& f = S->fibers[w * 32 + l];
            if (f.waiting == 2) f.waiting = 0;
        }
        return;
    }
    S->fibers[S->cur].waiting = 2;
    yield_to_scheduler();
}

inline void fiber_entry() {
    S->body();
    S->fibers[S->cur].done = true;
    // returning resumes uc_link (the scheduler)
}

inline void run_block(int n_threads, dim3 block_idx, dim3 block_dim, dim3 grid_dim,
                      std::function<void()> body) {
    if (n_threads % 32 != 0) {
        std::fprintf(stderr, "emu: block size must be a multiple of 32\n");
        std::abort();
    }
    Scheduler sched;
    sched.fibers.resize(static_cast<std::size_t>(n_threads));
    sched.warp_arrived.assign(static_cast<std::size_t>(n_threads / 32), 0);
    sched.warp_slot.assign(static_cast<std::size_t>(n_threads), 0);
    sched.body = std::move(body);
    S = &sched;
    for (int t = 0; t < n_threads; ++t) {
        Fiber& f = sched.fibers[t];
        f.tid = dim3(static_cast<unsigned>(t));
        f.stack.reset(new char[kStack]);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.get();
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = &sched.main;
        makecontext(&f.ctx, fiber_entry, 0);
    }
    blockIdx = block_idx;
    blockDim = block_dim;
    gridDim = grid_dim;
    std::vector<int> order(static_cast<std::size_t>(n_threads));
    for (int t = 0; t < n_threads; ++t) order[t] = t;
    int live = n_threads;
    while (live > 0) {
        for (int i = n_threads - 1; i > 0; --i) {  // shuffle the resume order
            sched.rng ^= sched.rng << 13;
            sched.rng ^= sched.rng >> 7;
            sched.rng ^= sched.rng << 17;
            std::swap(order[i], order[sched.rng % static_cast<std::uint64_t>(i + 1)]);
        }
        bool progress = false;
        for (int t : order) {
            Fiber& f = sched.fibers[t];
            if (f.done || f.waiting != 0) continue;
            sched.cur = t;
            threadIdx = f.tid;
            swapcontext(&sched.main, &f.ctx);
            progress = true;
            if (f.done) --live;
        }
        if (!progress) {
            std::fprintf(stderr, "emu: deadlock in block (%u, %u): %d threads never finished\n",
                         block_idx.x, block_idx.y, live);
            std::abort();
        }
    }
    S = nullptr;
}

template <class T>
std::uint64_t bits(T v) {
    std::uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}

template <class T>
T from_bits(std::uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

template <class T>
T exchange(T v, int src) {
    const int w = static_cast<int>(threadIdx.x / 32);
    S->warp_slot[threadIdx.x] = bits(v);
    warp_barrier();
    const std::uint64_t got = S->warp_slot[w * 32 + (src & 31)];
    warp_barrier();
    return from_bits<T>(got);
}

}  // namespace emu

inline void __syncthreads() { emu::block_barrier(); }

inline int __syncthreads_or(int pred) {
    if (pred) emu::S->or_acc = 1;
    emu::block_barrier();
    return emu::S->or_result;
}

inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(); }

template <class T>
T __shfl_sync(unsigned, T v, int src) {
    return emu::exchange(v, src);
}

template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
    return emu::exchange(v, static_cast<int>(threadIdx.x % 32) ^ mask);
}

inline unsigned __ballot_sync(unsigned, int pred) {
    const int w = static_cast<int>(threadIdx.x / 32);
    emu::S->warp_slot[threadIdx.x] = pred ? 1u : 0u;
    emu::warp_barrier();
    unsigned m = 0;
    for (int l = 0; l < 32; ++l) m |= (emu::S->warp_slot[w * 32 + l] ? 1u : 0u) << l;
    emu::warp_barrier();
    return m;
}

inline int atomicAdd(int* p, int v) {
    const int old = *p;
    *p = old + v;
    return old;
}

inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}

inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }

inline int min(int a, int b) { return a < b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

// kernel<<<grid, block, 0, stream>>>(args...): every block in turn.
template <class... P, class... A>
void emu_launch(void (*kernel)(P...), dim3 grid, dim3 block, A... args) {
    for (unsigned by = 0; by < grid.y; ++by) {
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            emu::run_block(static_cast<int>(block.x), dim3(bx, by), block, grid,
                           [=] { kernel(static_cast<P>(args)...); });
        }
    }
}

#define METAREC_CUDA_LAUNCH(kernel, grid, block, stream, ...) \
    emu_launch(kernel, dim3(grid), dim3(block), __VA_ARGS__)
