// CUDA embedding kernels (see embedding.h for the contract).
//
// Layout of the work: a "group" of G threads (G a power of two <= 32, so a
// group never straddles a warp) owns one output row (a bag, a gathered id or
// a distinct table row) and its lanes cover the columns with vector loads of
// V elements (16 bytes when the width and the pointers allow it). G is the
// smallest power of two with G * V >= dim (at most 32; wider rows loop over
// column blocks), so a d=64 float32 bag is read by 16 lanes x float4: one
// 256-byte row per half warp and two bags per warp. Lookups are unrolled by
// kUnroll: the ids (and weights) of kUnroll lookups are loaded, then their
// kUnroll rows, then the rows are accumulated in ascending order, so several
// row loads are in flight per group without changing the summation order.
//
// Groups never synchronise or shuffle with each other (no __syncthreads, no
// warp intrinsics), so divergent bag lengths inside a warp are harmless. All
// loops are grid-stride loops over groups with int64 indices, so any n fits a
// capped 1-d grid.
//
// Bitwise equality with the CPU: every multiply and add below is an explicit
// round-to-nearest intrinsic (__fmul_rn/__fadd_rn/__dmul_rn/__dadd_rn), which
// nvcc never contracts into an FMA, and every sum runs in the CPU's order
// (see cpp/src/embedding.cpp: per column, ascending position; the CPU file is
// compiled with fp-contract=off).
#include "embedding.h"

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace metarec {
namespace cuda {

namespace {

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

template <class T, int V>
__device__ __forceinline__ Vec<T, V> load_vec(const T* p) {
    return *reinterpret_cast<const Vec<T, V>*>(p);
}

template <class T, int V>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, V>& x) {
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
// Host helpers

void require(bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
}

void check_sizes(i64 num_rows, i64 dim) {
    require(num_rows >= 0 && dim >= 0, "table shape must be non-negative, got (" +
                                           std::to_string(num_rows) + ", " +
                                           std::to_string(dim) + ")");
}

void check_bags(i64 n_ids, i64 n_bags) {
    require(n_ids >= 0 && n_bags >= 0, "negative bag or id count");
    require(!(n_bags == 0 && n_ids > 0),
            "offsets is empty but ids has " + std::to_string(n_ids) + " entries");
}

template <class T>
bool aligned(const T* p, int v) {
    return reinterpret_cast<std::uintptr_t>(p) % (static_cast<std::uintptr_t>(v) * sizeof(T)) == 0;
}

// The widest vector (16 bytes at most) that divides dim and fits the
// alignment of every row-major pointer involved (null pointers are ignored).
template <class T>
int pick_vec(i64 dim, const T* a, const T* b = nullptr) {
    for (int v = static_cast<int>(16 / sizeof(T)); v > 1; v /= 2) {
        if (dim % v == 0 && (a == nullptr || aligned(a, v)) && (b == nullptr || aligned(b, v))) {
            return v;
        }
    }
    return 1;
}

// Smallest power of two >= n, clamped into [1, 32].
int pow2_group(i64 n) {
    int g = 1;
    while (g < 32 && g < n) g *= 2;
    return g;
}

int blocks_for(i64 n_groups, int group) {
    const i64 threads = n_groups * group;
    return static_cast<int>(std::max<i64>(1, std::min<i64>(ceil_div(threads, kBlock), kMaxBlocks)));
}

int blocks_for_items(i64 n) { return blocks_for(n, 1); }

// Calls f(std::integral_constant<int, V>) for V = v (4 only for float).
template <class T, class F>
void with_vec(int v, F&& f) {
    if constexpr (sizeof(T) == 4) {
        if (v == 4) {
            f(std::integral_constant<int, 4>());
            return;
        }
    }
    if (v == 2) {
        f(std::integral_constant<int, 2>());
        return;
    }
    f(std::integral_constant<int, 1>());
}

int end_bit_for(i64 num_rows) {
    if (num_rows <= 2) return 1;
    const auto top = static_cast<unsigned long long>(num_rows - 1);
    return 64 - __builtin_clzll(top);
}

}  // namespace

// ---------------------------------------------------------------------------
// Launchers

template <class T>
void embedding_gather(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids, T* out,
                      cudaStream_t stream, int device) {
    check_sizes(num_rows, dim);
    require(n_ids >= 0, "negative number of ids");
    if (n_ids == 0 || dim == 0) return;
    DeviceGuard guard(device);
    const int v = pick_vec<T>(dim, table, out);
    const int group = pow2_group(ceil_div(dim, v));
    with_vec<T>(v, [&](auto vc) {
        constexpr int V = decltype(vc)::value;
        gather_kernel<T, V><<<blocks_for(n_ids, group), kBlock, 0, stream>>>(
            table, num_rows, dim, ids, n_ids, out, group);
    });
    check_launch("embedding_gather");
}

template <class T>
void embedding_bag_forward(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids,
                           const i64* offsets, i64 n_bags, const T* weights, bool mean, T* out,
                           cudaStream_t stream, int device) {
    check_sizes(num_rows, dim);
    check_bags(n_ids, n_bags);
    require(!(weights != nullptr && mean),
            "per-sample weights are only supported with mode='sum'");
    if (n_bags == 0 || dim == 0) return;
    DeviceGuard guard(device);
    const int v = pick_vec<T>(dim, table, out);
    const int group = pow2_group(ceil_div(dim, v));
    const int blocks = blocks_for(n_bags, group);
    with_vec<T>(v, [&](auto vc) {
        constexpr int V = decltype(vc)::value;
        if (weights != nullptr) {
            bag_forward_kernel<T, V, true><<<blocks, kBlock, 0, stream>>>(
                table, num_rows, dim, ids, n_ids, offsets, n_bags, weights, false, out, group);
        } else {
            bag_forward_kernel<T, V, false><<<blocks, kBlock, 0, stream>>>(
                table, num_rows, dim, ids, n_ids, offsets, n_bags, nullptr, mean, out, group);
        }
    });
    check_launch("embedding_bag_forward");
}

GroupLayout group_layout(i64 n_ids) {
    require(n_ids >= 0, "negative number of ids");
    const i64 n = n_ids;
    GroupLayout l{};
    l.sorted_rows = 0;
    l.perm = n;
    l.scratch = 2 * n;
    l.bag_of = 3 * n;
    l.segment = 4 * n;
    l.rows = 5 * n;
    l.starts = 6 * n;          // n + 1 words
    l.n_unique = 7 * n + 1;
    l.words = 7 * n + 2;
    return l;
}

void embedding_group(const i64* ids, i64 n_ids, const i64* offsets, i64 n_bags, i64 num_rows,
                     i64* workspace, cudaStream_t stream, int device) {
    check_bags(n_ids, n_bags);
    require(num_rows >= 0, "num_rows must be non-negative, got " + std::to_string(num_rows));
    const GroupLayout l = group_layout(n_ids);
    DeviceGuard guard(device);
    i64* sorted = workspace + l.sorted_rows;
    i64* perm = workspace + l.perm;
    i64* scratch = workspace + l.scratch;
    i64* bag_of = workspace + l.bag_of;
    i64* segment = workspace + l.segment;
    i64* rows = workspace + l.rows;
    i64* starts = workspace + l.starts;
    i64* n_unique = workspace + l.n_unique;
    if (n_ids == 0) {
        check(cudaMemsetAsync(starts, 0, sizeof(i64), stream), "cudaMemsetAsync");
        check(cudaMemsetAsync(n_unique, 0, sizeof(i64), stream), "cudaMemsetAsync");
        return;
    }
    const int blocks = blocks_for_items(n_ids);
    iota_bag_kernel<<<blocks, kBlock, 0, stream>>>(n_ids, offsets, n_bags, scratch, bag_of);
    check_launch("embedding_group (iota)");

    // Stable sort of (id, position): equal ids keep ascending positions. The
    // ids were validated non-negative, so their int64 bits sort as unsigned;
    // only the bits below num_rows are compared.
    using Key = unsigned long long;
    const Key* keys_in = reinterpret_cast<const Key*>(ids);
    Key* keys_out = reinterpret_cast<Key*>(sorted);
    const int end_bit = end_bit_for(num_rows);
    std::size_t sort_bytes = 0;
    check(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, keys_in, keys_out, scratch, perm,
                                          n_ids, 0, end_bit, stream),
          "cub::DeviceRadixSort::SortPairs (size)");
    {
        DeviceBuffer tmp(sort_bytes, stream);
        check(cub::DeviceRadixSort::SortPairs(tmp.as<void>(), sort_bytes, keys_in, keys_out,
                                              scratch, perm, n_ids, 0, end_bit, stream),
              "cub::DeviceRadixSort::SortPairs");
    }

    head_flags_kernel<<<blocks, kBlock, 0, stream>>>(sorted, n_ids, scratch);
    check_launch("embedding_group (flags)");
    std::size_t scan_bytes = 0;
    check(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, scratch, segment, n_ids, stream),
          "cub::DeviceScan::InclusiveSum (size)");
    {
        DeviceBuffer tmp(scan_bytes, stream);
        check(cub::DeviceScan::InclusiveSum(tmp.as<void>(), scan_bytes, scratch, segment, n_ids,
                                            stream),
              "cub::DeviceScan::InclusiveSum");
    }
    heads_kernel<<<blocks, kBlock, 0, stream>>>(sorted, segment, n_ids, rows, starts, n_unique);
    check_launch("embedding_group (heads)");
}

