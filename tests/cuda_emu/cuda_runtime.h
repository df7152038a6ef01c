// Host emulation of the CUDA runtime and device built-ins used by
// cpp/cuda/{topk,embedding,adapt}.cu, so that their kernels AND their host
// launchers can be compiled with g++ and run on a machine without a GPU.
// It is found as <cuda_runtime.h> through -Itests/cuda_emu (cpp/cuda/common.cuh
// includes it) and defines METAREC_CUDA_LAUNCH, which every launch in
// cpp/cuda goes through. Used only by tests/test_cuda_emulated.py, with one
// driver per kernel family (emu_{topk,embedding,adapt}_main.cpp).
//
// How it runs a launch: blocks run one after the other; every CUDA thread of
// a block is a fiber (ucontext) on the calling OS thread. A fiber runs until
// it reaches __syncthreads* (a block barrier) or a warp intrinsic
// (__shfl_*_sync, __ballot_sync, __syncwarp: a rendezvous of the warp's 32
// lanes, which exchange their values), then another runnable fiber is
// resumed, in a freshly shuffled order each round. If every unfinished fiber
// waits, the launch is a deadlock (a barrier or shuffle that only some
// threads reach): the launch throws std::runtime_error. __shared__ variables
// are function statics (one copy, shared by the threads of the running
// block). Device memory is host memory; cudaMallocAsync fills it with
// emu::poison (0xFF by default: NaN in every float/double, -1 in every
// integer), so reading scratch before writing it shows up in the results.
// Atomics are plain read-modify-writes (fibers never interleave inside one).
// The __*_rn intrinsics are the IEEE host operations (compile with
// -ffp-contract=off so that g++ does not fuse them); expf/exp etc. are the
// host libm's.
//
// What the emulation CAN show: indexing and bounds (with ASan: every
// out-of-range access of a kernel or launcher), launch shapes and grid-stride
// loops (emu::grid_cap shrinks grids of grid-stride kernels, emu::sm_count
// fakes the SM count), missing or divergent barriers and shuffles (wrong
// results under shuffled resume orders, or a reported deadlock), reads of
// uninitialised scratch, the launchers' host logic (validation, scratch
// carving, CUB calls through the stubs in cub/), and the exact arithmetic of
// kernels that use explicit _rn intrinsics.
//
// What it CANNOT show: performance; real-GPU memory behaviour (coalescing,
// bank conflicts, the memory model: threads only switch at barriers, so a
// data race between two barriers is executed sequentially and stays
// invisible unless the shuffled order changes a result); stale __shared__
// values from a previous block (statics are not re-poisoned); nvcc's own
// FMA contraction (the GPU may round differently where a kernel does not use
// _rn intrinsics); libdevice vs libm differences in expf/exp; launch limits
// (registers, shared memory size, gridDim.y/z <= 65535 is only asserted);
// warp-divergent shuffles with partial masks (every shuffle here is a
// full-warp rendezvous); real CUB behaviour (the stubs are std::stable_sort
// and a sequential scan).
#pragma once

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3() = default;
    constexpr dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
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
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};

#define __align__(n) __attribute__((aligned(n)))
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define CUB_RUNTIME_FUNCTION

namespace emu {

// Knobs a driver may set between launches.
inline int sm_count = 2;         // cudaDevAttrMultiProcessorCount
inline unsigned grid_cap = 0;    // > 0: gridDim.x clamped to it (grid-stride kernels only)
inline int poison = 0xFF;        // fill byte of cudaMallocAsync
inline long long launches = 0;   // kernel launches so far
inline long long fibers_run = 0; // CUDA threads run so far

// ---------------------------------------------------------------- fibers

constexpr std::size_t kStack = 256 * 1024;
constexpr int kWarp = 32;

// Context switch. x86-64: a few instructions (callee-saved registers, MXCSR
// and the x87 control word on the old stack, then the stack pointer swaps);
// elsewhere ucontext (a signal-mask system call per switch: slower).
#if defined(__x86_64__) && !defined(EMU_USE_UCONTEXT)
#define EMU_ASM_SWITCH 1
extern "C" void emu_ctx_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .weak emu_ctx_switch
    .hidden emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch
)");
struct Context {
    void* sp = nullptr;
};
#else
struct Context {
    ucontext_t uc{};
};
#endif

