// Embedding kernels (see metarec/embedding.h for the contract).
//
// Forward bags follow FBGEMM's recipe: each bag is pooled into a small
// fixed-width accumulator that the compiler keeps in vector registers, the
// rows of lookups a fixed distance ahead are prefetched, and bags are spread
// over threads in chunks. Backward passes and sparse optimisers group the
// lookups by row first (counting sort, or a sort of (id, position) pairs when
// the table is much larger than the lookup list) and let exactly one thread
// reduce each row in ascending position order, so results are bit-identical
// for any thread count and no floating-point atomics are needed.
//
// The forward hot loop is compiled twice through GCC function multiversioning
// (AVX2 and the portable SSE2 baseline, picked at load time by the CPU; an
// AVX-512 clone measured slower on this memory-bound loop); the clones differ
// only in vector width,
// never in the order of floating-point operations (no FMA contraction), so
// they give bit-identical results.
#include "metarec/embedding.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "metarec/parallel.h"

// Same rounding on every machine and clone: never fuse a*b+c into an FMA.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__AVX2__)
// NB: exceptions must not cross a cloned function (GCC's ifunc dispatcher is
// treated as nothrow: an exception escaping it calls std::terminate), so the
// clones report errors through their return value.
#define METAREC_EMB_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define METAREC_EMB_CLONES
#endif

#if defined(__GNUC__)
#define METAREC_RESTRICT __restrict__
#define METAREC_INLINE inline __attribute__((always_inline))
#define METAREC_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define METAREC_RESTRICT
#define METAREC_INLINE inline
#define METAREC_PREFETCH(p) ((void)0)
#endif