template <class T>
void embedding_bag_backward(const T* grad_out, i64 n_bags, i64 dim, const i64* offsets,
                            i64 n_ids, const T* weights, bool mean, const i64* workspace,
                            i64 n_launch, bool dense, i64 num_rows, T* dest, cudaStream_t stream,
                            int device) {
    require(dim >= 0, "negative width");
    check_bags(n_ids, n_bags);
    require(num_rows >= 0, "num_rows must be non-negative, got " + std::to_string(num_rows));
    require(!(weights != nullptr && mean),
            "per-sample weights are only supported with mode='sum'");
    require(n_launch >= 0 && n_launch <= n_ids, "n_launch must be in [0, n_ids]");
    if (dim == 0) return;
    DeviceGuard guard(device);
    if (dense && num_rows > 0) {
        const auto bytes = static_cast<std::size_t>(num_rows) * static_cast<std::size_t>(dim) *
                           sizeof(T);
        check(cudaMemsetAsync(dest, 0, bytes, stream), "cudaMemsetAsync");
    }
    if (n_launch == 0 || n_ids == 0) return;
    const GroupLayout l = group_layout(n_ids);
    const int v = pick_vec<T>(dim, grad_out, dest);
    const int group = pow2_group(ceil_div(dim, v));
    const int blocks = blocks_for(n_launch, group);
    with_vec<T>(v, [&](auto vc) {
        constexpr int V = decltype(vc)::value;
        auto launch = [&](auto mode_c) {
            constexpr int M = decltype(mode_c)::value;
            bag_backward_kernel<T, V, M><<<blocks, kBlock, 0, stream>>>(
                grad_out, n_bags, dim, offsets, n_ids, weights, workspace + l.perm,
                workspace + l.bag_of, workspace + l.rows, workspace + l.starts,
                workspace + l.n_unique, n_launch, dense, num_rows, dest, group);
        };
        if (weights != nullptr) {
            launch(std::integral_constant<int, kWeights>());
        } else if (mean) {
            launch(std::integral_constant<int, kMean>());
        } else {
            launch(std::integral_constant<int, kUnit>());
        }
    });
    check_launch("embedding_bag_backward");
}

