// CUDA embedding kernels: the device code and the launch-shape helpers of
// embedding.cu (also run on the host by the CUDA emulation of the tests,
// tests/cuda_emu, which checks the results against the CPU kernels bit for
// bit; no kernel here communicates between threads: no shared memory,
// barriers or shuffles).
//
// Everything a kernel needs from CUDA is: __global__/__device__/
// __forceinline__/__launch_bounds__, threadIdx/blockIdx/blockDim/gridDim,
// the __f/__d{add,mul,div}_rn intrinsics and min/max on int64. Keep it so.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace metarec {
namespace cuda {
namespace emb {

using i64 = std::int64_t;

constexpr int kBlock = 256;                // threads per block (a multiple of every G)
constexpr i64 kMaxBlocks = i64(1) << 20;   // grid-stride loops cover the rest
constexpr int kUnroll = 4;                 // lookups whose rows are loaded together

// ---------------------------------------------------------------------------
// Device helpers

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

template <class T, int V>
struct alignas(sizeof(T) * V) Vec {
    T v[V];
};

template <class T, int V>
__device__ __forceinline__ Vec<T, V> zero_vec() {
    Vec<T, V> x;
#pragma unroll
    for (int k = 0; k < V; ++k) x.v[k] = T(0);
    return x;
}

// The host emulator defines this to record any vector access that is not
// aligned to its width (on the GPU that would be a misaligned-address fault).
#ifndef METAREC_EMB_CHECK_ALIGNED
#define METAREC_EMB_CHECK_ALIGNED(p, bytes) ((void)0)
#endif

template <class T, int V>
__device__ __forceinline__ Vec<T, V> load_vec(const T* p) {
    METAREC_EMB_CHECK_ALIGNED(p, sizeof(Vec<T, V>));
    return *reinterpret_cast<const Vec<T, V>*>(p);
}

template <class T, int V>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, V>& x) {
    METAREC_EMB_CHECK_ALIGNED(p, sizeof(Vec<T, V>));
    *reinterpret_cast<Vec<T, V>*>(p) = x;
}

__device__ __forceinline__ bool in_range(i64 id, i64 n) {
    return static_cast<unsigned long long>(id) < static_cast<unsigned long long>(n);
}

// Positions [begin, end) of bag b, clamped into [0, n_ids] (valid offsets are
// never changed by the clamp; bad ones can never cause an out-of-range read).
__device__ __forceinline__ void bag_range(const i64* offsets, i64 n_bags, i64 n_ids, i64 b,
                                          i64& begin, i64& end) {
    i64 s = offsets[b];
    i64 e = b + 1 < n_bags ? offsets[b + 1] : n_ids;
    s = s < 0 ? 0 : (s > n_ids ? n_ids : s);
    e = e < s ? s : (e > n_ids ? n_ids : e);
    begin = s;
    end = e;
}

// The first group this thread belongs to, and the group stride of the grid.
// blockDim.x is a multiple of `group`, so lanes of a group share a block.
__device__ __forceinline__ i64 first_group(int group) {
    return (static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x) / group;
}
__device__ __forceinline__ i64 group_step(int group) {
    return static_cast<i64>(gridDim.x) * blockDim.x / group;
}

// ---------------------------------------------------------------------------
// Kernels

template <class T, int V>
__global__ void __launch_bounds__(kBlock)
    gather_kernel(const T* __restrict__ table, i64 num_rows, i64 dim, const i64* __restrict__ ids,
                  i64 n_ids, T* __restrict__ out, int group) {
    const int lane = static_cast<int>(threadIdx.x) % group;
    const i64 step = group_step(group);
    for (i64 j = first_group(group); j < n_ids; j += step) {
        const i64 id = ids[j];
        const bool ok = in_range(id, num_rows);
        for (i64 c = static_cast<i64>(lane) * V; c < dim; c += static_cast<i64>(group) * V) {
            const Vec<T, V> x = ok ? load_vec<T, V>(table + id * dim + c) : zero_vec<T, V>();
            store_vec<T, V>(out + j * dim + c, x);
        }
    }
}

template <class T, int V, bool kWeighted>
__global__ void __launch_bounds__(kBlock)
    bag_forward_kernel(const T* __restrict__ table, i64 num_rows, i64 dim,
                       const i64* __restrict__ ids, i64 n_ids, const i64* __restrict__ offsets,
                       i64 n_bags, const T* __restrict__ weights, bool mean, T* __restrict__ out,
                       int group) {
    const int lane = static_cast<int>(threadIdx.x) % group;
    const i64 step = group_step(group);
    for (i64 b = first_group(group); b < n_bags; b += step) {
        i64 begin, end;
        bag_range(offsets, n_bags, n_ids, b, begin, end);
        const i64 len = end - begin;
        // As the CPU: scale = 1 / |bag| rounded once, applied by one multiply.
        const T scale = (mean && len > 0) ? div_rn(T(1), static_cast<T>(len)) : T(1);
        for (i64 c = static_cast<i64>(lane) * V; c < dim; c += static_cast<i64>(group) * V) {
            Vec<T, V> acc = zero_vec<T, V>();
            i64 j = begin;
            for (; j + kUnroll <= end; j += kUnroll) {
                i64 id[kUnroll];
                T w[kUnroll];
#pragma unroll
                for (int u = 0; u < kUnroll; ++u) {
                    id[u] = ids[j + u];
                    w[u] = kWeighted ? weights[j + u] : T(1);
                }
                Vec<T, V> r[kUnroll];
#pragma unroll
                for (int u = 0; u < kUnroll; ++u) {
                    // An out-of-range id reads row 0's address... never: it is
                    // replaced by a zero row (and num_rows > 0 is not assumed).
                    r[u] = zero_vec<T, V>();
                    if (in_range(id[u], num_rows)) r[u] = load_vec<T, V>(table + id[u] * dim + c);
                }
#pragma unroll
                for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
                    for (int k = 0; k < V; ++k) {
                        acc.v[k] = kWeighted ? add_rn(acc.v[k], mul_rn(w[u], r[u].v[k]))
                                             : add_rn(acc.v[k], r[u].v[k]);
                    }
                }
            }
            for (; j < end; ++j) {
                const i64 id = ids[j];
                if (!in_range(id, num_rows)) continue;
                const Vec<T, V> r = load_vec<T, V>(table + id * dim + c);
                const T w = kWeighted ? weights[j] : T(1);
#pragma unroll
                for (int k = 0; k < V; ++k) {
                    acc.v[k] = kWeighted ? add_rn(acc.v[k], mul_rn(w, r.v[k]))
                                         : add_rn(acc.v[k], r.v[k]);
                }
            }
            if (mean) {
#pragma unroll
                for (int k = 0; k < V; ++k) acc.v[k] = mul_rn(acc.v[k], scale);
            }
            store_vec<T, V>(out + b * dim + c, acc);
        }
    }
}

