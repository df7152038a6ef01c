// Runs the CUDA linear-head launchers and kernels of cpp/cuda/adapt.cu under
// the host emulation (tests/cuda_emu/cuda_runtime.h): one warp per user with
// real 32-lane shuffle rendezvous, 32 x 32 column-sum blocks with a block
// barrier, the CSR validation kernels with atomicMin, and the CUB radix sort
// stub. Built by tests/test_cuda_emulated.py as a shared library with the C
// ABI below (ctypes); the test compares the results with the CPU kernels of
// metarec_fast._core (up to rounding: the CUDA twin sums in another order).
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