template <class T>
void embedding_bag_weight_grad(const T* grad_out, i64 n_bags, const T* table, i64 num_rows,
                               i64 dim, const i64* ids, i64 n_ids, const i64* offsets, T* out,
                               cudaStream_t stream, int device) {
    check_sizes(num_rows, dim);
    check_bags(n_ids, n_bags);
    if (n_ids == 0) return;
    DeviceGuard guard(device);
    const int v = pick_vec<T>(dim, table, grad_out);
    // Lanes over a bag's lookups: as many as an average bag has (<= 32).
    const int group = pow2_group(ceil_div(n_ids, std::max<i64>(1, n_bags)));
    with_vec<T>(v, [&](auto vc) {
        constexpr int V = decltype(vc)::value;
        weight_grad_kernel<T, V><<<blocks_for(n_bags, group), kBlock, 0, stream>>>(
            grad_out, n_bags, table, num_rows, dim, ids, n_ids, offsets, out, group);
    });
    check_launch("embedding_bag_weight_grad");
}

#define METAREC_CUDA_EMB_INSTANTIATE(T)                                                        \
    template void embedding_gather<T>(const T*, i64, i64, const i64*, i64, T*, cudaStream_t,   \
                                      int);                                                    \
    template void embedding_bag_forward<T>(const T*, i64, i64, const i64*, i64, const i64*,    \
                                           i64, const T*, bool, T*, cudaStream_t, int);        \
    template void embedding_bag_backward<T>(const T*, i64, i64, const i64*, i64, const T*,     \
                                            bool, const i64*, i64, bool, i64, T*,              \
                                            cudaStream_t, int);                                \
    template void embedding_bag_weight_grad<T>(const T*, i64, const T*, i64, i64, const i64*,  \
                                               i64, const i64*, T*, cudaStream_t, int);

METAREC_CUDA_EMB_INSTANTIATE(float)
METAREC_CUDA_EMB_INSTANTIATE(double)

}  // namespace cuda
}  // namespace metarec
