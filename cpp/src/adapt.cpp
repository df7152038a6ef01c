#include "metarec/adapt.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "metarec/parallel.h"

namespace metarec {

namespace {

// Grain sizes: a chunk must carry enough work to pay for waking a thread, so a
// typical meta-batch (tens of users) runs on the calling thread alone.
constexpr std::int64_t kUsersPerChunk = 64;
constexpr std::int64_t kItemsPerChunk = 8192;

template <class T>
inline T sigmoid(T x) {
    if (x >= 0) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
}

// First and second derivative of the pointwise loss with respect to the prediction.
template <class T>
inline void loss_derivatives(AdaptLoss loss, T f, T y, T& d1, T& d2) {
    if (loss == AdaptLoss::mse) {
        d1 = T(2) * (f - y);
        d2 = T(2);
    } else {
        const T s = sigmoid(f);
        d1 = s - y;
        d2 = s * (T(1) - s);
    }
}

// `omp simd reduction` lets the compiler vectorise the sum (a fixed lane
// order, so results still do not depend on the thread count).
template <class T>
inline T dot(const T* a, const T* b, std::int64_t d) {
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (std::int64_t k = 0; k < d; ++k) acc += a[k] * b[k];
    return acc;
}

void check_indptr(const std::int64_t* indptr, std::int64_t n_users, const char* name) {
    if (indptr[0] != 0) throw std::invalid_argument(std::string(name) + " must start at 0");
    for (std::int64_t u = 0; u < n_users; ++u) {
        if (indptr[u + 1] < indptr[u]) {
            throw std::invalid_argument(std::string(name) + " decreases at row " + std::to_string(u));
        }
    }
}

void check_items(const std::int64_t* items, std::int64_t n, std::int64_t n_items, const char* name) {
    for (std::int64_t j = 0; j < n; ++j) {
        if (items[j] < 0 || items[j] >= n_items) {
            throw std::out_of_range(std::string(name) + " contains id " + std::to_string(items[j]) +
                                    ", outside [0, " + std::to_string(n_items) + ")");
        }
    }
}

// Gradient of the support objective at theta = (p, b): gp [d], returns gb.
template <class T>
T support_gradient(const LinearHeadBatch<T>& bt, std::int64_t u, const T* theta, T* gp) {
    const std::int64_t d = bt.d;
    const std::int64_t s0 = bt.support_indptr[u], s1 = bt.support_indptr[u + 1];
    const T inv_n = s1 > s0 ? T(1) / T(s1 - s0) : T(0);
    for (std::int64_t k = 0; k < d; ++k) gp[k] = 0;
    T gb = 0;
    for (std::int64_t j = s0; j < s1; ++j) {
        const std::int64_t item = bt.support_items[j];
        const T* h = bt.H + item * d;
        const T f = dot(theta, h, d) + theta[d] + bt.c[item];
        T d1, d2;
        loss_derivatives(bt.loss, f, bt.support_targets[j], d1, d2);
#pragma omp simd
        for (std::int64_t k = 0; k < d; ++k) gp[k] += d1 * h[k];
        gb += d1;
    }
    for (std::int64_t k = 0; k < d; ++k) gp[k] = gp[k] * inv_n + bt.l2 * theta[k];
    return gb * inv_n;
}

template <class T>
inline T alpha_at(const LinearHeadBatch<T>& bt, std::int64_t k) {
    return bt.alpha_per_parameter ? bt.alpha_p[k] : bt.alpha_p[0];
}

}  // namespace

template <class T>
void LinearHeadBatch<T>::validate() const {
    if (d < 1) throw std::invalid_argument("d must be >= 1, got " + std::to_string(d));
    if (n_items < 0 || n_users < 0) throw std::invalid_argument("negative sizes");
    if (steps < 0) throw std::invalid_argument("steps must be >= 0, got " + std::to_string(steps));
    check_indptr(support_indptr, n_users, "support indptr");
    check_indptr(query_indptr, n_users, "query indptr");
    check_items(support_items, support_indptr[n_users], n_items, "support items");
    check_items(query_items, query_indptr[n_users], n_items, "query items");
}

template <class T>
void linear_head_forward(const LinearHeadBatch<T>& bt, T* trajectory, T* query_pred, int num_threads) {
    bt.validate();
    const std::int64_t d = bt.d, width = d + 1, stride = (bt.steps + 1) * width;
    parallel_for(bt.n_users, resolve_num_threads(num_threads), kUsersPerChunk,
                 [&](std::int64_t begin, std::int64_t end) {
        std::vector<T> gp(static_cast<std::size_t>(d));
        for (std::int64_t u = begin; u < end; ++u) {
            T* traj = trajectory + u * stride;
            const std::int64_t src = bt.per_user_theta0 ? u : 0;
            for (std::int64_t k = 0; k < d; ++k) traj[k] = bt.p0[src * d + k];
            traj[d] = bt.b0[src];
            for (int t = 0; t < bt.steps; ++t) {
                const T* cur = traj + t * width;
                T* nxt = traj + (t + 1) * width;
                const T gb = support_gradient(bt, u, cur, gp.data());
                for (std::int64_t k = 0; k < d; ++k) nxt[k] = cur[k] - alpha_at(bt, k) * gp[k];
                nxt[d] = cur[d] - bt.alpha_b * gb;
            }
            const T* last = traj + bt.steps * width;
            for (std::int64_t j = bt.query_indptr[u]; j < bt.query_indptr[u + 1]; ++j) {
                const std::int64_t item = bt.query_items[j];
                query_pred[j] = dot(last, bt.H + item * d, d) + last[d] + bt.c[item];
            }
        }
    });
}

template <class T>
LinearHeadGrads<T> linear_head_backward(const LinearHeadBatch<T>& bt, const T* trajectory,
                                        const T* grad_query_pred, AdaptOrder order,
                                        bool alpha_grad, int num_threads) {
    bt.validate();
    const int threads = resolve_num_threads(num_threads);
    const std::int64_t d = bt.d, width = d + 1, stride = (bt.steps + 1) * width;
    const std::int64_t nnz_s = bt.support_indptr[bt.n_users];
    const std::int64_t nnz_q = bt.query_indptr[bt.n_users];
    const std::int64_t n_entries = nnz_s + nnz_q;
    // Per-entry body gradients of the support entries, reduced per item
    // afterwards in a fixed order (no races, no atomics). A query entry's
    // gradient, g_q * p_T, is formed during that reduction instead of stored.
    const bool second = order == AdaptOrder::second && bt.steps > 0;
    std::vector<T> entry_h(second ? static_cast<std::size_t>(nnz_s * d) : 0, T(0));
    std::vector<T> entry_c(second ? static_cast<std::size_t>(nnz_s) : 0, T(0));
    // Per-user adjoint of theta_0 and alpha contributions, reduced serially.
    std::vector<T> user_theta(static_cast<std::size_t>(bt.n_users * width));
    std::vector<T> user_alpha(static_cast<std::size_t>(bt.n_users * width), T(0));

    parallel_for(bt.n_users, threads, kUsersPerChunk, [&](std::int64_t begin, std::int64_t end) {
        std::vector<T> v(static_cast<std::size_t>(width)), w(static_cast<std::size_t>(width));
        std::vector<T> gp(static_cast<std::size_t>(d)), hw(static_cast<std::size_t>(d));
        for (std::int64_t u = begin; u < end; ++u) {
            const T* traj = trajectory + u * stride;
            // Query predictions f_q = p_T . h_q + b_T + c_q.
            for (std::int64_t k = 0; k < width; ++k) v[k] = 0;
            for (std::int64_t j = bt.query_indptr[u]; j < bt.query_indptr[u + 1]; ++j) {
                const T g = grad_query_pred[j];
                const T* h = bt.H + bt.query_items[j] * d;
#pragma omp simd
                for (std::int64_t k = 0; k < d; ++k) v[k] += g * h[k];
                v[d] += g;
            }
            T* ga = user_alpha.data() + u * width;
            const std::int64_t s0 = bt.support_indptr[u], s1 = bt.support_indptr[u + 1];
            const T inv_n = s1 > s0 ? T(1) / T(s1 - s0) : T(0);
            for (int t = bt.steps - 1; t >= 0; --t) {
                const T* cur = traj + t * width;
                if (alpha_grad) {
                    // d theta_{t+1} / d alpha = -g(theta_t).
                    const T gb = support_gradient(bt, u, cur, gp.data());
                    for (std::int64_t k = 0; k < d; ++k) ga[k] -= v[k] * gp[k];
                    ga[d] -= v[d] * gb;
                }
                if (!second) continue;
                for (std::int64_t k = 0; k < d; ++k) w[k] = alpha_at(bt, k) * v[k];
                w[d] = bt.alpha_b * v[d];
                // Hessian-vector product H_t w, and the body terms -d(w . g)/d(h_i, c_i).
                for (std::int64_t k = 0; k < d; ++k) hw[k] = bt.l2 * w[k];
                T hw_b = 0;
                for (std::int64_t j = s0; j < s1; ++j) {
                    const std::int64_t item = bt.support_items[j];
                    const T* h = bt.H + item * d;
                    const T f = dot(cur, h, d) + cur[d] + bt.c[item];
                    T d1, d2;
                    loss_derivatives(bt.loss, f, bt.support_targets[j], d1, d2);
                    const T s = dot(w.data(), h, d) + w[d];
                    const T coef = inv_n * d2 * s;
                    const T lin = inv_n * d1;
                    T* eh = entry_h.data() + j * d;
#pragma omp simd
                    for (std::int64_t k = 0; k < d; ++k) {
                        hw[k] += coef * h[k];
                        eh[k] -= coef * cur[k] + lin * w[k];
                    }
                    hw_b += coef;
                    entry_c[j] -= coef;
                }
                for (std::int64_t k = 0; k < d; ++k) v[k] -= hw[k];
                v[d] -= hw_b;
            }
            for (std::int64_t k = 0; k < width; ++k) user_theta[u * width + k] = v[k];
        }
    });

    LinearHeadGrads<T> out;
    const std::int64_t n_theta = bt.per_user_theta0 ? bt.n_users : 1;
    out.p0.assign(static_cast<std::size_t>(n_theta * d), T(0));
    out.b0.assign(static_cast<std::size_t>(n_theta), T(0));
    for (std::int64_t u = 0; u < bt.n_users; ++u) {  // fixed order: deterministic
        const std::int64_t dst = bt.per_user_theta0 ? u : 0;
        for (std::int64_t k = 0; k < d; ++k) out.p0[dst * d + k] += user_theta[u * width + k];
        out.b0[dst] += user_theta[u * width + d];
    }
    const std::int64_t n_alpha = bt.alpha_per_parameter ? d : 1;
    out.alpha_p.assign(static_cast<std::size_t>(n_alpha), T(0));
    for (std::int64_t u = 0; u < bt.n_users; ++u) {
        for (std::int64_t k = 0; k < d; ++k) out.alpha_p[bt.alpha_per_parameter ? k : 0] += user_alpha[u * width + k];
        out.alpha_b += user_alpha[u * width + d];
    }

    // Group entries (support entries first, then query entries) by item with a
    // stable counting sort, then reduce each item's row in that fixed order.
    std::vector<std::int64_t> query_user(static_cast<std::size_t>(nnz_q));
    for (std::int64_t u = 0; u < bt.n_users; ++u) {
        for (std::int64_t j = bt.query_indptr[u]; j < bt.query_indptr[u + 1]; ++j) query_user[j] = u;
    }
    const std::int64_t first_entry = second ? 0 : nnz_s;  // support entries carry nothing otherwise
    std::vector<std::int64_t> item_ptr(static_cast<std::size_t>(bt.n_items + 1), 0);
    auto entry_item = [&](std::int64_t e) {
        return e < nnz_s ? bt.support_items[e] : bt.query_items[e - nnz_s];
    };
    for (std::int64_t e = first_entry; e < n_entries; ++e) ++item_ptr[entry_item(e) + 1];
    for (std::int64_t i = 0; i < bt.n_items; ++i) item_ptr[i + 1] += item_ptr[i];
    std::vector<std::int64_t> order_by_item(static_cast<std::size_t>(n_entries - first_entry));
    {
        std::vector<std::int64_t> fill(item_ptr.begin(), item_ptr.end() - 1);
        for (std::int64_t e = first_entry; e < n_entries; ++e) order_by_item[fill[entry_item(e)]++] = e;
    }
    out.H.assign(static_cast<std::size_t>(bt.n_items * d), T(0));
    out.c.assign(static_cast<std::size_t>(bt.n_items), T(0));
    parallel_for(bt.n_items, threads, kItemsPerChunk, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) {
            T* row = out.H.data() + i * d;
            for (std::int64_t p = item_ptr[i]; p < item_ptr[i + 1]; ++p) {
                const std::int64_t e = order_by_item[p];
                if (e < nnz_s) {
                    const T* eh = entry_h.data() + e * d;
#pragma omp simd
                    for (std::int64_t k = 0; k < d; ++k) row[k] += eh[k];
                    out.c[i] += entry_c[e];
                } else {
                    const std::int64_t j = e - nnz_s;
                    const T g = grad_query_pred[j];
                    const T* last = trajectory + query_user[j] * stride + bt.steps * width;
#pragma omp simd
                    for (std::int64_t k = 0; k < d; ++k) row[k] += g * last[k];
                    out.c[i] += g;
                }
            }
        }
    });
    return out;
}

template struct LinearHeadBatch<float>;
template struct LinearHeadBatch<double>;
template void linear_head_forward<float>(const LinearHeadBatch<float>&, float*, float*, int);
template void linear_head_forward<double>(const LinearHeadBatch<double>&, double*, double*, int);
template LinearHeadGrads<float> linear_head_backward<float>(const LinearHeadBatch<float>&, const float*,
                                                            const float*, AdaptOrder, bool, int);
template LinearHeadGrads<double> linear_head_backward<double>(const LinearHeadBatch<double>&,
                                                              const double*, const double*,
                                                              AdaptOrder, bool, int);

}  // namespace metarec
