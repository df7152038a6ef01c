// The forward bag loop (FBGEMM's recipe: each bag is pooled into a small
// fixed-width accumulator that the compiler keeps in vector registers, the
// rows of lookups a fixed distance ahead are prefetched), written once and
// compiled per instruction set. Included by each per-ISA translation unit
// inside an anonymous namespace in metarec::embedding_detail, after
// <algorithm> and <cstdint>; defines make_kernels().
#pragma once

#if defined(__GNUC__)
#define METAREC_EK_RESTRICT __restrict__
#define METAREC_EK_INLINE inline __attribute__((always_inline))
#define METAREC_EK_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define METAREC_EK_RESTRICT
#define METAREC_EK_INLINE inline
#define METAREC_EK_PREFETCH(p) ((void)0)
#endif

using i64 = std::int64_t;

// Lookups prefetched ahead of the one being accumulated (FBGEMM uses 16 too).
#ifndef METAREC_EMB_PREFETCH_DISTANCE
#define METAREC_EMB_PREFETCH_DISTANCE 16
#endif
constexpr i64 kPrefetchDistance = METAREC_EMB_PREFETCH_DISTANCE;
// At most this many cache lines of a row are prefetched.
constexpr i64 kMaxPrefetchLines = 8;

inline i64 bag_end(const i64* offsets, i64 n_bags, i64 n_ids, i64 b) {
    return b + 1 < n_bags ? offsets[b + 1] : n_ids;
}

template <class T>
METAREC_EK_INLINE void prefetch_row(const T* table, i64 num_rows, i64 dim, i64 id, i64 lines) {
    if (static_cast<std::uint64_t>(id) < static_cast<std::uint64_t>(num_rows)) {
        const char* p = reinterpret_cast<const char*>(table + id * dim);
        for (i64 l = 0; l < lines; ++l) METAREC_EK_PREFETCH(p + 64 * l);
    }
}

// Columns [col, ...) of the row looked up kPrefetchDistance positions after j
// (clamped to the chunk's last position pf_last; an out-of-range id is
// replaced by row 0, the check comes earlier).
template <class T>
METAREC_EK_INLINE const char* ahead(const BagArgs<T>& a, i64 col, i64 j, i64 pf_last) {
    i64 pj = j + kPrefetchDistance;
    pj = pj < pf_last ? pj : pf_last;
    i64 pid = a.ids[pj];
    pid = static_cast<std::uint64_t>(pid) < static_cast<std::uint64_t>(a.num_rows) ? pid : 0;
    return reinterpret_cast<const char*>(a.table + pid * a.dim + col);
}

// Pools columns [col, col + W) of one bag (positions [begin, end), ids
// already checked), prefetching the same columns kPrefetchDistance lookups
// ahead. The W accumulators live in vector registers.
template <class T, int W, bool Weighted>
METAREC_EK_INLINE void pool_tile(const BagArgs<T>& a, i64 col, i64 begin, i64 end, i64 pf_last,
                                 T scale, T* METAREC_EK_RESTRICT out) {
    constexpr int kLines = (W * static_cast<int>(sizeof(T)) + 63) / 64;
    T acc[W];
    for (int k = 0; k < W; ++k) acc[k] = T(0);
    const i64 dim = a.dim;
    const T* METAREC_EK_RESTRICT base = a.table + col;
    for (i64 j = begin; j < end; ++j) {
        const char* pf = ahead(a, col, j, pf_last);
        for (int l = 0; l < kLines; ++l) METAREC_EK_PREFETCH(pf + 64 * l);
        const T* METAREC_EK_RESTRICT row = base + a.ids[j] * dim;
        if (Weighted) {
            const T w = a.weights[j];
            for (int k = 0; k < W; ++k) acc[k] += w * row[k];
        } else {
            for (int k = 0; k < W; ++k) acc[k] += row[k];
        }
    }
    for (int k = 0; k < W; ++k) out[k] = acc[k] * scale;
}

// Same for a runtime width (the last < one cache line of columns).
template <class T, bool Weighted>
METAREC_EK_INLINE void pool_tail(const BagArgs<T>& a, i64 col, i64 width, i64 begin, i64 end,
                                 i64 pf_last, T scale, T* METAREC_EK_RESTRICT out) {
    for (i64 k = 0; k < width; ++k) out[k] = T(0);
    const i64 dim = a.dim;
    const i64 lines = (width * static_cast<i64>(sizeof(T)) + 63) / 64;
    for (i64 j = begin; j < end; ++j) {
        const char* pf = ahead(a, col, j, pf_last);
        for (i64 l = 0; l < lines; ++l) METAREC_EK_PREFETCH(pf + 64 * l);
        const T* METAREC_EK_RESTRICT row = a.table + a.ids[j] * dim + col;
        const T w = Weighted ? a.weights[j] : T(1);
        for (i64 k = 0; k < width; ++k) out[k] += Weighted ? w * row[k] : row[k];
    }
    for (i64 k = 0; k < width; ++k) out[k] *= scale;
}

template <class T, bool Weighted>
bool pool_bags(const BagArgs<T>& a, i64 b0, i64 b1) {
    constexpr int kLine = 64 / static_cast<int>(sizeof(T));  // elements per cache line
    constexpr int kWide = 4 * kLine;                         // 256 bytes of accumulators
    const i64 dim = a.dim;
    const i64 p0 = a.offsets[b0];
    const i64 p1 = bag_end(a.offsets, a.n_bags, a.n_ids, b1 - 1);
    // Bounds-check the chunk's ids once (the caller finds the first bad one).
    bool bad = false;
    for (i64 j = p0; j < p1; ++j) {
        bad |= static_cast<std::uint64_t>(a.ids[j]) >= static_cast<std::uint64_t>(a.num_rows);
    }
    if (bad) return false;
    if (p1 == p0 || dim == 0) {
        for (i64 b = b0; b < b1; ++b) {
            for (i64 k = 0; k < dim; ++k) a.out[b * dim + k] = T(0);
        }
        return true;
    }
    const i64 pf_last = p1 - 1;
    // Warm up: the first kPrefetchDistance rows of the chunk.
    const i64 pf_lines =
        std::min<i64>(kMaxPrefetchLines, (dim * static_cast<i64>(sizeof(T)) + 63) / 64);
    for (i64 j = p0; j < std::min(p1, p0 + kPrefetchDistance); ++j) {
        prefetch_row(a.table, a.num_rows, dim, a.ids[j], pf_lines);
    }
    for (i64 b = b0; b < b1; ++b) {
        const i64 begin = a.offsets[b];
        const i64 end = bag_end(a.offsets, a.n_bags, a.n_ids, b);
        T* out = a.out + b * dim;
        const i64 len = end - begin;
        const T scale = (a.mean && len > 0) ? T(1) / static_cast<T>(len) : T(1);
        i64 col = 0;
        for (; col + kWide <= dim; col += kWide) {
            pool_tile<T, kWide, Weighted>(a, col, begin, end, pf_last, scale, out + col);
        }
        for (; col + kLine <= dim; col += kLine) {
            pool_tile<T, kLine, Weighted>(a, col, begin, end, pf_last, scale, out + col);
        }
        if (col < dim) pool_tail<T, Weighted>(a, col, dim - col, begin, end, pf_last, scale, out + col);
    }
    return true;
}

template <class T>
bool pool_any(const BagArgs<T>& a, i64 b0, i64 b1) {
    return a.weights ? pool_bags<T, true>(a, b0, b1) : pool_bags<T, false>(a, b0, b1);
}

inline const Kernels* make_kernels() {
    static const Kernels k{&pool_any<float>, &pool_any<double>};
    return &k;
}