struct Fiber {
    Context ctx;
    char* stack = nullptr;
    bool done = false;
    int waiting = 0;  // 0 runnable, 1 block barrier, 2 warp barrier
    dim3 tid;
};

struct Scheduler {
    Context main;
    std::vector<Fiber> fibers;
    int cur = -1;
    int block_arrived = 0;
    int red_or = 0, red_and = 1, red_count = 0;  // __syncthreads_or/_and/_count
    int res_or = 0, res_and = 1, res_count = 0;
    std::vector<int> warp_arrived;
    std::vector<std::uint64_t> warp_slot;  // one per thread
    const std::function<void()>* body = nullptr;
#ifdef EMU_ASAN
    void* fake_main = nullptr;
    const void* main_bottom = nullptr;
    std::size_t main_size = 0;
#endif
};

inline Scheduler* S = nullptr;
inline std::uint64_t rng = 0x9E3779B97F4A7C15ull;

inline std::uint64_t next_random() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

// Stacks are mapped once and reused by every block (untouched pages cost nothing).
inline std::vector<char*>& stack_pool() {
    static std::vector<char*> pool;
    return pool;
}

inline char* stack_for(std::size_t i) {
    auto& pool = stack_pool();
    while (pool.size() <= i) {
        void* p = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::runtime_error("emu: cannot map a fiber stack");
        pool.push_back(static_cast<char*>(p));
    }
    return pool[i];
}

inline int linear_tid() { return S->cur; }

inline void switch_context(Context& from, Context& to) {
#ifdef EMU_ASM_SWITCH
    emu_ctx_switch(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
}

// From the running fiber to the scheduler (and back, later).
inline void yield_to_scheduler() {
    Fiber& me = S->fibers[static_cast<std::size_t>(S->cur)];
#ifdef EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, S->main_bottom, S->main_size);
    switch_context(me.ctx, S->main);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    switch_context(me.ctx, S->main);
#endif
}

inline void block_barrier() {
    if (++S->block_arrived == static_cast<int>(S->fibers.size())) {
        S->block_arrived = 0;
        S->res_or = S->red_or;
        S->res_and = S->red_and;
        S->res_count = S->red_count;
        S->red_or = 0;
        S->red_and = 1;
        S->red_count = 0;
        for (auto& f : S->fibers) {
            if (f.waiting == 1) f.waiting = 0;
        }
        return;
    }
    S->fibers[static_cast<std::size_t>(S->cur)].waiting = 1;
    yield_to_scheduler();
}

inline int warp_of(int t) { return t / kWarp; }
inline int warp_size(int w) {
    return std::min(kWarp, static_cast<int>(S->fibers.size()) - w * kWarp);
}

inline void warp_barrier() {
    const int w = warp_of(linear_tid());
    if (++S->warp_arrived[static_cast<std::size_t>(w)] == warp_size(w)) {
        S->warp_arrived[static_cast<std::size_t>(w)] = 0;
        for (int l = 0; l < warp_size(w); ++l) {
            Fiber& f = S->fibers[static_cast<std::size_t>(w * kWarp + l)];
            if (f.waiting == 2) f.waiting = 0;
        }
        return;
    }
    S->fibers[static_cast<std::size_t>(S->cur)].waiting = 2;
    yield_to_scheduler();
}

// First code a fiber runs; it never returns: it switches to the scheduler
// for the last time once the CUDA thread is done.
inline void fiber_main() {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &S->main_bottom, &S->main_size);
#endif
    (*S->body)();
    Fiber& me = S->fibers[static_cast<std::size_t>(S->cur)];
    me.done = true;
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, S->main_bottom, S->main_size);
#endif
    switch_context(me.ctx, S->main);
    std::abort();  // a finished fiber is never resumed
}

inline void start_fiber(Fiber& f) {
#ifdef EMU_ASM_SWITCH
    // The frame emu_ctx_switch pops: MXCSR + x87 control word, r15..r12, rbx,
    // rbp, then the return address (fiber_main), placed so that fiber_main
    // starts with the stack alignment of a called function.
    auto top = reinterpret_cast<std::uintptr_t>(f.stack + kStack) & ~std::uintptr_t(15);
    auto* slot = reinterpret_cast<std::uint64_t*>(top - 16);
    slot[0] = reinterpret_cast<std::uint64_t>(&fiber_main);
    for (int r = 1; r <= 6; ++r) slot[-r] = 0;
    slot[-7] = 0x1F80ull | (0x037Full << 32);  // default MXCSR, x87 control word
    f.ctx.sp = slot - 7;
#else
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = f.stack;
    f.ctx.uc.uc_stack.ss_size = kStack;
    f.ctx.uc.uc_link = nullptr;
    makecontext(&f.ctx.uc, fiber_main, 0);
#endif
}

