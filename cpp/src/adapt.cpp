#include "metarec/adapt.h"

#include <memory>
#include <stdexcept>
#include <string>

#include "adapt_kernel.h"
#include "metarec/parallel.h"
#include "metarec/simd.h"

namespace metarec {

namespace {

// Grain sizes: a chunk must carry enough work to pay for waking a thread, so a
// typical meta-batch (tens of users) runs on the calling thread alone.
constexpr std::int64_t kUsersPerChunk = 64;
// Body-gradient reduction: below this many entry elements, one thread.
constexpr std::int64_t kEntryGrain = 1 << 16;

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

template <class T>
const adapt_detail::UserKernels<T>& pick(const adapt_detail::Kernels* k);
template <>
const adapt_detail::UserKernels<float>& pick<float>(const adapt_detail::Kernels* k) { return k->f32; }
template <>
const adapt_detail::UserKernels<double>& pick<double>(const adapt_detail::Kernels* k) { return k->f64; }

// The per-user loops for `level` (checked against the CPU); a level whose
// translation unit was built without its instruction set falls back to the
// next lower one.
template <class T>
const adapt_detail::UserKernels<T>& pick_kernels(simd::Level level) {
    simd::checked(level);
    const adapt_detail::Kernels* k = nullptr;
    if (level == simd::Level::avx512) k = adapt_detail::kernels_avx512();
    if (k == nullptr && static_cast<int>(level) >= static_cast<int>(simd::Level::avx2)) {
        k = adapt_detail::kernels_avx2();
    }
    if (k == nullptr) k = adapt_detail::kernels_generic();
    return pick<T>(k);
}

// Uninitialised buffer for arrays the kernels fully overwrite.
template <class T>
std::unique_ptr<T[]> uninit(std::int64_t n) {
    return std::unique_ptr<T[]>(new T[static_cast<std::size_t>(n > 0 ? n : 0)]);
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
void linear_head_forward(const LinearHeadBatch<T>& bt, T* trajectory, T* query_pred, int num_threads,
                         simd::Level level) {
    bt.validate();
    const auto& kern = pick_kernels<T>(level);
    parallel_for(bt.n_users, resolve_num_threads(num_threads), kUsersPerChunk,
                 [&](std::int64_t begin, std::int64_t end) {
        auto gp = uninit<T>(bt.d);
        kern.forward(bt, begin, end, gp.get(), trajectory, query_pred);
    });
}

template <class T>
void linear_head_forward(const LinearHeadBatch<T>& bt, T* trajectory, T* query_pred, int num_threads) {
    linear_head_forward(bt, trajectory, query_pred, num_threads, simd::active_level());
}

template <class T>
LinearHeadGrads<T> linear_head_backward(const LinearHeadBatch<T>& bt, const T* trajectory,
                                        const T* grad_query_pred, AdaptOrder order,
                                        bool alpha_grad, int num_threads, simd::Level level) {
    bt.validate();
    const int threads = resolve_num_threads(num_threads);
    const std::int64_t d = bt.d, width = d + 1, stride = (bt.steps + 1) * width;
    const std::int64_t nnz_s = bt.support_indptr[bt.n_users];
    const std::int64_t nnz_q = bt.query_indptr[bt.n_users];
    // Per-entry body gradients of the support entries, reduced per item
    // afterwards in a fixed order (no races, no atomics). A query entry's
    // gradient, g_q * p_T, is formed during that reduction instead of stored.
    const bool second = order == AdaptOrder::second && bt.steps > 0;
    // Fully overwritten by the per-user loops: no zero fill.
    auto entry_h = uninit<T>(second ? nnz_s * d : 0);
    auto entry_c = uninit<T>(second ? nnz_s : 0);
    // Per-user adjoint of theta_0 and alpha contributions, reduced serially.
    auto user_theta = uninit<T>(bt.n_users * width);
    auto user_alpha = uninit<T>(bt.n_users * width);

    const auto& kern = pick_kernels<T>(level);
    parallel_for(bt.n_users, threads, kUsersPerChunk, [&](std::int64_t begin, std::int64_t end) {
        auto scratch = uninit<T>(4 * width);
        kern.backward(bt, trajectory, grad_query_pred, second, alpha_grad, begin, end, scratch.get(),
                      entry_h.get(), entry_c.get(), user_theta.get(), user_alpha.get());
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

    // Body gradients: every item's row sums its entries in entry order
    // (support entries by index, then query entries by index; a query entry's
    // gradient is g_q * p_T of its user). Threads own contiguous item ranges
    // and each scans all entries, reading them sequentially and skipping
    // other ranges' items, so the per-item order, and hence the result, does
    // not depend on the thread count.
    out.H.assign(static_cast<std::size_t>(bt.n_items * d), T(0));
    out.c.assign(static_cast<std::size_t>(bt.n_items), T(0));
    const std::int64_t n_entries = (second ? nnz_s : 0) + nnz_q;
    const std::int64_t parts = n_entries * d >= kEntryGrain ? threads : 1;
    parallel_for(parts, threads, 1, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t part = begin; part < end; ++part) {
            const std::int64_t lo = bt.n_items * part / parts, hi = bt.n_items * (part + 1) / parts;
            T* __restrict gH = out.H.data();
            T* __restrict gc = out.c.data();
            if (second) {
                for (std::int64_t j = 0; j < nnz_s; ++j) {
                    const std::int64_t i = bt.support_items[j];
                    if (i < lo || i >= hi) continue;
                    T* __restrict row = gH + i * d;
                    const T* __restrict eh = entry_h.get() + j * d;
#pragma omp simd
                    for (std::int64_t k = 0; k < d; ++k) row[k] += eh[k];
                    gc[i] += entry_c[j];
                }
            }
            for (std::int64_t u = 0; u < bt.n_users; ++u) {
                const T* __restrict last = trajectory + u * stride + bt.steps * width;
                for (std::int64_t j = bt.query_indptr[u]; j < bt.query_indptr[u + 1]; ++j) {
                    const std::int64_t i = bt.query_items[j];
                    if (i < lo || i >= hi) continue;
                    const T g = grad_query_pred[j];
                    T* __restrict row = gH + i * d;
#pragma omp simd
                    for (std::int64_t k = 0; k < d; ++k) row[k] += g * last[k];
                    gc[i] += g;
                }
            }
        }
    });
    return out;
}

template <class T>
LinearHeadGrads<T> linear_head_backward(const LinearHeadBatch<T>& bt, const T* trajectory,
                                        const T* grad_query_pred, AdaptOrder order,
                                        bool alpha_grad, int num_threads) {
    return linear_head_backward(bt, trajectory, grad_query_pred, order, alpha_grad, num_threads,
                                simd::active_level());
}

template struct LinearHeadBatch<float>;
template struct LinearHeadBatch<double>;
template void linear_head_forward<float>(const LinearHeadBatch<float>&, float*, float*, int);
template void linear_head_forward<double>(const LinearHeadBatch<double>&, double*, double*, int);
template void linear_head_forward<float>(const LinearHeadBatch<float>&, float*, float*, int, simd::Level);
template void linear_head_forward<double>(const LinearHeadBatch<double>&, double*, double*, int,
                                          simd::Level);
template LinearHeadGrads<float> linear_head_backward<float>(const LinearHeadBatch<float>&, const float*,
                                                            const float*, AdaptOrder, bool, int,
                                                            simd::Level);
template LinearHeadGrads<double> linear_head_backward<double>(const LinearHeadBatch<double>&,
                                                              const double*, const double*,
                                                              AdaptOrder, bool, int, simd::Level);
template LinearHeadGrads<float> linear_head_backward<float>(const LinearHeadBatch<float>&, const float*,
                                                            const float*, AdaptOrder, bool, int);
template LinearHeadGrads<double> linear_head_backward<double>(const LinearHeadBatch<double>&,
                                                              const double*, const double*,
                                                              AdaptOrder, bool, int);

}  // namespace metarec
