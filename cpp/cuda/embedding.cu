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
#include "embedding_kernels.cuh"

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

using namespace emb;  // kernels and launch-shape helpers (embedding_kernels.cuh)

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
        METAREC_CUDA_LAUNCH((gather_kernel<T, V>), blocks_for(n_ids, group), kBlock, stream,
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
            METAREC_CUDA_LAUNCH((bag_forward_kernel<T, V, true>), blocks, kBlock, stream,
                table, num_rows, dim, ids, n_ids, offsets, n_bags, weights, false, out, group);
        } else {
            METAREC_CUDA_LAUNCH((bag_forward_kernel<T, V, false>), blocks, kBlock, stream,
                table, num_rows, dim, ids, n_ids, offsets, n_bags, nullptr, mean, out, group);
        }
    });
    check_launch("embedding_bag_forward");
}

void embedding_check(const i64* ids, i64 n_ids, i64 num_rows, const i64* offsets, i64 n_bags,
                     i64* result, cudaStream_t stream, int device) {
    check_bags(n_ids, n_bags);
    DeviceGuard guard(device);
    // all ones: "none found" for the two atomicMin words (-1 as int64)
    check(cudaMemsetAsync(result, 0xFF, 2 * sizeof(i64), stream), "cudaMemsetAsync");
    if (n_ids == 0 && n_bags == 0) return;
    METAREC_CUDA_LAUNCH(check_kernel, blocks_for_items(std::max(n_ids, n_bags)), kBlock, stream,
        ids, n_ids, num_rows, offsets, n_bags, reinterpret_cast<unsigned long long*>(result));
    check_launch("embedding_check");
}

void embedding_check_ids(const i64* ids, i64 n_ids, i64 num_rows, i64* result, cudaStream_t stream,
                         int device) {
    require(n_ids >= 0, "negative number of ids");
    DeviceGuard guard(device);
    check(cudaMemsetAsync(result, 0xFF, sizeof(i64), stream), "cudaMemsetAsync");
    if (n_ids == 0) return;
    METAREC_CUDA_LAUNCH(check_kernel, blocks_for_items(n_ids), kBlock, stream,
        ids, n_ids, num_rows, nullptr, 0, reinterpret_cast<unsigned long long*>(result));
    check_launch("embedding_check_ids");
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
    METAREC_CUDA_LAUNCH(iota_bag_kernel, blocks, kBlock, stream,
        n_ids, offsets, n_bags, scratch, bag_of);
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

    METAREC_CUDA_LAUNCH(head_flags_kernel, blocks, kBlock, stream,
        sorted, n_ids, scratch);
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
    METAREC_CUDA_LAUNCH(heads_kernel, blocks, kBlock, stream,
        sorted, segment, n_ids, rows, starts, n_unique);
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
            METAREC_CUDA_LAUNCH((bag_backward_kernel<T, V, M>), blocks, kBlock, stream,
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
        METAREC_CUDA_LAUNCH((weight_grad_kernel<T, V>), blocks_for(n_bags, group), kBlock, stream,
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
