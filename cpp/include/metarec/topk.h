// Top-k selection with exclusions, over explicit scores or fused with the
// inner products that produce them.
//
// Conventions (shared with the Python API):
//  * results are sorted by descending score; equal scores go to the lower
//    item id;
//  * excluded items (a CSR pattern, one row per query) never appear;
//  * with fewer than k candidates, the tail is padded with id -1 and score
//    -infinity;
//  * results do not depend on the thread count (each row is owned by one
//    thread and scanned in increasing item id order).
#pragma once

#include <cstdint>

#include "metarec/simd.h"

namespace metarec {

// Items to leave out, per row: indices[indptr[r] .. indptr[r+1]) sorted
// ascending (duplicates allowed). indptr == nullptr means "no exclusions".
struct Exclusion {
    const std::int64_t* indptr = nullptr;
    const std::int64_t* indices = nullptr;
    std::int64_t nnz = 0;
};

// Validates an exclusion pattern for n_rows x n_cols: indptr starts at 0,
// never decreases and ends at nnz (std::invalid_argument); every index lies
// in [0, n_cols) (std::out_of_range); rows are sorted (std::invalid_argument).
void check_exclusion(const Exclusion& excl, std::int64_t n_rows, std::int64_t n_cols);

// Top-k of each row of `scores` (n_rows x n_cols, row-major). Scores may be
// +-inf (an item scored -inf still beats padding) but not NaN.
// Writes out_ids[n_rows * k] and out_scores[n_rows * k].
template <class T>
void topk(const T* scores, std::int64_t n_rows, std::int64_t n_cols, std::int64_t k,
          const Exclusion& excl, int num_threads, std::int64_t* out_ids, float* out_scores);

// Fused top-k of queries (nq x d) . items (ni x d)^T + bias (ni, may be
// nullptr). The score matrix is never materialised: tiles of queries x items
// are computed in registers by a SIMD micro-kernel of the given level and
// scanned against each query's current k-th score. Items are packed into
// NR-wide panels (once for many queries, block by block for few, when the
// catalogue is also split into slices merged per query). Items holding NaN
// or inf raise std::invalid_argument naming the first one; queries and bias
// are validated by the caller.
template <class T>
void topk_dot(const T* queries, std::int64_t nq, const T* items, std::int64_t ni, std::int64_t d,
              const T* bias, std::int64_t k, const Exclusion& excl, int num_threads,
              simd::Level level, std::int64_t* out_ids, float* out_scores);

// The full score matrix (nq x ni) computed by exactly the arithmetic topk_dot
// uses at `level` (bias first, then fused multiply-adds over d in order).
// Meant for tests: topk(dot_scores(...)) == topk_dot(...) bit for bit.
template <class T>
void dot_scores(const T* queries, std::int64_t nq, const T* items, std::int64_t ni, std::int64_t d,
                const T* bias, int num_threads, simd::Level level, T* out);

}  // namespace metarec
