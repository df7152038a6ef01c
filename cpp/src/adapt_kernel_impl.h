// The per-user forward and backward loops of the linear-head inner loop
// (metarec/adapt.h), written once with `omp simd` d-loops and compiled by each
// per-ISA translation unit (baseline, -mavx2 -mfma, -mavx512f) inside an
// anonymous namespace, so every function here has internal linkage.
//
// Within one user everything runs in a fixed order, so results do not depend
// on the thread count; they differ between ISA levels only by rounding
// (vector width of the reductions, fused multiply-adds).
#pragma once

inline float exp_(float x) { return __builtin_expf(x); }
inline double exp_(double x) { return __builtin_exp(x); }

template <class T>
inline T sigmoid(T x) {
    if (x >= 0) return T(1) / (T(1) + exp_(-x));
    const T e = exp_(x);
    return e / (T(1) + e);
}

// First and second derivative of the pointwise loss with respect to the prediction.
template <class T>
inline void loss_derivatives(::metarec::AdaptLoss loss, T f, T y, T& d1, T& d2) {
    if (loss == ::metarec::AdaptLoss::mse) {
        d1 = T(2) * (f - y);
        d2 = T(2);
    } else {
        const T s = sigmoid(f);
        d1 = s - y;
        d2 = s * (T(1) - s);
    }
}

// Dot products keep L independent partial sums (L = 128 bytes of lanes: four
// AVX2 or two AVX-512 vectors), so the FMA latency chains overlap, then add
// them in a fixed tree: the order depends only on d, never on threads.
template <class T>
constexpr int kLanes = static_cast<int>(128 / sizeof(T));

template <class T>
inline T tree_sum(T* acc) {
    constexpr int L = kLanes<T>;
#pragma GCC unroll 8
    for (int w = L / 2; w >= 1; w /= 2) {
#pragma omp simd
        for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
    }
    return acc[0];
}

template <class T>
inline T dot(const T* __restrict a, const T* __restrict b, std::int64_t d) {
    constexpr int L = kLanes<T>;
    T acc[L] = {};
    std::int64_t k = 0;
    for (; k + L <= d; k += L) {
#pragma omp simd
        for (int l = 0; l < L; ++l) acc[l] += a[k + l] * b[k + l];
    }
    T tail = 0;
    for (; k < d; ++k) tail += a[k] * b[k];
    return tree_sum(acc) + tail;
}

// Two dot products with the same h in one pass: a . h and b . h.
template <class T>
inline void dot2(const T* __restrict a, const T* __restrict b, const T* __restrict h, std::int64_t d,
                 T& ra, T& rb) {
    constexpr int L = kLanes<T>;
    T acc_a[L] = {}, acc_b[L] = {};
    std::int64_t k = 0;
    for (; k + L <= d; k += L) {
#pragma omp simd
        for (int l = 0; l < L; ++l) {
            acc_a[l] += a[k + l] * h[k + l];
            acc_b[l] += b[k + l] * h[k + l];
        }
    }
    T tail_a = 0, tail_b = 0;
    for (; k < d; ++k) {
        tail_a += a[k] * h[k];
        tail_b += b[k] * h[k];
    }
    ra = tree_sum(acc_a) + tail_a;
    rb = tree_sum(acc_b) + tail_b;
}

