// Forward bag loop for the portable baseline (SSE2 on x86-64). Built with
// -ffp-contract=off like its AVX2 / AVX-512 siblings (bit-identical results).
#include <algorithm>
#include <cstdint>

#include "embedding_kernel.h"

namespace metarec::embedding_detail {
namespace {
#include "embedding_kernel_impl.h"
}  // namespace

const Kernels* kernels_generic() { return make_kernels(); }

}  // namespace metarec::embedding_detail
