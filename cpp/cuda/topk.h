// CUDA top-k with exclusions, over explicit scores or fused with the inner
// products that produce them. Same conventions as the CPU kernels
// (cpp/include/metarec/topk.h): descending score, equal scores go to the
// lower item id, excluded items never appear, rows with fewer than k
// candidates are padded with id -1 and score -inf, scores come back as
// float32.
//
// Limits (std::invalid_argument -> ValueError): at most kMaxK = 1024 items are
// kept per row (k itself may be larger when the row has fewer candidates:
// the limit is on min(k, n_items)), and n_items < 2^31 - 1 (item ids are
// 32-bit inside the kernels).
//
// Pointers are device pointers, already validated by the Python layer
// (python/metarec_fast/ops/topk.py): shapes, dtypes, finiteness of queries,
// items and bias, and the exclusion pattern (indptr: n_rows + 1 entries from
// 0 to nnz, never decreasing; indices within [0, n_items), sorted per row).
// The kernels still clamp every exclusion range to [0, nnz), so a bad pattern
// gives wrong exclusions, never an out-of-range read. ex_indptr == nullptr
// means "no exclusions". Launches run on `stream` on `device`; only topk()
// synchronises (to report a NaN, as a ValueError naming its position).
#pragma once

#include <cstdint>

#include "common.cuh"

namespace metarec {
namespace cuda {

constexpr std::int64_t kTopkMaxK = 1024;

// Top-k of each row of scores (n_rows x n_cols, row-major, device memory).
// +-inf scores are allowed (an item scored -inf still beats padding); NaN
// raises std::invalid_argument naming the first one (row-major order).
// `slices` > 0 forces the number of column slices merged per row (testing);
// 0 chooses it from the shape and the device.
template <class T>
void topk(const T* scores, std::int64_t n_rows, std::int64_t n_cols, std::int64_t k,
          const std::int64_t* ex_indptr, const std::int64_t* ex_indices, std::int64_t nnz,
          std::int64_t* out_ids, float* out_scores, cudaStream_t stream, int device,
          int slices = 0);

// Fused top-k of queries (nq x d) . items (ni x d)^T + bias (ni, or nullptr).
// Each score is bias (or 0) followed by fused multiply-adds over d in order,
// exactly like the CPU's FMA (AVX2/AVX-512) kernels. Scores that come out NaN
// (inf - inf after an overflow) are skipped, as on the CPU. `slices` as for
// topk() (item slices).
template <class T>
void topk_dot(const T* queries, std::int64_t nq, const T* items, std::int64_t ni, std::int64_t d,
              const T* bias, std::int64_t k, const std::int64_t* ex_indptr,
              const std::int64_t* ex_indices, std::int64_t nnz, std::int64_t* out_ids,
              float* out_scores, cudaStream_t stream, int device, int slices = 0);

}  // namespace cuda
}  // namespace metarec
