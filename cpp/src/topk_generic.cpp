// Portable micro-kernel (baseline flags): 4-lane "vectors" of plain arrays,
// multiply then add (no fused multiply-add), which compilers map to SSE2.
#include <cstdint>

#include "topk_kernel.h"

namespace metarec::topk_detail {
namespace {

template <class TT>
struct Generic {
    using T = TT;
    static constexpr int W = 4;
    static constexpr int NV = 2;
    static constexpr int MR = 4;
    struct V {
        T x[W];
    };
    static V load(const T* p) {
        V v;
        for (int i = 0; i < W; ++i) v.x[i] = p[i];
        return v;
    }
    static V bcast(const T* p) {
        V v;
        for (int i = 0; i < W; ++i) v.x[i] = *p;
        return v;
    }
    static V fma(const V& a, const V& b, const V& c) {
        V v;
        for (int i = 0; i < W; ++i) {
            const T prod = a.x[i] * b.x[i];
            v.x[i] = prod + c.x[i];
        }
        return v;
    }
    static void store(T* p, const V& v) {
        for (int i = 0; i < W; ++i) p[i] = v.x[i];
    }
    static std::uint32_t hit(const V& v, const V& t) {
        std::uint32_t m = 0;
        for (int i = 0; i < W; ++i) m |= static_cast<std::uint32_t>(!(v.x[i] <= t.x[i])) << i;
        return m;
    }
};

#include "topk_kernel_impl.h"

}  // namespace

const DotKernels* kernels_generic() {
    static const DotKernels k{
        {Generic<float>::MR, Generic<float>::W * Generic<float>::NV, &scan_group<Generic<float>>},
        {Generic<double>::MR, Generic<double>::W * Generic<double>::NV, &scan_group<Generic<double>>}};
    return &k;
}

}  // namespace metarec::topk_detail