// Input checks in one pass (the Python wrappers raise the errors):
// result[0] = lowest position j with ids[j] outside [0, num_rows),
// result[1] = lowest b >= 1 with offsets[b] < offsets[b - 1] (both stay at
// their initial all-ones value when there is none; integer atomicMin is
// order-independent), result[2] = offsets[0], result[3] = offsets[n_bags - 1].
// Each thread walks its positions in ascending order, so its first hit is its
// lowest.
__global__ void __launch_bounds__(kBlock)
    check_kernel(const i64* __restrict__ ids, i64 n_ids, i64 num_rows,
                 const i64* __restrict__ offsets, i64 n_bags, unsigned long long* result) {
    const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
    const i64 first = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
    for (i64 j = first; j < n_ids; j += step) {
        if (!in_range(ids[j], num_rows)) {
            atomicMin(&result[0], static_cast<unsigned long long>(j));
            break;
        }
    }
    for (i64 b = first + 1; b < n_bags; b += step) {
        if (offsets[b] < offsets[b - 1]) {
            atomicMin(&result[1], static_cast<unsigned long long>(b));
            break;
        }
    }
    if (first == 0 && n_bags > 0) {
        result[2] = static_cast<unsigned long long>(offsets[0]);
        result[3] = static_cast<unsigned long long>(offsets[n_bags - 1]);
    }
}

