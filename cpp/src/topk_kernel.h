// Private interface between the top-k driver (topk.cpp, baseline flags) and
// the per-ISA micro-kernels (topk_generic.cpp, topk_avx2.cpp,
// topk_avx512.cpp, each compiled with its own flags).
//
// Only plain functions and PODs cross this boundary, so no inline or
// template code compiled for AVX-512 can be merged by the linker into code
// that runs on a CPU without it.
#pragma once

#include <cstdint>

namespace metarec::topk_detail {

// Called for one query row of a tile when at least one lane's score is not
// <= that row's threshold. `scores` holds the row's NR scores (lane j is item
// panel * NR + j); bit j of `mask` is set for those lanes.
template <class T>
using HitFn = void (*)(void* ctx, int row, std::int64_t panel, const T* scores, std::uint32_t mask);

// One micro-kernel: scores MR queries against NR items at a time.
//   qpack: the group's queries packed as [d][MR] (rows past the end are 0),
//   ipack: items packed in panels [panel][d][NR] (lanes past the end are 0),
//   bpack: bias per packed item [panel][NR],
//   thr:   per row threshold; a lane "hits" when !(score <= thr[row]), so NaN
//          means "take everything" and +inf means "take nothing".
// Each score is bias, then fused multiply-adds over d in increasing order
// (the generic kernel multiplies and adds separately).
template <class T>
struct DotKernel {
    int mr = 0;
    int nr = 0;
    void (*scan)(const T* qpack, const T* ipack, const T* bpack, std::int64_t d,
                 std::int64_t panel_begin, std::int64_t panel_end, const T* thr, HitFn<T> hit,
                 void* ctx) = nullptr;
};

struct DotKernels {
    DotKernel<float> f32;
    DotKernel<double> f64;
};

// nullptr when the translation unit was built without that instruction set.
const DotKernels* kernels_generic();
const DotKernels* kernels_avx2();
const DotKernels* kernels_avx512();

}  // namespace metarec::topk_detail