namespace metarec {

namespace {

using i64 = std::int64_t;

// Lookups prefetched ahead of the one being accumulated (FBGEMM uses 16 too).
#ifndef METAREC_EMB_PREFETCH_DISTANCE
#define METAREC_EMB_PREFETCH_DISTANCE 16
#endif
constexpr i64 kPrefetchDistance = METAREC_EMB_PREFETCH_DISTANCE;
// At most this many cache lines of a row are prefetched.
constexpr i64 kMaxPrefetchLines = 8;

[[noreturn]] void throw_bad_id(const char* name, i64 id, i64 num_rows) {
    throw std::out_of_range(std::string(name) + " contains id " + std::to_string(id) +
                            ", outside [0, " + std::to_string(num_rows) + ")");
}

// Throws std::out_of_range naming the first (lowest-position) id outside
// [0, num_rows).
void check_ids(const char* name, const i64* ids, i64 n, i64 num_rows) {
    for (i64 j = 0; j < n; ++j) {
        if (static_cast<std::uint64_t>(ids[j]) >= static_cast<std::uint64_t>(num_rows)) {
            throw_bad_id(name, ids[j], num_rows);
        }
    }
}

void check_shape(i64 num_rows, i64 dim) {
    if (num_rows < 0 || dim < 0) {
        throw std::invalid_argument("table shape must be non-negative, got (" +
                                    std::to_string(num_rows) + ", " + std::to_string(dim) + ")");
    }
}

// offsets: start at 0, never decrease, stay within [0, n_ids].
void check_offsets(const i64* offsets, i64 n_bags, i64 n_ids) {
    if (n_bags < 0 || n_ids < 0) throw std::invalid_argument("negative bag or id count");
    if (n_bags == 0) return;
    if (offsets[0] != 0) {
        throw std::invalid_argument("offsets must start at 0, got " + std::to_string(offsets[0]));
    }
    for (i64 b = 1; b < n_bags; ++b) {
        if (offsets[b] < offsets[b - 1]) {
            throw std::invalid_argument("offsets must be non-decreasing, offsets[" +
                                        std::to_string(b) + "] = " + std::to_string(offsets[b]) +
                                        " < offsets[" + std::to_string(b - 1) +
                                        "] = " + std::to_string(offsets[b - 1]));
        }
    }
    if (offsets[n_bags - 1] > n_ids) {
        throw std::invalid_argument("offsets[" + std::to_string(n_bags - 1) + "] = " +
                                    std::to_string(offsets[n_bags - 1]) +
                                    " is beyond the number of ids " + std::to_string(n_ids));
    }
}

inline i64 bag_end(const i64* offsets, i64 n_bags, i64 n_ids, i64 b) {
    return b + 1 < n_bags ? offsets[b + 1] : n_ids;
}

i64 bag_chunk(i64 n_bags, int num_threads) {
    const i64 c = n_bags / (static_cast<i64>(num_threads) * 16);
    return std::max<i64>(16, std::min<i64>(512, c));
}

// ---------------------------------------------------------------------------
// Forward pooling.

template <class T>
struct BagArgs {
    const T* table;
    i64 num_rows;
    i64 dim;
    const i64* ids;
    i64 n_ids;
    const i64* offsets;
    i64 n_bags;
    const T* weights;
    bool mean;
    T* out;
};

template <class T>
METAREC_INLINE void prefetch_row(const T* table, i64 num_rows, i64 dim, i64 id, i64 lines) {
    if (static_cast<std::uint64_t>(id) < static_cast<std::uint64_t>(num_rows)) {
        const char* p = reinterpret_cast<const char*>(table + id * dim);
        for (i64 l = 0; l < lines; ++l) METAREC_PREFETCH(p + 64 * l);
    }
}

// Prefetches `lines` cache lines at columns [col, ...) of the row looked up
// kPrefetchDistance positions after j (clamped to the chunk's last position
// pf_last; an out-of-range id is replaced by row 0, the check comes later).
template <class T>
METAREC_INLINE const char* ahead(const BagArgs<T>& a, i64 col, i64 j, i64 pf_last) {
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
METAREC_INLINE void pool_tile(const BagArgs<T>& a, i64 col, i64 begin, i64 end, i64 pf_last,
                              T scale, T* METAREC_RESTRICT out) {
    constexpr int kLines = (W * static_cast<int>(sizeof(T)) + 63) / 64;
    T acc[W];
    for (int k = 0; k < W; ++k) acc[k] = T(0);
    const i64 dim = a.dim;
    const T* METAREC_RESTRICT base = a.table + col;
    for (i64 j = begin; j < end; ++j) {
        const char* pf = ahead(a, col, j, pf_last);
        for (int l = 0; l < kLines; ++l) METAREC_PREFETCH(pf + 64 * l);
        const T* METAREC_RESTRICT row = base + a.ids[j] * dim;
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
METAREC_INLINE void pool_tail(const BagArgs<T>& a, i64 col, i64 width, i64 begin, i64 end,
                              i64 pf_last, T scale, T* METAREC_RESTRICT out) {
    for (i64 k = 0; k < width; ++k) out[k] = T(0);
    const i64 dim = a.dim;
    const i64 lines = (width * static_cast<i64>(sizeof(T)) + 63) / 64;
    for (i64 j = begin; j < end; ++j) {
        const char* pf = ahead(a, col, j, pf_last);
        for (i64 l = 0; l < lines; ++l) METAREC_PREFETCH(pf + 64 * l);
        const T* METAREC_RESTRICT row = a.table + a.ids[j] * dim + col;
        const T w = Weighted ? a.weights[j] : T(1);
        for (i64 k = 0; k < width; ++k) out[k] += Weighted ? w * row[k] : row[k];
    }
    for (i64 k = 0; k < width; ++k) out[k] *= scale;
}

// Returns false (having written nothing) when an id of the chunk is out of range.
template <class T, bool Weighted>
METAREC_INLINE bool pool_bags(const BagArgs<T>& a, i64 b0, i64 b1) {
    constexpr int kLine = 64 / static_cast<int>(sizeof(T));  // elements per cache line
    constexpr int kWide = 4 * kLine;                         // 256 bytes of accumulators
    const i64 dim = a.dim;
    const i64 p0 = a.offsets[b0];
    const i64 p1 = bag_end(a.offsets, a.n_bags, a.n_ids, b1 - 1);
    // Bounds-check the chunk's ids once (the first bad one is found later).
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
    const i64 pf_lines = std::min<i64>(kMaxPrefetchLines, (dim * static_cast<i64>(sizeof(T)) + 63) / 64);
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

METAREC_EMB_CLONES bool pool_bags_f32(const BagArgs<float>& a, i64 b0, i64 b1) noexcept {
    return a.weights ? pool_bags<float, true>(a, b0, b1) : pool_bags<float, false>(a, b0, b1);
}

METAREC_EMB_CLONES bool pool_bags_f64(const BagArgs<double>& a, i64 b0, i64 b1) noexcept {
    return a.weights ? pool_bags<double, true>(a, b0, b1) : pool_bags<double, false>(a, b0, b1);
}

inline bool pool_bags_any(const BagArgs<float>& a, i64 b0, i64 b1) { return pool_bags_f32(a, b0, b1); }
inline bool pool_bags_any(const BagArgs<double>& a, i64 b0, i64 b1) { return pool_bags_f64(a, b0, b1); }

// ---------------------------------------------------------------------------
// Row-grouped reductions (backward, optimisers).

// out[0:dim] = sum over positions p of groups.perm[s0:s1] of coef(p) * src(p)[0:dim],
// in the order given. `coef` returns the multiplier (ignored when Unit).
template <class T, class SrcFn, class CoefFn>
METAREC_INLINE void reduce_group(const i64* METAREC_RESTRICT perm, i64 s0, i64 s1, i64 dim,
                                 SrcFn src, CoefFn coef, bool unit, T* METAREC_RESTRICT out) {
    for (i64 k = 0; k < dim; ++k) out[k] = T(0);
    for (i64 s = s0; s < s1; ++s) {
        const i64 p = perm[s];
        const T* METAREC_RESTRICT g = src(p);
        if (s + 4 < s1) METAREC_PREFETCH(src(perm[s + 4]));
        if (unit) {
            for (i64 k = 0; k < dim; ++k) out[k] += g[k];
        } else {
            const T c = coef(p);
            for (i64 k = 0; k < dim; ++k) out[k] += c * g[k];
        }
    }
}

// bag_of[j] = bag holding position j (positions before offsets[0] cannot
// exist: offsets start at 0).
std::vector<i64> bags_of_positions(const i64* offsets, i64 n_bags, i64 n_ids, int num_threads) {
    std::vector<i64> bag_of(static_cast<std::size_t>(n_ids));
    parallel_for(n_bags, num_threads, bag_chunk(n_bags, num_threads), [&](i64 b0, i64 b1) {
        for (i64 b = b0; b < b1; ++b) {
            const i64 end = bag_end(offsets, n_bags, n_ids, b);
            for (i64 j = offsets[b]; j < end; ++j) bag_of[static_cast<std::size_t>(j)] = b;
        }
    });
    return bag_of;
}

template <class T>
struct BackwardPlan {
    RowGroups groups;
    std::vector<i64> bag_of;
};

template <class T>
BackwardPlan<T> plan_backward(i64 n_bags, i64 dim, const i64* ids, i64 n_ids, const i64* offsets,
                              const T* weights, PoolMode mode, i64 num_rows, int num_threads) {
    check_shape(num_rows, dim);
    if (n_bags < 0) throw std::invalid_argument("negative number of bags");
    if (n_bags == 0 && n_ids > 0) {
        throw std::invalid_argument("offsets is empty but ids has " + std::to_string(n_ids) +
                                    " entries");
    }
    check_offsets(offsets, n_bags, n_ids);
    if (weights && mode != PoolMode::Sum) {
        throw std::invalid_argument("per-sample weights are only supported with mode='sum'");
    }
    BackwardPlan<T> plan;
    plan.groups = group_by_row(ids, n_ids, num_rows);
    plan.bag_of = bags_of_positions(offsets, n_bags, n_ids, num_threads);
    return plan;
}

template <class T>
void backward_rows(const BackwardPlan<T>& plan, const T* grad_out, i64 dim, const i64* offsets,
                   i64 n_bags, i64 n_ids, const T* weights, PoolMode mode, int num_threads,
                   T* (*dest)(void*, i64 u), void* dest_ctx) {
    const RowGroups& g = plan.groups;
    const i64 n_unique = static_cast<i64>(g.rows.size());
    const i64* perm = g.perm.data();
    const i64* bag_of = plan.bag_of.data();
    auto src = [&](i64 p) { return grad_out + bag_of[p] * dim; };
    const bool unit = weights == nullptr && mode == PoolMode::Sum;
    auto coef = [&](i64 p) -> T {
        if (weights) return weights[p];
        const i64 b = bag_of[p];
        const i64 len = bag_end(offsets, n_bags, n_ids, b) - offsets[b];
        return T(1) / static_cast<T>(len);
    };
    parallel_for(n_unique, num_threads, 256, [&](i64 u0, i64 u1) {
        for (i64 u = u0; u < u1; ++u) {
            reduce_group<T>(perm, g.starts[static_cast<std::size_t>(u)],
                            g.starts[static_cast<std::size_t>(u + 1)], dim, src, coef, unit,
                            dest(dest_ctx, u));
        }
    });
}

}  // namespace

// ---------------------------------------------------------------------------

RowGroups group_by_row(const i64* ids, i64 n_ids, i64 num_rows) {
    if (n_ids < 0 || num_rows < 0) throw std::invalid_argument("negative size");
    check_ids("ids", ids, n_ids, num_rows);
    RowGroups g;
    const std::size_t n = static_cast<std::size_t>(n_ids);
    g.perm.resize(n);
    if (num_rows <= 4 * n_ids + 65536) {
        // Counting sort: stable, O(n_ids + num_rows).
        std::vector<i64> count(static_cast<std::size_t>(num_rows) + 1, 0);
        for (std::size_t j = 0; j < n; ++j) ++count[static_cast<std::size_t>(ids[j]) + 1];
        i64 n_unique = 0;
        for (i64 r = 0; r < num_rows; ++r) n_unique += count[static_cast<std::size_t>(r) + 1] != 0;
        g.rows.reserve(static_cast<std::size_t>(n_unique));
        g.starts.reserve(static_cast<std::size_t>(n_unique) + 1);
        for (i64 r = 0; r < num_rows; ++r) {
            const i64 c = count[static_cast<std::size_t>(r) + 1];
            if (c != 0) {
                g.rows.push_back(r);
                g.starts.push_back(count[static_cast<std::size_t>(r)]);
            }
            count[static_cast<std::size_t>(r) + 1] = count[static_cast<std::size_t>(r)] + c;
        }
        g.starts.push_back(n_ids);
        for (std::size_t j = 0; j < n; ++j) {
            g.perm[static_cast<std::size_t>(count[static_cast<std::size_t>(ids[j])]++)] =
                static_cast<i64>(j);
        }
    } else {
        // Few lookups into a huge table: sort (id, position) pairs.
        std::vector<std::pair<i64, i64>> pairs(n);
        for (std::size_t j = 0; j < n; ++j) pairs[j] = {ids[j], static_cast<i64>(j)};
        std::sort(pairs.begin(), pairs.end());
        for (std::size_t s = 0; s < n; ++s) {
            g.perm[s] = pairs[s].second;
            if (s == 0 || pairs[s].first != pairs[s - 1].first) {
                g.rows.push_back(pairs[s].first);
                g.starts.push_back(static_cast<i64>(s));
            }
        }
        g.starts.push_back(n_ids);
    }
    return g;
}

template <class T>
void gather(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids, T* out,
            int num_threads) {
    check_shape(num_rows, dim);
    if (n_ids < 0) throw std::invalid_argument("negative number of ids");
    const std::size_t row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
    const i64 pf_lines = std::min<i64>(kMaxPrefetchLines, (static_cast<i64>(row_bytes) + 63) / 64);
    try {
        parallel_for(n_ids, num_threads, 1024, [&](i64 j0, i64 j1) {
            for (i64 j = j0; j < std::min(j1, j0 + kPrefetchDistance); ++j) {
                prefetch_row(table, num_rows, dim, ids[j], pf_lines);
            }
            for (i64 j = j0; j < j1; ++j) {
                const i64 id = ids[j];
                if (static_cast<std::uint64_t>(id) >= static_cast<std::uint64_t>(num_rows)) {
                    throw_bad_id("ids", id, num_rows);
                }
                if (j + kPrefetchDistance < j1) {
                    prefetch_row(table, num_rows, dim, ids[j + kPrefetchDistance], pf_lines);
                }
                if (row_bytes) std::memcpy(out + j * dim, table + id * dim, row_bytes);
            }
        });
    } catch (const std::out_of_range&) {
        check_ids("ids", ids, n_ids, num_rows);  // name the first bad id
        throw;
    }
}

template <class T>
void embedding_bag(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids,
                   const i64* offsets, i64 n_bags, const T* weights, PoolMode mode, T* out,
                   int num_threads) {
    check_shape(num_rows, dim);
    if (n_bags == 0 && n_ids > 0) {
        throw std::invalid_argument("offsets is empty but ids has " + std::to_string(n_ids) +
                                    " entries");
    }
    check_offsets(offsets, n_bags, n_ids);
    if (weights && mode != PoolMode::Sum) {
        throw std::invalid_argument("per-sample weights are only supported with mode='sum'");
    }
    const BagArgs<T> a{table, num_rows, dim, ids, n_ids, offsets, n_bags, weights,
                       mode == PoolMode::Mean, out};
    try {
        parallel_for(n_bags, num_threads, bag_chunk(n_bags, num_threads),
                     [&](i64 b0, i64 b1) {
                         if (!pool_bags_any(a, b0, b1)) throw std::out_of_range("ids out of range");
                     });
    } catch (const std::out_of_range&) {
        check_ids("ids", ids, n_ids, num_rows);  // name the first bad id
        throw;
    }
}

template <class T>
void embedding_bag_backward_dense(const T* grad_out, i64 n_bags, i64 dim, const i64* ids,
                                  i64 n_ids, const i64* offsets, const T* weights, PoolMode mode,
                                  i64 num_rows, T* grad_table, int num_threads) {
    const BackwardPlan<T> plan =
        plan_backward(n_bags, dim, ids, n_ids, offsets, weights, mode, num_rows, num_threads);
    // Zero the rows nobody looks up (in parallel: first touch spreads pages).
    const i64 zero_chunk = std::max<i64>(1, (1 << 16) / std::max<i64>(1, dim));
    const std::vector<i64>& rows = plan.groups.rows;
    if (dim > 0) parallel_for(num_rows, num_threads, zero_chunk, [&](i64 r0, i64 r1) {
        std::memset(static_cast<void*>(grad_table + r0 * dim), 0,
                    static_cast<std::size_t>((r1 - r0) * dim) * sizeof(T));
    });
    struct Ctx {
        T* base;
        const i64* rows;
        i64 dim;
    } ctx{grad_table, rows.data(), dim};
    backward_rows<T>(plan, grad_out, dim, offsets, n_bags, n_ids, weights, mode, num_threads,
                     [](void* c, i64 u) {
                         auto* x = static_cast<Ctx*>(c);
                         return x->base + x->rows[u] * x->dim;
                     },
                     &ctx);
}

template <class T>
SparseRows<T> embedding_bag_backward_sparse(const T* grad_out, i64 n_bags, i64 dim,
                                            const i64* ids, i64 n_ids, const i64* offsets,
                                            const T* weights, PoolMode mode, i64 num_rows,
                                            int num_threads) {
    BackwardPlan<T> plan =
        plan_backward(n_bags, dim, ids, n_ids, offsets, weights, mode, num_rows, num_threads);
    SparseRows<T> result;
    result.values.resize(plan.groups.rows.size() * static_cast<std::size_t>(dim));
    struct Ctx {
        T* base;
        i64 dim;
    } ctx{result.values.data(), dim};
    backward_rows<T>(plan, grad_out, dim, offsets, n_bags, n_ids, weights, mode, num_threads,
                     [](void* c, i64 u) {
                         auto* x = static_cast<Ctx*>(c);
                         return x->base + u * x->dim;
                     },
                     &ctx);
    result.rows = std::move(plan.groups.rows);
    return result;
}

template <class T>
void embedding_bag_weight_grad(const T* grad_out, i64 n_bags, const T* table, i64 num_rows,
                               i64 dim, const i64* ids, i64 n_ids, const i64* offsets, T* out,
                               int num_threads) {
    check_shape(num_rows, dim);
    if (n_bags == 0 && n_ids > 0) {
        throw std::invalid_argument("offsets is empty but ids has " + std::to_string(n_ids) +
                                    " entries");
    }
    check_offsets(offsets, n_bags, n_ids);
    check_ids("ids", ids, n_ids, num_rows);
    parallel_for(n_bags, num_threads, bag_chunk(n_bags, num_threads), [&](i64 b0, i64 b1) {
        for (i64 b = b0; b < b1; ++b) {
            const T* METAREC_RESTRICT g = grad_out + b * dim;
            const i64 end = bag_end(offsets, n_bags, n_ids, b);
            for (i64 j = offsets[b]; j < end; ++j) {
                if (j + kPrefetchDistance < end) {
                    prefetch_row(table, num_rows, dim, ids[j + kPrefetchDistance], 2);
                }
                const T* METAREC_RESTRICT row = table + ids[j] * dim;
                T s = T(0);
                for (i64 k = 0; k < dim; ++k) s += g[k] * row[k];
                out[j] = s;
            }
        }
    });
}

namespace {
template <class T, class Update>
void sparse_update(i64 num_rows, i64 dim, const i64* rows, i64 n, const T* grads,
                   int num_threads, Update update) {
    check_shape(num_rows, dim);
    if (n < 0) throw std::invalid_argument("negative number of rows");
    const RowGroups g = group_by_row(rows, n, num_rows);
    const i64 n_unique = static_cast<i64>(g.rows.size());
    parallel_for(n_unique, num_threads, 256, [&](i64 u0, i64 u1) {
        std::vector<T> sum(static_cast<std::size_t>(dim));
        for (i64 u = u0; u < u1; ++u) {
            reduce_group<T>(g.perm.data(), g.starts[static_cast<std::size_t>(u)],
                            g.starts[static_cast<std::size_t>(u + 1)], dim,
                            [&](i64 p) { return grads + p * dim; },
                            [](i64) { return T(1); }, true, sum.data());
            update(g.rows[static_cast<std::size_t>(u)], sum.data());
        }
    });
}
}  // namespace

template <class T>
void sparse_sgd(T* table, i64 num_rows, i64 dim, const i64* rows, i64 n, const T* grads, T lr,
                int num_threads) {
    sparse_update<T>(num_rows, dim, rows, n, grads, num_threads, [&](i64 r, const T* g) {
        T* METAREC_RESTRICT w = table + r * dim;
        for (i64 k = 0; k < dim; ++k) w[k] -= lr * g[k];
    });
}

template <class T>
void sparse_adagrad(T* table, T* state, i64 num_rows, i64 dim, const i64* rows, i64 n,
                    const T* grads, T lr, T eps, int num_threads) {
    sparse_update<T>(num_rows, dim, rows, n, grads, num_threads, [&](i64 r, const T* g) {
        T sq = T(0);
        for (i64 k = 0; k < dim; ++k) sq += g[k] * g[k];
        const T h = state[r] + (dim > 0 ? sq / static_cast<T>(dim) : T(0));
        state[r] = h;
        const T denom = std::sqrt(h) + eps;
        T* METAREC_RESTRICT w = table + r * dim;
        for (i64 k = 0; k < dim; ++k) w[k] -= lr * g[k] / denom;
    });
}

void parallel_copy(const void* src, void* dst, i64 n_bytes, int num_threads) {
    constexpr i64 kChunk = 1 << 20;
    const i64 n_chunks = (n_bytes + kChunk - 1) / kChunk;
    const char* s = static_cast<const char*>(src);
    char* d = static_cast<char*>(dst);
    parallel_for(n_chunks, num_threads, 1, [&](i64 c0, i64 c1) {
        const i64 begin = c0 * kChunk;
        const i64 end = std::min(n_bytes, c1 * kChunk);
        std::memcpy(d + begin, s + begin, static_cast<std::size_t>(end - begin));
    });
}

#define METAREC_EMB_INSTANTIATE(T)                                                             \
    template void gather<T>(const T*, i64, i64, const i64*, i64, T*, int);                     \
    template void embedding_bag<T>(const T*, i64, i64, const i64*, i64, const i64*, i64,        \
                                   const T*, PoolMode, T*, int);                               \
    template void embedding_bag_backward_dense<T>(const T*, i64, i64, const i64*, i64,          \
                                                  const i64*, const T*, PoolMode, i64, T*, int); \
    template SparseRows<T> embedding_bag_backward_sparse<T>(                                   \
        const T*, i64, i64, const i64*, i64, const i64*, const T*, PoolMode, i64, int);        \
    template void embedding_bag_weight_grad<T>(const T*, i64, const T*, i64, i64, const i64*,  \
                                               i64, const i64*, T*, int);                      \
    template void sparse_sgd<T>(T*, i64, i64, const i64*, i64, const T*, T, int);              \
    template void sparse_adagrad<T>(T*, T*, i64, i64, const i64*, i64, const T*, T, T, int);

METAREC_EMB_INSTANTIATE(float)
METAREC_EMB_INSTANTIATE(double)

}  // namespace metarec
