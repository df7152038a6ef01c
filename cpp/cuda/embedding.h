// CUDA embedding kernels: the device twins of metarec/embedding.h (gather,
// pooled bags, their backward passes and the per-sample weight gradient).
//
// Same contract as the CPU kernels (see cpp/include/metarec/embedding.h):
//  * tables are dense row-major [num_rows, dim] float or double arrays; ids and
//    offsets are int64; bag b holds ids[offsets[b] .. end_b) with end_b =
//    offsets[b + 1] for b < n_bags - 1 and n_ids for the last bag
//    (include_last_offset=False); empty bags pool to zeros;
//  * every sum runs in the same order as the CPU's and every multiply and add
//    is rounded on its own (__fmul_rn/__fadd_rn, never an FMA), so results are
//    bit-identical to the CPU kernels, not only close:
//      forward   out[b] = (sum_j w_j * row_j, ascending j) * (1/|bag| for mean)
//      backward  grad[r] = sum over lookups j of r, ascending j, of c_j * grad_out[bag(j)]
//                (c_j = weights[j], 1/|bag| for mean, or plain grad_out for sum)
//      weights   out[j] = sum_k grad_out[bag(j), k] * table[ids[j], k], ascending k;
//  * the backward is deterministic and needs no floating-point atomics: the
//    (id, position) pairs are sorted by a stable CUB radix sort and one group of
//    threads reduces each distinct row's contributions in ascending position.
//
// Launchers take raw device pointers (from torch tensors), run asynchronously
// on the caller's `stream` on `device`, and never synchronise. Inputs are
// validated by the Python wrappers (python/metarec_fast/ops/embedding.py): ids
// in range, offsets monotone from 0 to at most n_ids, weights finite. The
// kernels still bound every access: an out-of-range id contributes nothing (it
// is never read), offsets are clamped into [0, n_ids], so bad input can give
// wrong numbers but never an out-of-bounds access (dense backward never writes
// outside grad_table).
#pragma once

#include <cstdint>

#include "common.cuh"

namespace metarec {
namespace cuda {

// out[i, :] = table[ids[i], :] for i in [0, n_ids).
template <class T>
void embedding_gather(const T* table, std::int64_t num_rows, std::int64_t dim,
                      const std::int64_t* ids, std::int64_t n_ids, T* out, cudaStream_t stream,
                      int device);

// Pooled bags: out[b, :] for b in [0, n_bags). `weights` may be null (-> 1);
// weights with mean are rejected (std::invalid_argument) like on the CPU.
template <class T>
void embedding_bag_forward(const T* table, std::int64_t num_rows, std::int64_t dim,
                           const std::int64_t* ids, std::int64_t n_ids,
                           const std::int64_t* offsets, std::int64_t n_bags, const T* weights,
                           bool mean, T* out, cudaStream_t stream, int device);

// Input checks for the Python wrappers, in one kernel: writes 4 int64 words
// to `result` (device): the lowest position of an id outside [0, num_rows)
// (-1 if none), the lowest b >= 1 with offsets[b] < offsets[b - 1] (-1 if
// none), offsets[0] and offsets[n_bags - 1] (unwritten when n_bags == 0).
// `offsets` may be null when n_bags == 0.
void embedding_check(const std::int64_t* ids, std::int64_t n_ids, std::int64_t num_rows,
                     const std::int64_t* offsets, std::int64_t n_bags, std::int64_t* result,
                     cudaStream_t stream, int device);

// The id check alone (gather: no bags): writes one int64 word to `result`, the
// lowest position of an id outside [0, num_rows) or -1.
void embedding_check_ids(const std::int64_t* ids, std::int64_t n_ids, std::int64_t num_rows,
                         std::int64_t* result, cudaStream_t stream, int device);

// ---------------------------------------------------------------------------
// Backward: two steps sharing one int64 workspace of
// group_workspace_words(n_ids) words (allocated by the caller on the device).
//
// 1. embedding_group: sorts the lookups by row and groups them. Afterwards the
//    workspace holds, at the word offsets below, the distinct rows in
//    ascending order (rows, n_unique valid), the group starts (starts,
//    n_unique + 1 valid) and n_unique itself (one word). The caller may read
//    n_unique (a synchronisation) to size a sparse result, or not at all.
// 2. embedding_bag_backward: one group of threads per distinct row sums its
//    contributions in ascending position order, into either a dense
//    grad_table [num_rows, dim] (zero-filled first, looked-up rows
//    overwritten) or sparse values [n_unique, dim] (row u of `dest` belongs to
//    rows[u]). `n_launch` is an upper bound on n_unique known on the host
//    (n_unique itself for sparse, n_ids for dense); rows u >= n_unique (read
//    on the device) are skipped.
struct GroupLayout {
    std::int64_t words;           // total workspace size in int64 words
    std::int64_t sorted_rows;     // [n_ids] ids sorted ascending (stable)
    std::int64_t perm;            // [n_ids] positions in that order
    std::int64_t scratch;         // [n_ids] iota for the sort, then head flags
    std::int64_t bag_of;          // [n_ids] bag of each position
    std::int64_t segment;         // [n_ids] inclusive scan of the head flags
    std::int64_t rows;            // [n_ids] distinct rows (first n_unique valid)
    std::int64_t starts;          // [n_ids + 1] group starts into sorted_rows/perm
    std::int64_t n_unique;        // [1]
};
GroupLayout group_layout(std::int64_t n_ids);

void embedding_group(const std::int64_t* ids, std::int64_t n_ids, const std::int64_t* offsets,
                     std::int64_t n_bags, std::int64_t num_rows, std::int64_t* workspace,
                     cudaStream_t stream, int device);

template <class T>
void embedding_bag_backward(const T* grad_out, std::int64_t n_bags, std::int64_t dim,
                            const std::int64_t* offsets, std::int64_t n_ids, const T* weights,
                            bool mean, const std::int64_t* workspace, std::int64_t n_launch,
                            bool dense, std::int64_t num_rows, T* dest, cudaStream_t stream,
                            int device);

// Gradient of a weighted-sum embedding_bag w.r.t. the per-sample weights:
// out[j] = dot(grad_out[bag(j), :], table[ids[j], :]), columns in ascending order.
template <class T>
void embedding_bag_weight_grad(const T* grad_out, std::int64_t n_bags, const T* table,
                               std::int64_t num_rows, std::int64_t dim, const std::int64_t* ids,
                               std::int64_t n_ids, const std::int64_t* offsets, T* out,
                               cudaStream_t stream, int device);

}  // namespace cuda
}  // namespace metarec
