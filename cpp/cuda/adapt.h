// CUDA twin of the batched linear-head inner loop (metarec/adapt.h): the same
// forward (trajectory + query predictions) and the same exact backward
// (second order with Hessian-vector products, or first order), for float and
// double, on the caller's stream.
//
// Every pointer in the LinearHeadBatch<T> (H, c, CSR arrays, p0, b0, alpha_p)
// and every output is a DEVICE pointer; the scalars (sizes, alpha_b, l2,
// steps, loss) are host values. nnz_support / nnz_query are the lengths of the
// support / query item arrays (the host knows them from the tensors' shapes).
//
// Bounds: each launcher first checks the CSR structure on the device (indptr
// starts at 0, never decreases, ends at nnz; item ids in [0, n_items)) and
// reads the verdict back (one stream synchronisation), so no kernel ever
// reads out of range: std::invalid_argument (ValueError) / std::out_of_range
// (IndexError) with the CPU kernel's messages. Sizes must otherwise match the
// documented shapes (the Python wrappers check them).
//
// Determinism: no floating-point atomics. Per-user work runs in one warp in a
// fixed order; sums over users (shared theta_0, alpha) and over the entries of
// an item (H and c gradients) are reduced in a fixed order, so results are
// bitwise reproducible run to run on the same GPU and launch configuration.
// They equal the CPU results up to rounding (different summation order).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "metarec/adapt.h"

namespace metarec {
namespace cuda {

// Forward: trajectory [n_users, steps + 1, d + 1] and query_pred [nnz_query],
// both fully overwritten.
template <class T>
void linear_head_forward(const LinearHeadBatch<T>& batch, std::int64_t nnz_support,
                         std::int64_t nnz_query, T* trajectory, T* query_pred, cudaStream_t stream,
                         int device);

// Caller-allocated device outputs of the backward, fully overwritten (zeros
// where there is no gradient, e.g. alpha without alpha_grad).
template <class T>
struct LinearHeadGradBuffers {
    T* p0 = nullptr;       // [n_theta, d]
    T* b0 = nullptr;       // [n_theta]
    T* alpha_p = nullptr;  // [d] when alpha_per_parameter, else [1]
    T* alpha_b = nullptr;  // [1]
    T* H = nullptr;        // [n_items, d]
    T* c = nullptr;        // [n_items]
};

// Backward: gradients of sum_q grad_query_pred[q] * f_q(theta_T) with respect
// to theta_0, alpha (only when alpha_grad), H and c, like
// metarec::linear_head_backward. `trajectory` is the forward's output.
template <class T>
void linear_head_backward(const LinearHeadBatch<T>& batch, std::int64_t nnz_support,
                          std::int64_t nnz_query, const T* trajectory, const T* grad_query_pred,
                          AdaptOrder order, bool alpha_grad, const LinearHeadGradBuffers<T>& out,
                          cudaStream_t stream, int device);

}  // namespace cuda
}  // namespace metarec
