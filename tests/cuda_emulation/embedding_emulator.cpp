// Host emulator of the CUDA embedding kernels (cpp/cuda/embedding_kernels.cuh)
// for machines without a GPU. tests/test_cuda_embedding.py compiles it with
// g++ into a shared library and calls it through ctypes.
//
// The kernels never communicate between threads (no shared memory, barriers,
// shuffles or atomics), so running every thread of every block one after the
// other is an exact emulation of what each thread computes. The CUDA
// intrinsics become the corresponding IEEE host operations (compiled with
// -ffp-contract=off, like the CPU kernels), CUB's stable radix sort becomes
// std::stable_sort on the same key bits and its inclusive scan std::partial_sum.
// The launchers below repeat the launch sequence of cpp/cuda/embedding.cu with
// the same shape helpers; `blocks` > 0 overrides the grid size (to exercise
// the grid-stride loops with few blocks).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace emu {
struct Dim3 {
    unsigned x = 0, y = 1, z = 1;
};
Dim3 threadIdx, blockIdx, blockDim, gridDim;
}  // namespace emu
using emu::blockDim;
using emu::blockIdx;
using emu::gridDim;
using emu::threadIdx;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)

inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
using std::max;
using std::min;
inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
    const unsigned long long old = *address;
    if (value < old) *address = value;
    return old;
}

// Misaligned vector accesses are counted (emu_misaligned), not faulted.
long long g_misaligned = 0;
#define METAREC_EMB_CHECK_ALIGNED(p, bytes) \
    (g_misaligned += (reinterpret_cast<std::uintptr_t>(p) % (bytes)) != 0)

#include "embedding_kernels.cuh"

using namespace metarec::cuda::emb;

