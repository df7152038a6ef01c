// The per-user forward and backward loops of the linear-head inner loop
// (metarec/adapt.h), written once with `omp simd` d-loops and compiled by each
// per-ISA translation unit (baseline, -mavx2 -mfma, -mavx512f) inside an
// anonymous namespace, so every function here has internal linkage.
//
// Within one user everything runs in a fixed order, so results do not depend
// on the thread count; they differ between ISA levels only by rounding
// (vector width of the reductions, fused multiply-adds).
#pragma once

#define METAREC_ADAPT_INLINE inline __attribute__((always_inline))

#include "metarec/adapt_loss.h"

// Dot products keep four vectors of partial sums (GCC/Clang vector
// extensions, METAREC_ADAPT_VBYTES wide: 16 for the baseline, 32 for AVX2,
// 64 for AVX-512, set by the including translation unit), so the multiply-add
// latency chains overlap, then add the lanes in a fixed tree: the order
// depends only on d and the level, never on threads.
#ifndef METAREC_ADAPT_VBYTES
#error "define METAREC_ADAPT_VBYTES before including adapt_kernel_impl.h"
#endif

template <class T>
struct Vec;
template <>
struct Vec<float> {
    typedef float V __attribute__((vector_size(METAREC_ADAPT_VBYTES), aligned(4), __may_alias__));
    typedef float V32 __attribute__((vector_size(32)));
    typedef float V16 __attribute__((vector_size(16)));
    static METAREC_ADAPT_INLINE float finish(V16 q) { return (q[0] + q[2]) + (q[1] + q[3]); }
};
template <>
struct Vec<double> {
    typedef double V __attribute__((vector_size(METAREC_ADAPT_VBYTES), aligned(8), __may_alias__));
    typedef double V32 __attribute__((vector_size(32)));
    typedef double V16 __attribute__((vector_size(16)));
    static METAREC_ADAPT_INLINE double finish(V16 q) { return q[0] + q[1]; }
};

template <class T>
constexpr std::int64_t kLanes = static_cast<std::int64_t>(METAREC_ADAPT_VBYTES / sizeof(T));

template <class T>
METAREC_ADAPT_INLINE typename Vec<T>::V vload(const T* p) {
    // An unaligned vector load (the typedef is 4/8-byte aligned and may alias T).
    return *reinterpret_cast<const typename Vec<T>::V*>(p);
}

// Horizontal sum in a fixed tree: halve the vector down to 16 bytes, then
// Vec<T>::finish.
// (The wide vector is passed by address: its typedef's reduced alignment
// would be lost as a template argument.)
template <class Narrow>
METAREC_ADAPT_INLINE Narrow halve(const void* v) {
    Narrow lo, hi;
    __builtin_memcpy(&lo, v, sizeof(lo));
    __builtin_memcpy(&hi, static_cast<const char*>(v) + sizeof(lo), sizeof(hi));
    return lo + hi;
}

template <class T>
METAREC_ADAPT_INLINE T hsum(typename Vec<T>::V v) {
    using V32 = typename Vec<T>::V32;
    using V16 = typename Vec<T>::V16;
#if METAREC_ADAPT_VBYTES == 64
    const V32 h = halve<V32>(&v);
    return Vec<T>::finish(halve<V16>(&h));
#elif METAREC_ADAPT_VBYTES == 32
    (void)sizeof(V32);
    return Vec<T>::finish(halve<V16>(&v));
#else
    (void)sizeof(V32);
    V16 q;
    __builtin_memcpy(&q, &v, sizeof(q));
    return Vec<T>::finish(q);
#endif
}

template <class T>
METAREC_ADAPT_INLINE T dot(const T* __restrict a, const T* __restrict b, std::int64_t d) {
    using V = typename Vec<T>::V;
    constexpr std::int64_t L = kLanes<T>;
    V acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
    std::int64_t k = 0;
    for (; k + 4 * L <= d; k += 4 * L) {
        acc0 += vload(a + k) * vload(b + k);
        acc1 += vload(a + k + L) * vload(b + k + L);
        acc2 += vload(a + k + 2 * L) * vload(b + k + 2 * L);
        acc3 += vload(a + k + 3 * L) * vload(b + k + 3 * L);
    }
    for (; k + L <= d; k += L) acc0 += vload(a + k) * vload(b + k);
    T tail = 0;
    for (; k < d; ++k) tail += a[k] * b[k];
    return hsum<T>((acc0 + acc1) + (acc2 + acc3)) + tail;
}

// Two dot products with the same h in one pass: a . h and b . h.
template <class T>
METAREC_ADAPT_INLINE void dot2(const T* __restrict a, const T* __restrict b, const T* __restrict h,
                               std::int64_t d, T& ra, T& rb) {
    using V = typename Vec<T>::V;
    constexpr std::int64_t L = kLanes<T>;
    V a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
    std::int64_t k = 0;
    for (; k + 4 * L <= d; k += 4 * L) {
        const V h0 = vload(h + k), h1 = vload(h + k + L);
        const V h2 = vload(h + k + 2 * L), h3 = vload(h + k + 3 * L);
        a0 += vload(a + k) * h0;
        a1 += vload(a + k + L) * h1;
        a2 += vload(a + k + 2 * L) * h2;
        a3 += vload(a + k + 3 * L) * h3;
        b0 += vload(b + k) * h0;
        b1 += vload(b + k + L) * h1;
        b2 += vload(b + k + 2 * L) * h2;
        b3 += vload(b + k + 3 * L) * h3;
    }
    for (; k + L <= d; k += L) {
        const V h0 = vload(h + k);
        a0 += vload(a + k) * h0;
        b0 += vload(b + k) * h0;
    }
    T tail_a = 0, tail_b = 0;
    for (; k < d; ++k) {
        tail_a += a[k] * h[k];
        tail_b += b[k] * h[k];
    }
    ra = hsum<T>((a0 + a1) + (a2 + a3)) + tail_a;
    rb = hsum<T>((b0 + b1) + (b2 + b3)) + tail_b;
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