template <class T>
void forward_users(const ::metarec::LinearHeadBatch<T>& bt, std::int64_t begin, std::int64_t end,
                   T* __restrict gp, T* trajectory, T* query_pred) {
    const std::int64_t d = bt.d, width = d + 1, stride = (bt.steps + 1) * width;
    const T* __restrict H = bt.H;
    const T l2 = bt.l2;
    for (std::int64_t u = begin; u < end; ++u) {
        T* traj = trajectory + u * stride;
        const std::int64_t src = bt.per_user_theta0 ? u : 0;
        for (std::int64_t k = 0; k < d; ++k) traj[k] = bt.p0[src * d + k];
        traj[d] = bt.b0[src];
        const std::int64_t s0 = bt.support_indptr[u], s1 = bt.support_indptr[u + 1];
        const T inv_n = s1 > s0 ? T(1) / T(s1 - s0) : T(0);
        for (int t = 0; t < bt.steps; ++t) {
            const T* __restrict cur = traj + t * width;
            T* __restrict nxt = traj + (t + 1) * width;
            T gb = 0;
            for (std::int64_t j = s0; j < s1; ++j) {
                const std::int64_t item = bt.support_items[j];
                const T* __restrict h = H + item * d;
                const T f = dot(cur, h, d) + cur[d] + bt.c[item];
                T d1, d2;
                loss_derivatives(bt.loss, f, bt.support_targets[j], d1, d2);
                const T lin = inv_n * d1;
                if (j == s0) {
#pragma omp simd
                    for (std::int64_t k = 0; k < d; ++k) gp[k] = lin * h[k];
                } else {
#pragma omp simd
                    for (std::int64_t k = 0; k < d; ++k) gp[k] += lin * h[k];
                }
                gb += lin;
            }
            if (s1 == s0) {
                for (std::int64_t k = 0; k < d; ++k) gp[k] = 0;
            }
            if (bt.alpha_per_parameter) {
                const T* __restrict a = bt.alpha_p;
#pragma omp simd
                for (std::int64_t k = 0; k < d; ++k) nxt[k] = cur[k] - a[k] * (gp[k] + l2 * cur[k]);
            } else {
                const T a = bt.alpha_p[0];
#pragma omp simd
                for (std::int64_t k = 0; k < d; ++k) nxt[k] = cur[k] - a * (gp[k] + l2 * cur[k]);
            }
            nxt[d] = cur[d] - bt.alpha_b * gb;
        }
        const T* last = traj + bt.steps * width;
        for (std::int64_t j = bt.query_indptr[u]; j < bt.query_indptr[u + 1]; ++j) {
            const std::int64_t item = bt.query_items[j];
            query_pred[j] = dot(last, H + item * d, d) + last[d] + bt.c[item];
        }
    }
}

// One reverse step t for one user: given the adjoint v of theta_{t+1}, adds
// the alpha gradient -v * g(theta_t) to ga (AlphaGrad), and (Second) replaces
// v by the adjoint of theta_t, v - H_t (alpha v), writing / accumulating the
// support entries' body terms -d(w . g)/d(h_j, c_j) with w = alpha v.
// One pass over each support row h computes both dot products, a second pass
// does all the updates.
template <class T, bool Second, bool AlphaGrad>
void reverse_step(const ::metarec::LinearHeadBatch<T>& bt, const T* __restrict cur, std::int64_t s0,
                  std::int64_t s1, bool first, T* __restrict v, T* __restrict w, T* __restrict hw,
                  T* __restrict gp, T* __restrict ga, T* __restrict entry_h, T* __restrict entry_c) {
    const std::int64_t d = bt.d;
    const T* __restrict H = bt.H;
    const T inv_n = s1 > s0 ? T(1) / T(s1 - s0) : T(0);
    const T l2 = bt.l2;
    if (Second) {
        if (bt.alpha_per_parameter) {
#pragma omp simd
            for (std::int64_t k = 0; k < d; ++k) w[k] = bt.alpha_p[k] * v[k];
        } else {
            const T a = bt.alpha_p[0];
#pragma omp simd
            for (std::int64_t k = 0; k < d; ++k) w[k] = a * v[k];
        }
        w[d] = bt.alpha_b * v[d];
#pragma omp simd
        for (std::int64_t k = 0; k < d; ++k) hw[k] = l2 * w[k];
    }
    if (AlphaGrad) {
#pragma omp simd
        for (std::int64_t k = 0; k < d; ++k) gp[k] = l2 * cur[k];
    }
    T hw_b = 0, gb = 0;
    for (std::int64_t j = s0; j < s1; ++j) {
        const std::int64_t item = bt.support_items[j];
        const T* __restrict h = H + item * d;
        T f, s = 0;
        if (Second) {
            dot2(cur, w, h, d, f, s);
        } else {
            f = dot(cur, h, d);
        }
        f += cur[d] + bt.c[item];
        T d1, d2;
        loss_derivatives(bt.loss, f, bt.support_targets[j], d1, d2);
        const T lin = inv_n * d1;
        gb += lin;
        if (!Second) {
#pragma omp simd
            for (std::int64_t k = 0; k < d; ++k) gp[k] += lin * h[k];
            continue;
        }
        const T coef = inv_n * d2 * (s + w[d]);
        T* __restrict eh = entry_h + j * d;
        if (first) {
#pragma omp simd
            for (std::int64_t k = 0; k < d; ++k) {
                const T hk = h[k];
                hw[k] += coef * hk;
                if (AlphaGrad) gp[k] += lin * hk;
                eh[k] = -(coef * cur[k] + lin * w[k]);
            }
            entry_c[j] = -coef;
        } else {
#pragma omp simd
            for (std::int64_t k = 0; k < d; ++k) {
                const T hk = h[k];
                hw[k] += coef * hk;
                if (AlphaGrad) gp[k] += lin * hk;
                eh[k] -= coef * cur[k] + lin * w[k];
            }
            entry_c[j] -= coef;
        }
        hw_b += coef;
    }
    if (AlphaGrad) {
        // d theta_{t+1} / d alpha = -g(theta_t), with the adjoint of theta_{t+1}.
#pragma omp simd
        for (std::int64_t k = 0; k < d; ++k) ga[k] -= v[k] * gp[k];
        ga[d] -= v[d] * gb;
    }
    if (Second) {
#pragma omp simd
        for (std::int64_t k = 0; k < d; ++k) v[k] -= hw[k];
        v[d] -= hw_b;
    }
}

