// Per-user adapt loops for the x86-64 baseline (or any other CPU).
#include <cstdint>

#include "adapt_kernel.h"

namespace metarec::adapt_detail {
namespace {
#define METAREC_ADAPT_VBYTES 16
#include "adapt_kernel_impl.h"
}  // namespace

const Kernels* kernels_generic() { return make_kernels(); }

}  // namespace metarec::adapt_detail