namespace {

template <class Kernel, class... Args>
void launch(int blocks, Kernel kernel, Args... args) {
    gridDim.x = static_cast<unsigned>(blocks);
    blockDim.x = kBlock;
    for (unsigned b = 0; b < gridDim.x; ++b) {
        for (unsigned t = 0; t < blockDim.x; ++t) {
            blockIdx.x = b;
            threadIdx.x = t;
            kernel(args...);
        }
    }
}

int grid(int forced, int computed) { return forced > 0 ? forced : computed; }

template <class T, class F>
void with_vec(int v, F&& f) {
    if constexpr (sizeof(T) == 4) {
        if (v == 4) return f(std::integral_constant<int, 4>());
    }
    if (v == 2) return f(std::integral_constant<int, 2>());
    f(std::integral_constant<int, 1>());
}

template <class T>
void gather(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids, T* out,
            int blocks) {
    if (n_ids == 0 || dim == 0) return;
    const int v = pick_vec<T>(dim, table, out);
    const int group = pow2_group((dim + v - 1) / v);
    with_vec<T>(v, [&](auto vc) {
        constexpr int V = decltype(vc)::value;
        launch(grid(blocks, blocks_for(n_ids, group)), gather_kernel<T, V>, table, num_rows, dim,
               ids, n_ids, out, group);
    });
}

template <class T>
void forward(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids,
             const i64* offsets, i64 n_bags, const T* weights, bool mean, T* out, int blocks) {
    if (n_bags == 0 || dim == 0) return;
    const int v = pick_vec<T>(dim, table, out);
    const int group = pow2_group((dim + v - 1) / v);
    const int b = grid(blocks, blocks_for(n_bags, group));
    with_vec<T>(v, [&](auto vc) {
        constexpr int V = decltype(vc)::value;
        if (weights != nullptr) {
            launch(b, bag_forward_kernel<T, V, true>, table, num_rows, dim, ids, n_ids, offsets,
                   n_bags, weights, false, out, group);
        } else {
            launch(b, bag_forward_kernel<T, V, false>, table, num_rows, dim, ids, n_ids, offsets,
                   n_bags, static_cast<const T*>(nullptr), mean, out, group);
        }
    });
}

// Same word layout as metarec::cuda::group_layout.
void group(const i64* ids, i64 n, const i64* offsets, i64 n_bags, i64 num_rows, i64* ws,
           int blocks) {
    i64* sorted = ws;
    i64* perm = ws + n;
    i64* scratch = ws + 2 * n;
    i64* bag_of = ws + 3 * n;
    i64* segment = ws + 4 * n;
    i64* rows = ws + 5 * n;
    i64* starts = ws + 6 * n;
    i64* n_unique = ws + 7 * n + 1;
    if (n == 0) {
        starts[0] = 0;
        *n_unique = 0;
        return;
    }
    const int b = grid(blocks, blocks_for_items(n));
    launch(b, iota_bag_kernel, n, offsets, n_bags, scratch, bag_of);
    const int end_bit = end_bit_for(num_rows);
    const unsigned long long mask =
        end_bit >= 64 ? ~0ull : ((1ull << end_bit) - 1);
    std::vector<i64> order(scratch, scratch + n);  // the iota values
    std::stable_sort(order.begin(), order.end(), [&](i64 a, i64 c) {
        return (static_cast<unsigned long long>(ids[a]) & mask) <
               (static_cast<unsigned long long>(ids[c]) & mask);
    });
    for (i64 s = 0; s < n; ++s) {
        perm[s] = order[static_cast<std::size_t>(s)];
        sorted[s] = ids[perm[s]];
    }
    launch(b, head_flags_kernel, static_cast<const i64*>(sorted), n, scratch);
    std::partial_sum(scratch, scratch + n, segment);
    launch(b, heads_kernel, static_cast<const i64*>(sorted), static_cast<const i64*>(segment), n,
           rows, starts, n_unique);
}

template <class T>
void backward(const T* grad_out, i64 n_bags, i64 dim, const i64* offsets, i64 n_ids,
              const T* weights, bool mean, const i64* ws, i64 n_launch, bool dense, i64 num_rows,
              T* dest, int blocks) {
    if (dim == 0) return;
    if (dense) std::fill(dest, dest + num_rows * dim, T(0));
    if (n_launch == 0 || n_ids == 0) return;
    const int v = pick_vec<T>(dim, grad_out, dest);
    const int group = pow2_group((dim + v - 1) / v);
    const int b = grid(blocks, blocks_for(n_launch, group));
    const i64 n = n_ids;
    with_vec<T>(v, [&](auto vc) {
        constexpr int V = decltype(vc)::value;
        auto run = [&](auto kernel) {
            launch(b, kernel, grad_out, n_bags, dim, offsets, n_ids, weights, ws + n, ws + 3 * n,
                   ws + 5 * n, ws + 6 * n, ws + 7 * n + 1, n_launch, dense, num_rows, dest, group);
        };
        if (weights != nullptr) {
            run(bag_backward_kernel<T, V, kWeights>);
        } else if (mean) {
            run(bag_backward_kernel<T, V, kMean>);
        } else {
            run(bag_backward_kernel<T, V, kUnit>);
        }
    });
}

template <class T>
void weight_grad(const T* grad_out, i64 n_bags, const T* table, i64 num_rows, i64 dim,
                 const i64* ids, i64 n_ids, const i64* offsets, T* out, int blocks) {
    if (n_ids == 0) return;
    const int v = pick_vec<T>(dim, table, grad_out);
    const int group = pow2_group((n_ids + std::max<i64>(1, n_bags) - 1) / std::max<i64>(1, n_bags));
    with_vec<T>(v, [&](auto vc) {
        constexpr int V = decltype(vc)::value;
        launch(grid(blocks, blocks_for(n_bags, group)), weight_grad_kernel<T, V>, grad_out, n_bags,
               table, num_rows, dim, ids, n_ids, offsets, out, group);
    });
}

}  // namespace