template <class T, bool Second, bool AlphaGrad>
void backward_users_impl(const ::metarec::LinearHeadBatch<T>& bt, const T* trajectory,
                         const T* grad_query_pred, std::int64_t begin, std::int64_t end, T* scratch,
                         T* entry_h, T* entry_c, T* user_theta, T* user_alpha) {
    const std::int64_t d = bt.d, width = d + 1, stride = (bt.steps + 1) * width;
    const T* __restrict H = bt.H;
    T* __restrict w = scratch;
    T* __restrict hw = scratch + width;
    T* __restrict gp = scratch + 2 * width;
    for (std::int64_t u = begin; u < end; ++u) {
        const T* traj = trajectory + u * stride;
        // v = d(sum_q g_q f_q)/d theta_T; accumulated in place in user_theta.
        T* __restrict v = user_theta + u * width;
        for (std::int64_t k = 0; k < width; ++k) v[k] = 0;
        for (std::int64_t j = bt.query_indptr[u]; j < bt.query_indptr[u + 1]; ++j) {
            const T g = grad_query_pred[j];
            const T* __restrict h = H + bt.query_items[j] * d;
#pragma omp simd
            for (std::int64_t k = 0; k < d; ++k) v[k] += g * h[k];
            v[d] += g;
        }
        T* __restrict ga = user_alpha + u * width;
        for (std::int64_t k = 0; k < width; ++k) ga[k] = 0;
        if (!Second && !AlphaGrad) continue;
        const std::int64_t s0 = bt.support_indptr[u], s1 = bt.support_indptr[u + 1];
        for (int t = bt.steps - 1; t >= 0; --t) {
            reverse_step<T, Second, AlphaGrad>(bt, traj + t * width, s0, s1, t == bt.steps - 1, v, w,
                                               hw, gp, ga, entry_h, entry_c);
        }
    }
}

template <class T>
void backward_users(const ::metarec::LinearHeadBatch<T>& bt, const T* trajectory,
                    const T* grad_query_pred, bool second, bool alpha_grad, std::int64_t begin,
                    std::int64_t end, T* scratch, T* entry_h, T* entry_c, T* user_theta,
                    T* user_alpha) {
    if (second) {
        if (alpha_grad) {
            backward_users_impl<T, true, true>(bt, trajectory, grad_query_pred, begin, end, scratch,
                                               entry_h, entry_c, user_theta, user_alpha);
        } else {
            backward_users_impl<T, true, false>(bt, trajectory, grad_query_pred, begin, end, scratch,
                                                entry_h, entry_c, user_theta, user_alpha);
        }
    } else if (alpha_grad) {
        backward_users_impl<T, false, true>(bt, trajectory, grad_query_pred, begin, end, scratch,
                                            entry_h, entry_c, user_theta, user_alpha);
    } else {
        backward_users_impl<T, false, false>(bt, trajectory, grad_query_pred, begin, end, scratch,
                                             entry_h, entry_c, user_theta, user_alpha);
    }
}

inline const ::metarec::adapt_detail::Kernels* make_kernels() {
    static const ::metarec::adapt_detail::Kernels k{{&forward_users<float>, &backward_users<float>},
                                                    {&forward_users<double>, &backward_users<double>}};
    return &k;
}
