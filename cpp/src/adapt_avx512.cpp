// Per-user adapt loops built with -mavx512f -mavx2 -mfma; only called after runtime detection
// (metarec/simd.h).
#include <cstdint>

#include "adapt_kernel.h"

#if defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
namespace metarec::adapt_detail {
namespace {
#define METAREC_ADAPT_VBYTES 64
#include "adapt_kernel_impl.h"
}  // namespace

const Kernels* kernels_avx512() { return make_kernels(); }

}  // namespace metarec::adapt_detail
#else
namespace metarec::adapt_detail {
const Kernels* kernels_avx512() { return nullptr; }
}  // namespace metarec::adapt_detail
#endif