// C ABI for ctypes: `f64` selects double, else float; pointers are host
// addresses of C-contiguous arrays (weights may be null).
extern "C" {

void emu_gather(int f64, const void* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids,
                void* out, int blocks) {
    if (f64) {
        gather(static_cast<const double*>(table), num_rows, dim, ids, n_ids,
               static_cast<double*>(out), blocks);
    } else {
        gather(static_cast<const float*>(table), num_rows, dim, ids, n_ids,
               static_cast<float*>(out), blocks);
    }
}

void emu_forward(int f64, const void* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids,
                 const i64* offsets, i64 n_bags, const void* weights, int mean, void* out,
                 int blocks) {
    if (f64) {
        forward(static_cast<const double*>(table), num_rows, dim, ids, n_ids, offsets, n_bags,
                static_cast<const double*>(weights), mean != 0, static_cast<double*>(out), blocks);
    } else {
        forward(static_cast<const float*>(table), num_rows, dim, ids, n_ids, offsets, n_bags,
                static_cast<const float*>(weights), mean != 0, static_cast<float*>(out), blocks);
    }
}

long long emu_misaligned() { return g_misaligned; }

void emu_check(const i64* ids, i64 n_ids, i64 num_rows, const i64* offsets, i64 n_bags,
               i64* result, int blocks) {
    result[0] = result[1] = -1;
    if (n_ids == 0 && n_bags == 0) return;
    launch(grid(blocks, blocks_for_items(std::max(n_ids, n_bags))), check_kernel, ids, n_ids,
           num_rows, offsets, n_bags, reinterpret_cast<unsigned long long*>(result));
}

void emu_group(const i64* ids, i64 n_ids, const i64* offsets, i64 n_bags, i64 num_rows, i64* ws,
               int blocks) {
    group(ids, n_ids, offsets, n_bags, num_rows, ws, blocks);
}

void emu_backward(int f64, const void* grad_out, i64 n_bags, i64 dim, const i64* offsets,
                  i64 n_ids, const void* weights, int mean, const i64* ws, i64 n_launch,
                  int dense, i64 num_rows, void* dest, int blocks) {
    if (f64) {
        backward(static_cast<const double*>(grad_out), n_bags, dim, offsets, n_ids,
                 static_cast<const double*>(weights), mean != 0, ws, n_launch, dense != 0,
                 num_rows, static_cast<double*>(dest), blocks);
    } else {
        backward(static_cast<const float*>(grad_out), n_bags, dim, offsets, n_ids,
                 static_cast<const float*>(weights), mean != 0, ws, n_launch, dense != 0,
                 num_rows, static_cast<float*>(dest), blocks);
    }
}

void emu_weight_grad(int f64, const void* grad_out, i64 n_bags, const void* table, i64 num_rows,
                     i64 dim, const i64* ids, i64 n_ids, const i64* offsets, void* out,
                     int blocks) {
    if (f64) {
        weight_grad(static_cast<const double*>(grad_out), n_bags,
                    static_cast<const double*>(table), num_rows, dim, ids, n_ids, offsets,
                    static_cast<double*>(out), blocks);
    } else {
        weight_grad(static_cast<const float*>(grad_out), n_bags, static_cast<const float*>(table),
                    num_rows, dim, ids, n_ids, offsets, static_cast<float*>(out), blocks);
    }
}

}  // extern "C"

#ifdef METAREC_EMU_MAIN
// Stand-alone stress run for AddressSanitizer (tests/test_cuda_embedding.py
// builds it with -fsanitize=address,undefined): random problems, including
// empty bags, ids and offsets the Python layer would reject, misaligned
// tables and tiny grids, on buffers of exactly the documented sizes. Any read
// or write outside them aborts the run.
#include <cstdio>
#include <memory>