inline void run_block(dim3 block_idx, dim3 block_dim, dim3 grid_dim, const std::function<void()>& body) {
    const int n_threads = static_cast<int>(block_dim.x * block_dim.y * block_dim.z);
    Scheduler sched;
    sched.fibers.resize(static_cast<std::size_t>(n_threads));
    sched.warp_arrived.assign(static_cast<std::size_t>((n_threads + kWarp - 1) / kWarp), 0);
    sched.warp_slot.assign(static_cast<std::size_t>(n_threads), 0);
    sched.body = &body;
    S = &sched;
    for (int t = 0; t < n_threads; ++t) {
        Fiber& f = sched.fibers[static_cast<std::size_t>(t)];
        const unsigned u = static_cast<unsigned>(t);
        f.tid = dim3(u % block_dim.x, (u / block_dim.x) % block_dim.y, u / (block_dim.x * block_dim.y));
        f.stack = stack_for(static_cast<std::size_t>(t));
        start_fiber(f);
    }
    blockIdx = block_idx;
    blockDim = block_dim;
    gridDim = grid_dim;
    std::vector<int> order(static_cast<std::size_t>(n_threads));
    for (int t = 0; t < n_threads; ++t) order[static_cast<std::size_t>(t)] = t;
    int live = n_threads;
    while (live > 0) {
        for (int i = n_threads - 1; i > 0; --i) {  // shuffle the resume order
            std::swap(order[static_cast<std::size_t>(i)],
                      order[next_random() % static_cast<std::uint64_t>(i + 1)]);
        }
        bool progress = false;
        for (int t : order) {
            Fiber& f = sched.fibers[static_cast<std::size_t>(t)];
            if (f.done || f.waiting != 0) continue;
            sched.cur = t;
            threadIdx = f.tid;
#ifdef EMU_ASAN
            __sanitizer_start_switch_fiber(&sched.fake_main, f.stack, kStack);
            switch_context(sched.main, f.ctx);
            __sanitizer_finish_switch_fiber(sched.fake_main, nullptr, nullptr);
#else
            switch_context(sched.main, f.ctx);
#endif
            progress = true;
            if (f.done) --live;
        }
        if (!progress) {
            S = nullptr;
            // The waiting fibers are abandoned (their stacks are reused).
            throw std::runtime_error("emu: deadlock in block (" + std::to_string(block_idx.x) + ", " +
                                     std::to_string(block_idx.y) + "): " + std::to_string(live) +
                                     " threads wait at a barrier or shuffle that the others never reach");
        }
    }
    fibers_run += n_threads;
    S = nullptr;
}

template <class T>
std::uint64_t bits(T v) {
    static_assert(sizeof(T) <= 8, "emu: shuffles of at most 8 bytes");
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

// Every lane publishes v, then reads lane `src` of its warp (out-of-range
// source lanes read their own value, like CUDA's modulo-width rule for 32).
template <class T>
T exchange(T v, int src) {
    const int t = linear_tid(), w = warp_of(t);
    S->warp_slot[static_cast<std::size_t>(t)] = bits(v);
    warp_barrier();
    const int lane = src & (kWarp - 1);
    const std::uint64_t got =
        lane < warp_size(w) ? S->warp_slot[static_cast<std::size_t>(w * kWarp + lane)] : bits(v);
    warp_barrier();
    return from_bits<T>(got);
}

// kernel<<<grid, block, 0, stream>>>(args...): every block in turn.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, A... args) {
    static_assert(sizeof...(P) == sizeof...(A), "emu: wrong number of kernel arguments");
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x * block.y * block.z == 0) {
        throw std::runtime_error("emu: empty launch (a real launch fails with invalid configuration)");
    }
    if (block.x * block.y * block.z > 1024 || grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu) {
        throw std::runtime_error("emu: launch configuration beyond CUDA limits");
    }
    ++launches;
    if (grid_cap > 0) grid.x = std::min(grid.x, grid_cap);
    const std::function<void()> body = [=] { kernel(static_cast<P>(args)...); };
    for (unsigned bz = 0; bz < grid.z; ++bz) {
        for (unsigned by = 0; by < grid.y; ++by) {
            for (unsigned bx = 0; bx < grid.x; ++bx) run_block(dim3(bx, by, bz), block, grid, body);
        }
    }
}

}  // namespace emu