// iota[j] = j (the sort's values) and bag_of[j] = the bag holding position j:
// the last b with offsets[b] <= j (empty bags share their start with the next
// bag, so the last one is the non-empty bag), clamped into [0, n_bags).
__global__ void __launch_bounds__(kBlock)
    iota_bag_kernel(i64 n_ids, const i64* __restrict__ offsets, i64 n_bags, i64* __restrict__ iota,
                    i64* __restrict__ bag_of) {
    const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
    for (i64 j = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; j < n_ids; j += step) {
        iota[j] = j;
        i64 lo = 0, hi = n_bags;  // first b with offsets[b] > j
        while (lo < hi) {
            const i64 mid = lo + (hi - lo) / 2;
            if (offsets[mid] <= j) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        const i64 b = lo - 1;
        bag_of[j] = b < 0 ? 0 : (b >= n_bags ? n_bags - 1 : b);
    }
}

// flags[s] = 1 where a new row starts in the sorted ids.
__global__ void __launch_bounds__(kBlock)
    head_flags_kernel(const i64* __restrict__ sorted, i64 n, i64* __restrict__ flags) {
    const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
    for (i64 s = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; s < n; s += step) {
        flags[s] = (s == 0 || sorted[s] != sorted[s - 1]) ? 1 : 0;
    }
}

// segment = inclusive scan of the flags (1-based group number of each slot).
__global__ void __launch_bounds__(kBlock)
    heads_kernel(const i64* __restrict__ sorted, const i64* __restrict__ segment, i64 n,
                 i64* __restrict__ rows, i64* __restrict__ starts, i64* __restrict__ n_unique) {
    const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
    for (i64 s = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; s < n; s += step) {
        if (s == 0 || sorted[s] != sorted[s - 1]) {
            const i64 u = segment[s] - 1;
            rows[u] = sorted[s];
            starts[u] = s;
        }
        if (s == n - 1) {
            starts[segment[s]] = n;
            *n_unique = segment[s];
        }
    }
}

enum : int { kUnit = 0, kWeights = 1, kMean = 2 };

template <class T, int V, int kMode>
__global__ void __launch_bounds__(kBlock)
    bag_backward_kernel(const T* __restrict__ grad_out, i64 n_bags, i64 dim,
                        const i64* __restrict__ offsets, i64 n_ids, const T* __restrict__ weights,
                        const i64* __restrict__ perm, const i64* __restrict__ bag_of,
                        const i64* __restrict__ rows, const i64* __restrict__ starts,
                        const i64* __restrict__ n_unique_ptr, i64 n_launch, bool dense,
                        i64 num_rows, T* __restrict__ dest, int group) {
    const i64 n_unique = min(*n_unique_ptr, n_launch);
    const int lane = static_cast<int>(threadIdx.x) % group;
    const i64 step = group_step(group);
    for (i64 u = first_group(group); u < n_unique; u += step) {
        const i64 row = rows[u];
        if (dense && !in_range(row, num_rows)) continue;
        T* o = dest + (dense ? row : u) * dim;
        const i64 s0 = max(starts[u], i64(0));
        const i64 s1 = min(starts[u + 1], n_ids);
        for (i64 c = static_cast<i64>(lane) * V; c < dim; c += static_cast<i64>(group) * V) {
            Vec<T, V> acc = zero_vec<T, V>();
            i64 s = s0;
            for (; s + kUnroll <= s1; s += kUnroll) {
                i64 b[kUnroll];
                T coef[kUnroll];
#pragma unroll
                for (int q = 0; q < kUnroll; ++q) {
                    const i64 j = perm[s + q];  // a position in [0, n_ids): a sorted iota
                    b[q] = bag_of[j];           // in [0, n_bags) by construction
                    if (kMode == kWeights) {
                        coef[q] = weights[j];
                    } else if (kMode == kMean) {
                        i64 begin, end;
                        bag_range(offsets, n_bags, n_ids, b[q], begin, end);
                        coef[q] = end > begin ? div_rn(T(1), static_cast<T>(end - begin)) : T(0);
                    } else {
                        coef[q] = T(1);
                    }
                }
                Vec<T, V> r[kUnroll];
#pragma unroll
                for (int q = 0; q < kUnroll; ++q) r[q] = load_vec<T, V>(grad_out + b[q] * dim + c);
#pragma unroll
                for (int q = 0; q < kUnroll; ++q) {
#pragma unroll
                    for (int k = 0; k < V; ++k) {
                        acc.v[k] = kMode == kUnit ? add_rn(acc.v[k], r[q].v[k])
                                                  : add_rn(acc.v[k], mul_rn(coef[q], r[q].v[k]));
                    }
                }
            }
            for (; s < s1; ++s) {
                const i64 j = perm[s];
                const i64 bq = bag_of[j];
                T coef = T(1);
                if (kMode == kWeights) {
                    coef = weights[j];
                } else if (kMode == kMean) {
                    i64 begin, end;
                    bag_range(offsets, n_bags, n_ids, bq, begin, end);
                    coef = end > begin ? div_rn(T(1), static_cast<T>(end - begin)) : T(0);
                }
                const Vec<T, V> r = load_vec<T, V>(grad_out + bq * dim + c);
#pragma unroll
                for (int k = 0; k < V; ++k) {
                    acc.v[k] = kMode == kUnit ? add_rn(acc.v[k], r.v[k])
                                              : add_rn(acc.v[k], mul_rn(coef, r.v[k]));
                }
            }
            store_vec<T, V>(o + c, acc);
        }
    }
}

// One group per bag, its lanes over the bag's lookups; each lookup's dot
// product is summed by one thread in ascending column order (as the CPU).
template <class T, int V>
__global__ void __launch_bounds__(kBlock)
    weight_grad_kernel(const T* __restrict__ grad_out, i64 n_bags, const T* __restrict__ table,
                       i64 num_rows, i64 dim, const i64* __restrict__ ids, i64 n_ids,
                       const i64* __restrict__ offsets, T* __restrict__ out, int group) {
    const int lane = static_cast<int>(threadIdx.x) % group;
    const i64 step = group_step(group);
    for (i64 b = first_group(group); b < n_bags; b += step) {
        i64 begin, end;
        bag_range(offsets, n_bags, n_ids, b, begin, end);
        const T* g = grad_out + b * dim;
        for (i64 j = begin + lane; j < end; j += group) {
            const i64 id = ids[j];
            T s = T(0);
            if (in_range(id, num_rows)) {
                const T* row = table + id * dim;
                for (i64 c = 0; c < dim; c += V) {
                    const Vec<T, V> gv = load_vec<T, V>(g + c);
                    const Vec<T, V> rv = load_vec<T, V>(row + c);
#pragma unroll
                    for (int k = 0; k < V; ++k) s = add_rn(s, mul_rn(gv.v[k], rv.v[k]));
                }
            }
            out[j] = s;
        }
    }
}

// ---------------------------------------------------------------------------
// Launch shape (host)

template <class T>
inline bool aligned(const T* p, int v) {
    return reinterpret_cast<std::uintptr_t>(p) % (static_cast<std::uintptr_t>(v) * sizeof(T)) == 0;
}

// The widest vector (16 bytes at most) that divides dim and fits the
// alignment of every row-major pointer involved (null pointers are ignored).
template <class T>
inline int pick_vec(i64 dim, const T* a, const T* b = nullptr) {
    for (int v = static_cast<int>(16 / sizeof(T)); v > 1; v /= 2) {
        if (dim % v == 0 && (a == nullptr || aligned(a, v)) && (b == nullptr || aligned(b, v))) {
            return v;
        }
    }
    return 1;
}

// Smallest power of two >= n, clamped into [1, 32].
inline int pow2_group(i64 n) {
    int g = 1;
    while (g < 32 && g < n) g *= 2;
    return g;
}

inline int blocks_for(i64 n_groups, int group) {
    const i64 threads = n_groups * group;
    return static_cast<int>(std::max<i64>(1, std::min<i64>((threads + kBlock - 1) / kBlock, kMaxBlocks)));
}

inline int end_bit_for(i64 num_rows) {
    if (num_rows <= 2) return 1;
    const auto top = static_cast<unsigned long long>(num_rows - 1);
    return 64 - __builtin_clzll(top);
}

inline int blocks_for_items(i64 n) { return blocks_for(n, 1); }

}  // namespace emb
}  // namespace cuda
}  // namespace metarec