namespace {

std::uint64_t g_state = 0x9E3779B97F4A7C15ull;
std::uint64_t next_u64() {
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return g_state;
}
i64 uniform(i64 n) { return n <= 0 ? 0 : static_cast<i64>(next_u64() % static_cast<std::uint64_t>(n)); }

// Exactly n elements on the heap (offset by one element when `shift`, to
// break alignment); the redzone follows the last element either way.
template <class T>
struct Buf {
    std::unique_ptr<T[]> mem;
    T* p;
    Buf(i64 n, bool shift) : mem(new T[static_cast<std::size_t>(n + (shift ? 1 : 0))]) {
        p = mem.get() + (shift ? 1 : 0);
        for (i64 i = 0; i < n; ++i) p[i] = static_cast<T>(uniform(1000)) / T(7);
    }
};

template <class T>
void run_one(int round) {
    const i64 dims[] = {1, 2, 3, 4, 5, 8, 64, 66, 130};
    const i64 dim = dims[uniform(9)];
    const i64 num_rows = 1 + uniform(300);
    const i64 n_bags = uniform(40);
    const bool shift = uniform(2) == 1;
    const bool bad = round % 5 == 4;  // out-of-range ids and broken offsets
    const int blocks = static_cast<int>(uniform(4));  // 0 = the launchers' grid
    std::vector<i64> offsets;
    i64 n_ids = 0;
    for (i64 b = 0; b < n_bags; ++b) {
        offsets.push_back(n_ids);
        n_ids += uniform(4) == 0 ? 0 : uniform(12);
    }
    if (n_bags == 0) n_ids = 0;
    Buf<i64> ids(n_ids, false);
    for (i64 j = 0; j < n_ids; ++j) ids.p[j] = uniform(num_rows);
    Buf<i64> offs(n_bags, false);
    for (i64 b = 0; b < n_bags; ++b) offs.p[b] = offsets[static_cast<std::size_t>(b)];
    if (bad && n_ids > 0) {
        ids.p[uniform(n_ids)] = num_rows + uniform(5);
        ids.p[uniform(n_ids)] = -1 - uniform(5);
    }
    Buf<T> table(num_rows * dim, shift);
    Buf<T> weights(n_ids, shift);
    Buf<T> out(n_bags * dim, shift);
    Buf<T> grad_out(n_bags * dim, shift);
    const bool weighted = uniform(2) == 1;
    const bool mean = !weighted && uniform(2) == 1;
    const T* w = weighted ? weights.p : nullptr;

    Buf<i64> check(4, false);
    emu_check(ids.p, n_ids, num_rows, offs.p, n_bags, check.p, blocks);
    Buf<T> gathered(n_ids * dim, shift);
    gather(table.p, num_rows, dim, ids.p, n_ids, gathered.p, blocks);
    if (bad && n_bags > 1) {  // forward and weight grad clamp broken offsets
        Buf<i64> broken(n_bags, false);
        for (i64 b = 0; b < n_bags; ++b) broken.p[b] = uniform(n_ids + 10) - 5;
        forward(table.p, num_rows, dim, ids.p, n_ids, broken.p, n_bags, w, mean, out.p, blocks);
        Buf<T> wg(n_ids, shift);
        weight_grad(grad_out.p, n_bags, table.p, num_rows, dim, ids.p, n_ids, broken.p, wg.p,
                    blocks);
    }
    forward(table.p, num_rows, dim, ids.p, n_ids, offs.p, n_bags, w, mean, out.p, blocks);
    Buf<T> wg(n_ids, shift);
    weight_grad(grad_out.p, n_bags, table.p, num_rows, dim, ids.p, n_ids, offs.p, wg.p, blocks);
    if (bad) {  // the grouping sorts only the key bits below num_rows: keep ids in range
        for (i64 j = 0; j < n_ids; ++j) ids.p[j] = uniform(num_rows);
    }
    Buf<i64> ws(7 * n_ids + 2, false);
    group(ids.p, n_ids, offs.p, n_bags, num_rows, ws.p, blocks);
    Buf<T> dense(num_rows * dim, shift);
    backward(grad_out.p, n_bags, dim, offs.p, n_ids, w, mean, ws.p, n_ids, true, num_rows,
             dense.p, blocks);
    const i64 n_unique = ws.p[7 * n_ids + 1];
    Buf<T> values(n_unique * dim, shift);
    backward(grad_out.p, n_bags, dim, offs.p, n_ids, w, mean, ws.p, n_unique, false, num_rows,
             values.p, blocks);
}

}  // namespace

int main() {
    for (int round = 0; round < 400; ++round) {
        run_one<float>(round);
        run_one<double>(round);
    }
    std::printf("ok, %lld misaligned vector accesses\n", g_misaligned);
    return g_misaligned == 0 ? 0 : 1;
}
#endif
