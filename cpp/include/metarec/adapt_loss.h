// The pointwise losses of the linear-head inner loop (metarec/adapt.h) and
// their derivatives: one definition for the CPU per-ISA loops
// (cpp/src/adapt_kernel_impl.h) and the CUDA kernels (cpp/cuda/adapt.cu).
//
// No #include here: the CPU loops include this header inside an anonymous
// namespace (internal linkage per ISA translation unit), which a standard
// header must never be.
#pragma once

#if defined(__CUDACC__)
#define METAREC_LOSS_FN __host__ __device__ __forceinline__
#else
#define METAREC_LOSS_FN inline
#endif

METAREC_LOSS_FN float loss_exp(float x) {
#if defined(__CUDA_ARCH__)
    return expf(x);
#else
    return __builtin_expf(x);
#endif
}
METAREC_LOSS_FN double loss_exp(double x) {
#if defined(__CUDA_ARCH__)
    return exp(x);
#else
    return __builtin_exp(x);
#endif
}

// 1 / (1 + e^-x) without overflow for large |x|.
template <class T>
METAREC_LOSS_FN T sigmoid(T x) {
    if (x >= T(0)) return T(1) / (T(1) + loss_exp(-x));
    const T e = loss_exp(x);
    return e / (T(1) + e);
}

// First and second derivative of the pointwise loss with respect to the prediction.
template <class T>
METAREC_LOSS_FN void loss_derivatives(::metarec::AdaptLoss loss, T f, T y, T& d1, T& d2) {
    if (loss == ::metarec::AdaptLoss::mse) {
        d1 = T(2) * (f - y);
        d2 = T(2);
    } else {
        const T s = sigmoid(f);
        d1 = s - y;
        d2 = s * (T(1) - s);
    }
}
