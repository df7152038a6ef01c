// Runs the CUDA linear-head launchers and kernels of cpp/cuda/adapt.cu under
// the host emulation (tests/cuda_emu/cuda_runtime.h): one warp per user with
// real 32-lane shuffle rendezvous, 32 x 32 column-sum blocks with a block
// barrier, the CSR validation kernels with atomicMin, and the CUB radix sort
// stub. Built by tests/test_cuda_emulated.py twice: as a shared library with
// the C ABI below (ctypes; the test compares the results with the CPU kernels
// of metarec_fast._core, up to rounding: the CUDA twin sums in another
// order), and with -DMETAREC_EMU_MAIN -fsanitize=address,undefined as a
// stand-alone stress run (end of this file).
// Scratch from cudaMallocAsync is filled with NaN (emu::poison 0xFF), so a
// kernel that reads scratch it did not write yields NaN.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_runtime.h>

#include "adapt.cu"

using i64 = std::int64_t;

namespace {

std::string g_error;

// 0 on success, else 1 (ValueError), 2 (IndexError) or 3 (anything else, e.g.
// an emulated deadlock), message in emu_last_error().
template <class F>
int guarded(F&& f) {
    try {
        f();
        return 0;
    } catch (const std::invalid_argument& e) {
        g_error = e.what();
        return 1;
    } catch (const std::out_of_range& e) {
        g_error = e.what();
        return 2;
    } catch (const std::exception& e) {
        g_error = e.what();
        return 3;
    }
}

// The batch as the bindings (cpp/bindings/adapt.cpp) build it.
#define EMU_BATCH_PARAMS                                                                                   \
    const void *H, const void *c, i64 n_items, i64 d, i64 n_users, const i64 *s_indptr, const i64 *s_items, \
        const void *s_targets, i64 nnz_s, const i64 *q_indptr, const i64 *q_items, i64 nnz_q, const void *p0, \
        const void *b0, int per_user, const void *alpha_p, i64 n_alpha, double alpha_b, int steps, double l2, \
        int loss
#define EMU_BATCH_ARGS                                                                                          \
    H, c, n_items, d, n_users, s_indptr, s_items, s_targets, nnz_s, q_indptr, q_items, nnz_q, p0, b0, per_user, \
        alpha_p, n_alpha, alpha_b, steps, l2, loss

// The batch as the bindings (cpp/bindings/adapt.cpp) build it.
template <class T>
metarec::LinearHeadBatch<T> batch(EMU_BATCH_PARAMS) {
    (void)nnz_s;  // the launchers take them separately
    (void)nnz_q;
    metarec::LinearHeadBatch<T> b;
    b.H = static_cast<const T*>(H);
    b.c = static_cast<const T*>(c);
    b.n_items = n_items;
    b.d = d;
    b.n_users = n_users;
    b.support_indptr = s_indptr;
    b.support_items = s_items;
    b.support_targets = static_cast<const T*>(s_targets);
    b.query_indptr = q_indptr;
    b.query_items = q_items;
    b.p0 = static_cast<const T*>(p0);
    b.b0 = static_cast<const T*>(b0);
    b.per_user_theta0 = per_user != 0;
    b.alpha_p = static_cast<const T*>(alpha_p);
    b.alpha_per_parameter = n_alpha == d && d > 1;
    b.alpha_b = static_cast<T>(alpha_b);
    b.steps = steps;
    b.l2 = static_cast<T>(l2);
    b.loss = loss == 1 ? metarec::AdaptLoss::logistic : metarec::AdaptLoss::mse;
    return b;
}

template <class T>
void forward(EMU_BATCH_PARAMS, void* traj, void* pred) {
    const auto b = batch<T>(EMU_BATCH_ARGS);
    metarec::cuda::linear_head_forward<T>(b, nnz_s, nnz_q, static_cast<T*>(traj), static_cast<T*>(pred), nullptr,
                                          0);
}

template <class T>
void backward(EMU_BATCH_PARAMS, const void* traj, const void* grad_pred, int second, int alpha_grad, void* g_p0,
              void* g_b0, void* g_alpha_p, void* g_alpha_b, void* g_H, void* g_c) {
    const auto b = batch<T>(EMU_BATCH_ARGS);
    metarec::cuda::LinearHeadGradBuffers<T> out;
    out.p0 = static_cast<T*>(g_p0);
    out.b0 = static_cast<T*>(g_b0);
    out.alpha_p = static_cast<T*>(g_alpha_p);
    out.alpha_b = static_cast<T*>(g_alpha_b);
    out.H = static_cast<T*>(g_H);
    out.c = static_cast<T*>(g_c);
    metarec::cuda::linear_head_backward<T>(b, nnz_s, nnz_q, static_cast<const T*>(traj),
                                           static_cast<const T*>(grad_pred),
                                           second ? metarec::AdaptOrder::second : metarec::AdaptOrder::first,
                                           alpha_grad != 0, out, nullptr, 0);
}

}  // namespace

