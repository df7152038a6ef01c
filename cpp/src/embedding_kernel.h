// Private interface between the embedding driver (embedding.cpp, baseline
// flags) and the per-ISA forward bag loops (embedding_generic.cpp,
// embedding_avx2.cpp, embedding_avx512.cpp, each compiled with its own flags;
// all three include embedding_kernel_impl.h inside an anonymous namespace).
//
// Only plain function pointers and PODs cross this boundary, so no inline or
// template code compiled for a wider instruction set can be merged by the
// linker into code that runs on a CPU without it.
//
// Every variant runs the same floating-point operations in the same order
// (one multiply and one add per term, never fused: all three files are built
// with -ffp-contract=off), so they give bit-identical results; they differ
// only in vector width.
#pragma once

#include <cstdint>

namespace metarec::embedding_detail {

template <class T>
struct BagArgs {
    const T* table;
    std::int64_t num_rows;
    std::int64_t dim;
    const std::int64_t* ids;
    std::int64_t n_ids;
    const std::int64_t* offsets;  // already validated (starts at 0, non-decreasing, <= n_ids)
    std::int64_t n_bags;
    const T* weights;  // null: unweighted
    bool mean;
    T* out;
};

// Pools bags [b0, b1) into out. Returns false, having written nothing, when
// an id of the chunk is outside [0, num_rows) (the caller names the bad id;
// no exception crosses this boundary).
template <class T>
using PoolFn = bool (*)(const BagArgs<T>& a, std::int64_t b0, std::int64_t b1);

struct Kernels {
    PoolFn<float> pool_f32 = nullptr;
    PoolFn<double> pool_f64 = nullptr;
};

// nullptr when the translation unit was built without that instruction set
// (or, for AVX-512, when the AVX2 loop is used instead: see embedding_avx512.cpp).
const Kernels* kernels_generic();
const Kernels* kernels_avx2();
const Kernels* kernels_avx512();

}  // namespace metarec::embedding_detail
