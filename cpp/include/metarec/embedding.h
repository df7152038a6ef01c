// Embedding kernels: row gather, pooled bags (sum / mean, optional
// per-sample weights), their backward passes, and row-wise sparse
// optimiser updates (SGD, FBGEMM-style row-wise Adagrad).
//
// Conventions shared by every function here:
//  * Tables are dense row-major [num_rows, dim] arrays of float or double.
//  * Ids and offsets are int64. Bags follow torch.nn.functional.embedding_bag
//    with include_last_offset=False: bag b holds ids[offsets[b] .. end_b) where
//    end_b = offsets[b + 1] for b < n_bags - 1 and n_ids for the last bag.
//  * Every id is bounds-checked; an id outside [0, num_rows) throws
//    std::out_of_range naming the first bad id (lowest position). Bad offsets
//    or shapes throw std::invalid_argument. Nothing is read out of range.
//  * Results never depend on the thread count: each output row is computed by
//    exactly one thread, summing its terms in a fixed order (ascending
//    position in `ids`). No floating-point atomics.
//  * num_threads is already resolved (> 0), see metarec::resolve_num_threads.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "metarec/simd.h"

namespace metarec {

enum class PoolMode { Sum = 0, Mean = 1 };

// An allocator whose value-initialisation does nothing: large result buffers
// are written exactly once by a parallel kernel, so zeroing them first (and
// taking every page fault on one thread) would only cost time.
template <class T>
struct UninitAllocator : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = UninitAllocator<U>;
    };
    UninitAllocator() = default;
    template <class U>
    UninitAllocator(const UninitAllocator<U>&) noexcept {}
    template <class U>
    void construct(U* p) noexcept(std::is_nothrow_default_constructible<U>::value) {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};
template <class T>
using uninit_vector = std::vector<T, UninitAllocator<T>>;

// out[i, :] = table[ids[i], :] for i in [0, n_ids).
template <class T>
void gather(const T* table, std::int64_t num_rows, std::int64_t dim, const std::int64_t* ids,
            std::int64_t n_ids, T* out, int num_threads);

// Pooled bags: out[b, :] = sum_{j in bag b} w_j * table[ids[j], :], where
// w_j = weights[j] (weights may be null -> 1), times 1/|bag| for Mean.
// Empty bags give zeros. Weights are only allowed with PoolMode::Sum.
template <class T>
void embedding_bag(const T* table, std::int64_t num_rows, std::int64_t dim,
                   const std::int64_t* ids, std::int64_t n_ids, const std::int64_t* offsets,
                   std::int64_t n_bags, const T* weights, PoolMode mode, T* out, int num_threads);

// The same with the forward loop of an explicitly requested SIMD level
// (checked against the CPU: std::invalid_argument if it lacks it); for tests
// and benchmarks. The overload above uses simd::active_level(), selected once.
// Every level gives bit-identical results (no FMA contraction).
template <class T>
void embedding_bag(const T* table, std::int64_t num_rows, std::int64_t dim,
                   const std::int64_t* ids, std::int64_t n_ids, const std::int64_t* offsets,
                   std::int64_t n_bags, const T* weights, PoolMode mode, T* out, int num_threads,
                   simd::Level level);

// The level of the forward loop embedding_bag actually runs when asked for
// `level` (lower when that level's loop is not built or not worth it), and
// when using the active level.
simd::Level embedding_bag_kernel_level(simd::Level level);
simd::Level embedding_bag_kernel_level();

// Positions of `ids` grouped by row: rows[u] is the u-th distinct id
// (ascending), and perm[starts[u] .. starts[u + 1]) are the positions j with
// ids[j] == rows[u], in ascending order. When bag offsets are given, bags[s]
// is the bag holding position perm[s]. Deterministic (sequential); throws
// std::out_of_range naming the first id outside [0, num_rows).
struct RowGroups {
    std::vector<std::int64_t> rows;
    std::vector<std::int64_t> starts;
    std::vector<std::int64_t> perm;
    std::vector<std::int64_t> bags;
};
RowGroups group_by_row(const std::int64_t* ids, std::int64_t n_ids, std::int64_t num_rows,
                       const std::int64_t* offsets = nullptr, std::int64_t n_bags = 0);

// Gradient of embedding_bag w.r.t. the table, dense: grad_table [num_rows, dim]
// (fully overwritten; rows never looked up are zero).
template <class T>
void embedding_bag_backward_dense(const T* grad_out, std::int64_t n_bags, std::int64_t dim,
                                  const std::int64_t* ids, std::int64_t n_ids,
                                  const std::int64_t* offsets, const T* weights, PoolMode mode,
                                  std::int64_t num_rows, T* grad_table, int num_threads);

// The same gradient in sparse form: the distinct looked-up rows (ascending)
// and their gradient rows [rows.size(), dim].
template <class T>
struct SparseRows {
    std::vector<std::int64_t> rows;
    uninit_vector<T> values;
};
template <class T>
SparseRows<T> embedding_bag_backward_sparse(const T* grad_out, std::int64_t n_bags,
                                            std::int64_t dim, const std::int64_t* ids,
                                            std::int64_t n_ids, const std::int64_t* offsets,
                                            const T* weights, PoolMode mode,
                                            std::int64_t num_rows, int num_threads);

// Gradient of a weighted-sum embedding_bag w.r.t. the per-sample weights:
// out[j] = dot(grad_out[bag(j), :], table[ids[j], :]), summed over columns in
// ascending order.
template <class T>
void embedding_bag_weight_grad(const T* grad_out, std::int64_t n_bags, const T* table,
                               std::int64_t num_rows, std::int64_t dim, const std::int64_t* ids,
                               std::int64_t n_ids, const std::int64_t* offsets, T* out,
                               int num_threads);

// In-place sparse SGD: for every distinct r in rows, g_r = sum of grads[j]
// over the j with rows[j] == r (ascending j), then table[r] -= lr * g_r.
template <class T>
void sparse_sgd(T* table, std::int64_t num_rows, std::int64_t dim, const std::int64_t* rows,
                std::int64_t n, const T* grads, T lr, int num_threads);

// In-place row-wise Adagrad (FBGEMM's rowwise_adagrad): with g_r summed as in
// sparse_sgd, state[r] += mean_k(g_r[k]^2); table[r] -= lr * g_r / (sqrt(state[r]) + eps).
template <class T>
void sparse_adagrad(T* table, T* state, std::int64_t num_rows, std::int64_t dim,
                    const std::int64_t* rows, std::int64_t n, const T* grads, T lr, T eps,
                    int num_threads);

// Copies n_bytes from src to dst in parallel (memcpy per 1 MiB chunk); used
// to measure the machine's copy bandwidth next to the kernels (benchmarks).
void parallel_copy(const void* src, void* dst, std::int64_t n_bytes, int num_threads);

}  // namespace metarec
