// Batched inner loops for the linear-head model family, with exact reverse-mode
// derivatives (DESIGN.md, "The model family the C++ fast path covers").
//
// Per user u with support set S_u and query set Q_u over item ids:
//   f_i(theta) = p . h_i + b + c_i
//   L_u(theta) = mean_{i in S_u} loss(f_i, y_i) + l2/2 ||p||^2
//   theta_{t+1} = theta_t - alpha (elementwise) grad L_u(theta_t),  t = 0..T-1
// and the query predictions f_q(theta_T). Because f is linear in theta, the
// Hessian of L_u is (1/n) sum_i loss''_i [h_i;1][h_i;1]^T + diag(l2 I, 0), so the
// backward pass (Hessian-vector products included) is closed-form and needs only
// the stored trajectory theta_0..theta_T: O(T d) memory per user.
#pragma once

#include <cstdint>
#include <vector>

#include "metarec/simd.h"

namespace metarec {

enum class AdaptLoss { mse = 0, logistic = 1 };

// Second order = exact MAML; first order = inner gradients treated as constants.
enum class AdaptOrder { second = 0, first = 1 };

template <class T>
struct LinearHeadBatch {
    // Body: item representations and offsets.
    const T* H = nullptr;  // [n_items, d]
    const T* c = nullptr;  // [n_items]
    std::int64_t n_items = 0;
    std::int64_t d = 0;
    // Tasks: support and query sets as CSR over users.
    std::int64_t n_users = 0;
    const std::int64_t* support_indptr = nullptr;  // [n_users + 1]
    const std::int64_t* support_items = nullptr;
    const T* support_targets = nullptr;
    const std::int64_t* query_indptr = nullptr;  // [n_users + 1]
    const std::int64_t* query_items = nullptr;
    // theta_0: p0 [n_theta, d], b0 [n_theta] with n_theta = 1 (shared) or n_users.
    const T* p0 = nullptr;
    const T* b0 = nullptr;
    bool per_user_theta0 = false;
    // alpha: alpha_p [d] (per-parameter) or [1] (scalar, broadcast); alpha_b scalar.
    const T* alpha_p = nullptr;
    bool alpha_per_parameter = false;
    T alpha_b = 0;
    int steps = 0;
    T l2 = 0;
    AdaptLoss loss = AdaptLoss::mse;

    // Throws std::invalid_argument / std::out_of_range on inconsistent input.
    void validate() const;
};

// Forward: trajectory [n_users, steps + 1, d + 1] (theta_t = (p_t, b_t)) and
// query predictions [nnz(query)] at theta_T.
//
// The per-user loops run at simd::active_level(), or at an explicit `level`
// (throws std::invalid_argument when the CPU lacks it). Results are identical
// for any thread count at a given level, and equal up to rounding between
// levels.
template <class T>
void linear_head_forward(const LinearHeadBatch<T>& batch, T* trajectory, T* query_pred,
                         int num_threads);
template <class T>
void linear_head_forward(const LinearHeadBatch<T>& batch, T* trajectory, T* query_pred,
                         int num_threads, simd::Level level);

template <class T>
struct LinearHeadGrads {
    std::vector<T> p0;       // [n_theta, d]
    std::vector<T> b0;       // [n_theta]
    std::vector<T> alpha_p;  // [d] or [1]
    T alpha_b = 0;
    std::vector<T> H;  // [n_items, d]
    std::vector<T> c;  // [n_items]
};

// Backward: gradients of sum_q grad_query_pred[q] * f_q(theta_T) with respect to
// theta_0, alpha (only when alpha_grad; zeros otherwise, which saves a pass per
// step), H and c. Deterministic for any thread count: per-entry contributions
// are reduced per item in a fixed order.
template <class T>
LinearHeadGrads<T> linear_head_backward(const LinearHeadBatch<T>& batch, const T* trajectory,
                                        const T* grad_query_pred, AdaptOrder order,
                                        bool alpha_grad, int num_threads);
template <class T>
LinearHeadGrads<T> linear_head_backward(const LinearHeadBatch<T>& batch, const T* trajectory,
                                        const T* grad_query_pred, AdaptOrder order,
                                        bool alpha_grad, int num_threads, simd::Level level);

}  // namespace metarec
