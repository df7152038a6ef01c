// AVX-512F micro-kernel. Built with -mavx512f -mfma; only called after
// runtime detection (metarec/simd.h).
#include <cstdint>

#include "topk_kernel.h"

#if defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

namespace metarec::topk_detail {
namespace {

struct F32 {
    using T = float;
    using V = __m512;
    static constexpr int W = 16, NV = 2, MR = 14;
    static V load(const T* p) { return _mm512_loadu_ps(p); }
    static V bcast(const T* p) { return _mm512_set1_ps(*p); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static void store(T* p, V v) { _mm512_storeu_ps(p, v); }
    static std::uint32_t hit(V v, V t) {
        return static_cast<std::uint32_t>(_mm512_cmp_ps_mask(v, t, _CMP_NLE_UQ));
    }
};

struct F64 {
    using T = double;
    using V = __m512d;
    static constexpr int W = 8, NV = 2, MR = 14;
    static V load(const T* p) { return _mm512_loadu_pd(p); }
    static V bcast(const T* p) { return _mm512_set1_pd(*p); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
    static void store(T* p, V v) { _mm512_storeu_pd(p, v); }
    static std::uint32_t hit(V v, V t) {
        return static_cast<std::uint32_t>(_mm512_cmp_pd_mask(v, t, _CMP_NLE_UQ));
    }
};

#include "topk_kernel_impl.h"

}  // namespace

const DotKernels* kernels_avx512() {
    static const DotKernels k{{F32::MR, F32::W * F32::NV, &scan_group<F32>},
                              {F64::MR, F64::W * F64::NV, &scan_group<F64>}};
    return &k;
}

}  // namespace metarec::topk_detail

#else
namespace metarec::topk_detail {
const DotKernels* kernels_avx512() { return nullptr; }
}  // namespace metarec::topk_detail
#endif