// C ABI for ctypes: `f64` selects double, else float; pointers are host
// addresses of C-contiguous arrays shaped like the CPU bindings' arguments
// (alpha_p has n_alpha = 1 or d entries); loss 0 = mse, 1 = logistic.
extern "C" {

const char* emu_last_error() { return g_error.c_str(); }
long long emu_launches() { return emu::launches; }
long long emu_threads_run() { return emu::fibers_run; }
void emu_set_sm_count(int n) { emu::sm_count = n; }

int emu_forward(int f64, EMU_BATCH_PARAMS, void* traj, void* pred) {
    return guarded([&] {
        if (f64) {
            forward<double>(EMU_BATCH_ARGS, traj, pred);
        } else {
            forward<float>(EMU_BATCH_ARGS, traj, pred);
        }
    });
}

int emu_backward(int f64, EMU_BATCH_PARAMS, const void* traj, const void* grad_pred, int second, int alpha_grad,
                 void* g_p0, void* g_b0, void* g_alpha_p, void* g_alpha_b, void* g_H, void* g_c) {
    return guarded([&] {
        if (f64) {
            backward<double>(EMU_BATCH_ARGS, traj, grad_pred, second, alpha_grad, g_p0, g_b0,
                             g_alpha_p, g_alpha_b, g_H, g_c);
        } else {
            backward<float>(EMU_BATCH_ARGS, traj, grad_pred, second, alpha_grad, g_p0, g_b0,
                            g_alpha_p, g_alpha_b, g_H, g_c);
        }
    });
}

}  // extern "C"

#ifdef METAREC_EMU_MAIN
// Stand-alone stress run for AddressSanitizer + UBSan (tests/test_cuda_emulated.py
// builds it with -fsanitize=address,undefined): random batches (empty users,
// items and sets, d across the register-slot boundaries and the scratch path,
// 1 to 3 fake SMs, bad ids and indptr) on buffers of exactly the documented
// sizes. Any read or write outside them aborts the run; every output must be
// finite (scratch is NaN-poisoned, so a read of unwritten scratch that reaches
// a result shows up as NaN), and bad input must raise, not crash.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

