// Forward bag loop built with -mavx2 -ffp-contract=off (no FMA: the same
// rounding as the baseline loop); only called after runtime detection
// (metarec/simd.h).
#include <algorithm>
#include <cstdint>

#include "embedding_kernel.h"

#if defined(__AVX2__)
namespace metarec::embedding_detail {
namespace {
#include "embedding_kernel_impl.h"
}  // namespace

const Kernels* kernels_avx2() { return make_kernels(); }

}  // namespace metarec::embedding_detail
#else
namespace metarec::embedding_detail {
const Kernels* kernels_avx2() { return nullptr; }
}  // namespace metarec::embedding_detail
#endif
