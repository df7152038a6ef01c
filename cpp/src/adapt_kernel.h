// Private interface between the adapt driver (adapt.cpp, baseline flags) and
// the per-ISA per-user loops (adapt_generic.cpp, adapt_avx2.cpp,
// adapt_avx512.cpp, each compiled with its own flags; all three include
// adapt_kernel_impl.h inside an anonymous namespace).
//
// Only plain function pointers, PODs and raw buffers cross this boundary (all
// buffers are allocated by the driver), so no inline or template code
// compiled for AVX-512 can be merged by the linker into code that runs on a
// CPU without it.
#pragma once

#include <cstdint>

#include "metarec/adapt.h"

namespace metarec::adapt_detail {

template <class T>
struct UserKernels {
    // Users [begin, end): writes their trajectory rows and query predictions.
    // scratch: d entries.
    void (*forward)(const LinearHeadBatch<T>& bt, std::int64_t begin, std::int64_t end, T* scratch,
                    T* trajectory, T* query_pred) = nullptr;
    // Users [begin, end): writes user_theta and user_alpha rows ([n_users, d+1],
    // fully overwritten) and, when `second`, the support entries' body
    // gradients entry_h [nnz_s, d] / entry_c [nnz_s] (fully overwritten).
    // scratch: at least 3 * (d + 1) entries.
    void (*backward)(const LinearHeadBatch<T>& bt, const T* trajectory, const T* grad_query_pred,
                     bool second, bool alpha_grad, std::int64_t begin, std::int64_t end, T* scratch,
                     T* entry_h, T* entry_c, T* user_theta, T* user_alpha) = nullptr;
};

struct Kernels {
    UserKernels<float> f32;
    UserKernels<double> f64;
};

// nullptr when the translation unit was built without that instruction set.
const Kernels* kernels_generic();
const Kernels* kernels_avx2();
const Kernels* kernels_avx512();

}  // namespace metarec::adapt_detail