namespace {

std::mt19937_64 g_rng(12345);
i64 uniform(i64 n) { return n <= 0 ? 0 : static_cast<i64>(g_rng() % static_cast<std::uint64_t>(n)); }
int failures = 0;

// Exactly n elements on the heap; the redzone follows the last one.
template <class T>
struct Buf {
    std::unique_ptr<T[]> mem;
    explicit Buf(i64 n, T fill = T(0)) : mem(new T[static_cast<std::size_t>(n > 0 ? n : 0)]) {
        for (i64 i = 0; i < n; ++i) mem[static_cast<std::size_t>(i)] = fill;
    }
    T* p() const { return mem.get(); }
};

template <class T>
bool finite(const Buf<T>& b, i64 n) {
    for (i64 i = 0; i < n; ++i) {
        if (!std::isfinite(static_cast<double>(b.p()[i]))) return false;
    }
    return true;
}

template <class T>
void run_one(int round) {
    const i64 dims[] = {1, 2, 5, 31, 32, 33, 64, 65, 128, 129, 256, 257, 300};
    const i64 d = dims[uniform(13)];
    const i64 n_users = uniform(5) == 0 ? uniform(2) : uniform(40);
    const i64 n_items = uniform(6) == 0 ? 0 : 1 + uniform(30);
    const int steps = static_cast<int>(uniform(4));
    const bool per_user = uniform(2) == 1, per_param = uniform(2) == 1, second = uniform(2) == 1;
    const bool alpha_grad = uniform(2) == 1;
    const int loss = static_cast<int>(uniform(2));
    const bool bad = round % 7 == 6;
    emu::sm_count = 1 + static_cast<int>(uniform(3));
    std::vector<i64> s_ptr{0}, q_ptr{0};
    for (i64 u = 0; u < n_users; ++u) {
        s_ptr.push_back(s_ptr.back() + (n_items == 0 ? 0 : uniform(5)));
        q_ptr.push_back(q_ptr.back() + (n_items == 0 ? 0 : uniform(4)));
    }
    const i64 nnz_s = s_ptr.back(), nnz_q = q_ptr.back();
    Buf<i64> s_indptr(n_users + 1), q_indptr(n_users + 1), s_items(nnz_s), q_items(nnz_q);
    for (i64 u = 0; u <= n_users; ++u) {
        s_indptr.p()[u] = s_ptr[static_cast<std::size_t>(u)];
        q_indptr.p()[u] = q_ptr[static_cast<std::size_t>(u)];
    }
    for (i64 j = 0; j < nnz_s; ++j) s_items.p()[j] = uniform(n_items);
    for (i64 j = 0; j < nnz_q; ++j) q_items.p()[j] = uniform(n_items);
    if (bad) {
        const i64 kind = uniform(4);
        if (kind == 0 && nnz_s > 0) s_items.p()[uniform(nnz_s)] = n_items + uniform(3);
        if (kind == 1 && nnz_q > 0) q_items.p()[uniform(nnz_q)] = -1 - uniform(3);
        if (kind == 2 && n_users > 1) s_indptr.p()[1 + uniform(n_users - 1)] = nnz_s + 5;
        if (kind == 3) q_indptr.p()[0] = 1;
    }
    std::normal_distribution<double> nd;
    const i64 n_theta = per_user ? n_users : 1, n_alpha = per_param ? d : 1;
    Buf<T> H(n_items * d), c(n_items), s_t(nnz_s), p0(n_theta * d), b0(n_theta), alpha(n_alpha), gq(nnz_q);
    for (i64 i = 0; i < n_items * d; ++i) H.p()[i] = static_cast<T>(nd(g_rng) * 0.3 / std::sqrt(double(d)));
    for (i64 i = 0; i < n_items; ++i) c.p()[i] = static_cast<T>(nd(g_rng));
    for (i64 i = 0; i < nnz_s; ++i) s_t.p()[i] = static_cast<T>(loss == 1 ? uniform(2) : nd(g_rng));
    for (i64 i = 0; i < n_theta * d; ++i) p0.p()[i] = static_cast<T>(nd(g_rng) * 0.3);
    for (i64 i = 0; i < n_theta; ++i) b0.p()[i] = static_cast<T>(nd(g_rng));
    for (i64 i = 0; i < n_alpha; ++i) alpha.p()[i] = static_cast<T>(0.05 + 0.1 * (uniform(100) / 100.0));
    for (i64 i = 0; i < nnz_q; ++i) gq.p()[i] = static_cast<T>(nd(g_rng));
    const i64 traj_n = n_users * (steps + 1) * (d + 1);
    Buf<T> traj(traj_n, T(-7)), pred(nnz_q, T(-7));
    Buf<T> g_p0(n_theta * d, T(-7)), g_b0(n_theta, T(-7)), g_a(n_alpha, T(-7)), g_ab(1, T(-7)),
        g_H(n_items * d, T(-7)), g_c(n_items, T(-7));
    const int f64 = sizeof(T) == 8;
    const int rc = emu_forward(f64, H.p(), c.p(), n_items, d, n_users, s_indptr.p(), s_items.p(), s_t.p(), nnz_s,
                               q_indptr.p(), q_items.p(), nnz_q, p0.p(), b0.p(), per_user, alpha.p(), n_alpha, 0.13,
                               steps, 0.05, loss, traj.p(), pred.p());
    const int rc2 = emu_backward(f64, H.p(), c.p(), n_items, d, n_users, s_indptr.p(), s_items.p(), s_t.p(), nnz_s,
                                 q_indptr.p(), q_items.p(), nnz_q, p0.p(), b0.p(), per_user, alpha.p(), n_alpha,
                                 0.13, steps, 0.05, loss, traj.p(), gq.p(), second, alpha_grad, g_p0.p(), g_b0.p(),
                                 g_a.p(), g_ab.p(), g_H.p(), g_c.p());
    const bool raised = rc == 1 || rc == 2;
    bool ok;
    if (rc != rc2 || rc == 3) {
        ok = false;
    } else if (rc != 0) {
        ok = true;  // bad input may or may not be caught (e.g. an unchanged value); never a crash
    } else {
        ok = finite(traj, traj_n) && finite(pred, nnz_q) && finite(g_p0, n_theta * d) && finite(g_b0, n_theta) &&
             finite(g_a, n_alpha) && finite(g_ab, 1) && finite(g_H, n_items * d) && finite(g_c, n_items);
    }
    if (!ok) {
        ++failures;
        std::printf("FAIL round %d %s d=%ld users=%ld items=%ld steps=%d rc=%d/%d %s\n", round,
                    f64 ? "f64" : "f32", static_cast<long>(d), static_cast<long>(n_users),
                    static_cast<long>(n_items), steps, rc, rc2, raised ? g_error.c_str() : "");
    }
}

}  // namespace

int main(int argc, char** argv) {
    const int rounds = argc > 1 ? std::atoi(argv[1]) : 150;
    for (int round = 0; round < rounds; ++round) {
        run_one<float>(round);
        run_one<double>(round);
    }
    std::printf("%d rounds, %d failures, %lld launches, %lld CUDA threads\n", rounds, failures, emu::launches,
                emu::fibers_run);
    return failures == 0 ? 0 : 1;
}
#endif