#define METAREC_CUDA_LAUNCH(kernel, grid, block, stream, ...) \
    ((void)(stream), ::emu::launch(kernel, dim3(grid), dim3(block), __VA_ARGS__))

// ---------------------------------------------------------------- runtime API

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
    *v = emu::sm_count;
    return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, std::size_t n, cudaStream_t) {
    *p = std::malloc(n == 0 ? 1 : n);  // exact size: ASan sees any overrun
    if (*p == nullptr) return cudaErrorMemoryAllocation;
    std::memset(*p, emu::poison, n);
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
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind, cudaStream_t) {
    std::memcpy(dst, src, n);
    return cudaSuccess;
}

struct float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((aligned(16))) double2 {
    double x, y;
};

// ---------------------------------------------------------------- device built-ins

inline void __syncthreads() { emu::block_barrier(); }

inline int __syncthreads_or(int pred) {
    if (pred) emu::S->red_or = 1;
    emu::block_barrier();
    return emu::S->res_or;
}

inline int __syncthreads_and(int pred) {
    if (!pred) emu::S->red_and = 0;
    emu::block_barrier();
    return emu::S->res_and;
}

inline int __syncthreads_count(int pred) {
    if (pred) ++emu::S->red_count;
    emu::block_barrier();
    return emu::S->res_count;
}

inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(); }

template <class T>
T __shfl_sync(unsigned, T v, int src, int = 32) {
    return emu::exchange(v, src);
}

template <class T>
T __shfl_xor_sync(unsigned, T v, int mask, int = 32) {
    return emu::exchange(v, (emu::linear_tid() % emu::kWarp) ^ mask);
}

template <class T>
T __shfl_down_sync(unsigned, T v, int delta, int = 32) {
    const int lane = emu::linear_tid() % emu::kWarp;
    return emu::exchange(v, lane + delta < emu::kWarp ? lane + delta : lane);
}

template <class T>
T __shfl_up_sync(unsigned, T v, int delta, int = 32) {
    const int lane = emu::linear_tid() % emu::kWarp;
    return emu::exchange(v, lane - delta >= 0 ? lane - delta : lane);
}

inline unsigned __ballot_sync(unsigned, int pred) {
    const int t = emu::linear_tid(), w = emu::warp_of(t);
    emu::S->warp_slot[static_cast<std::size_t>(t)] = pred ? 1u : 0u;
    emu::warp_barrier();
    unsigned m = 0;
    for (int l = 0; l < emu::warp_size(w); ++l) {
        m |= (emu::S->warp_slot[static_cast<std::size_t>(w * emu::kWarp + l)] ? 1u : 0u) << l;
    }
    emu::warp_barrier();
    return m;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
    const int w = emu::warp_of(emu::linear_tid());
    const unsigned full = emu::warp_size(w) == 32 ? 0xffffffffu : ((1u << emu::warp_size(w)) - 1);
    return __ballot_sync(mask, pred) == full;
}

// Atomics: fibers switch only at barriers, so a plain read-modify-write is atomic.
template <class T>
T atomicAdd(T* p, T v) {
    const T old = *p;
    *p = old + v;
    return old;
}
template <class T>
T atomicMin(T* p, T v) {
    const T old = *p;
    if (v < old) *p = v;
    return old;
}
template <class T>
T atomicMax(T* p, T v) {
    const T old = *p;
    if (v > old) *p = v;
    return old;
}
template <class T>
T atomicExch(T* p, T v) {
    const T old = *p;
    *p = v;
    return old;
}
template <class T>
T atomicCAS(T* p, T cmp, T v) {
    const T old = *p;
    if (old == cmp) *p = v;
    return old;
}

inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }
inline int __clzll(unsigned long long x) { return x == 0 ? 64 : __builtin_clzll(x); }

// CUDA's global min/max overloads for integers (device code calls them unqualified).
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
