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
// The forward bag loop lives in embedding_kernel_impl.h, compiled once per
// instruction set (embedding_{generic,avx2,avx512}.cpp, per-file flags in
// CMakeLists.txt) and picked once through the runtime SIMD level
// (metarec/simd.h, METAREC_SIMD lowers it). The variants differ only in
// vector width, never in the order of floating-point operations (no FMA
// contraction), so they give bit-identical results.
#include "metarec/embedding.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <limits>
#include <utility>

#include "embedding_kernel.h"
#include "metarec/parallel.h"
#include "metarec/simd.h"

// Same rounding on every machine and clone: never fuse a*b+c into an FMA.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
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

template <class T>
METAREC_INLINE void prefetch_row(const T* table, i64 num_rows, i64 dim, i64 id, i64 lines) {
    if (static_cast<std::uint64_t>(id) < static_cast<std::uint64_t>(num_rows)) {
        const char* p = reinterpret_cast<const char*>(table + id * dim);
        for (i64 l = 0; l < lines; ++l) METAREC_PREFETCH(p + 64 * l);
    }
}

// ---------------------------------------------------------------------------
// Forward pooling: dispatch to the per-ISA loops.

using embedding_detail::BagArgs;

// The loops for `level` (checked against the CPU); a level whose translation
// unit was built without its instruction set (or whose loop is not worth it)
// falls back to the next lower one. *used is the level of the loop returned.
const embedding_detail::Kernels* pick_kernels(simd::Level level, simd::Level* used) {
    simd::checked(level);
    const embedding_detail::Kernels* k = nullptr;
    if (level == simd::Level::avx512) {
        k = embedding_detail::kernels_avx512();
        *used = simd::Level::avx512;
    }
    if (k == nullptr && static_cast<int>(level) >= static_cast<int>(simd::Level::avx2)) {
        k = embedding_detail::kernels_avx2();
        *used = simd::Level::avx2;
    }
    if (k == nullptr) {
        k = embedding_detail::kernels_generic();
        *used = simd::Level::generic;
    }
    return k;
}

struct ActiveKernels {
    const embedding_detail::Kernels* kernels;
    simd::Level used;
};

// Selected once, at the first call (throws std::invalid_argument, retried
// next call, when METAREC_SIMD is bad).
const ActiveKernels& active_kernels() {
    static const ActiveKernels active = [] {
        ActiveKernels a{nullptr, simd::Level::generic};
        a.kernels = pick_kernels(simd::active_level(), &a.used);
        return a;
    }();
    return active;
}

inline embedding_detail::PoolFn<float> pool_fn(const embedding_detail::Kernels* k, float*) {
    return k->pool_f32;
}
inline embedding_detail::PoolFn<double> pool_fn(const embedding_detail::Kernels* k, double*) {
    return k->pool_f64;
}

// ---------------------------------------------------------------------------
// Row-grouped reductions (backward, optimisers).

// For each distinct row u in [u0, u1): dest(u)[0:dim] = sum over the slots s
// of the row (ascending) of coef(s) * src[index[s]][0:dim] (coef ignored when
// `unit`), then done(u, dest(u)). Rows of src are prefetched
// kPrefetchDistance slots ahead, across row boundaries.
struct NoHook {
    template <class T>
    void operator()(i64, T*) const noexcept {}
};

template <class T, class CoefFn, class DestFn, class DoneFn = NoHook>
METAREC_INLINE void reduce_rows(const RowGroups& g, i64 u0, i64 u1, const T* src,
                                const i64* index, i64 dim, bool unit, CoefFn coef, DestFn dest,
                                DoneFn done = DoneFn()) {
    const i64* starts = g.starts.data();
    const i64 s_begin = starts[u0];
    const i64 s_end = starts[u1];
    const i64 lines = std::min<i64>(kMaxPrefetchLines, (dim * static_cast<i64>(sizeof(T)) + 63) / 64);
    for (i64 s = s_begin; s < std::min(s_end, s_begin + kPrefetchDistance); ++s) {
        prefetch_row(src, std::numeric_limits<i64>::max(), dim, index[s], lines);
    }
    for (i64 u = u0; u < u1; ++u) {
        T* METAREC_RESTRICT out = dest(u);
        for (i64 k = 0; k < dim; ++k) out[k] = T(0);
        for (i64 s = starts[u]; s < starts[u + 1]; ++s) {
            if (s + kPrefetchDistance < s_end) {
                prefetch_row(src, std::numeric_limits<i64>::max(), dim,
                             index[s + kPrefetchDistance], lines);
            }
            const T* METAREC_RESTRICT row = src + index[s] * dim;
            if (unit) {
                for (i64 k = 0; k < dim; ++k) out[k] += row[k];
            } else {
                const T c = coef(s);
                for (i64 k = 0; k < dim; ++k) out[k] += c * row[k];
            }
        }
        done(u, out);
    }
}

RowGroups plan_backward(i64 n_bags, i64 dim, const i64* ids, i64 n_ids, const i64* offsets,
                        bool weighted, PoolMode mode, i64 num_rows) {
    check_shape(num_rows, dim);
    if (n_bags < 0) throw std::invalid_argument("negative number of bags");
    if (n_bags == 0 && n_ids > 0) {
        throw std::invalid_argument("offsets is empty but ids has " + std::to_string(n_ids) +
                                    " entries");
    }
    check_offsets(offsets, n_bags, n_ids);
    if (weighted && mode != PoolMode::Sum) {
        throw std::invalid_argument("per-sample weights are only supported with mode='sum'");
    }
    return group_by_row(ids, n_ids, num_rows, offsets, n_bags);
}

template <class T, class DestFn>
void backward_rows(const RowGroups& g, const T* grad_out, i64 dim, const i64* offsets,
                   i64 n_bags, i64 n_ids, const T* weights, PoolMode mode, int num_threads,
                   DestFn dest) {
    const i64 n_unique = static_cast<i64>(g.rows.size());
    const i64* perm = g.perm.data();
    const i64* bags = g.bags.data();
    const bool unit = weights == nullptr && mode == PoolMode::Sum;
    auto coef = [&](i64 s) -> T {
        if (weights) return weights[perm[s]];
        const i64 b = bags[s];
        const i64 len = bag_end(offsets, n_bags, n_ids, b) - offsets[b];
        return T(1) / static_cast<T>(len);
    };
    parallel_for(n_unique, num_threads, 256, [&](i64 u0, i64 u1) {
        reduce_rows<T>(g, u0, u1, grad_out, bags, dim, unit, coef, dest);
    });
}

}  // namespace

// ---------------------------------------------------------------------------

RowGroups group_by_row(const i64* ids, i64 n_ids, i64 num_rows, const i64* offsets,
                       i64 n_bags) {
    if (n_ids < 0 || num_rows < 0) throw std::invalid_argument("negative size");
    check_ids("ids", ids, n_ids, num_rows);
    RowGroups g;
    const std::size_t n = static_cast<std::size_t>(n_ids);
    const bool with_bags = offsets != nullptr;
    g.perm.resize(n);
    if (with_bags) g.bags.resize(n);
    if (num_rows <= 32 * n_ids + (i64(1) << 20)) {
        // Counting sort: stable, O(n_ids + num_rows); cheaper than sorting
        // pairs until the table is much larger than the lookup list.
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
        if (with_bags) {
            for (i64 b = 0; b < n_bags; ++b) {
                const i64 end = bag_end(offsets, n_bags, n_ids, b);
                for (i64 j = offsets[b]; j < end; ++j) {
                    const i64 slot = count[static_cast<std::size_t>(ids[j])]++;
                    g.perm[static_cast<std::size_t>(slot)] = j;
                    g.bags[static_cast<std::size_t>(slot)] = b;
                }
            }
        } else {
            for (std::size_t j = 0; j < n; ++j) {
                g.perm[static_cast<std::size_t>(count[static_cast<std::size_t>(ids[j])]++)] =
                    static_cast<i64>(j);
            }
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
        if (with_bags) {
            std::vector<i64> bag_of(n);
            for (i64 b = 0; b < n_bags; ++b) {
                const i64 end = bag_end(offsets, n_bags, n_ids, b);
                for (i64 j = offsets[b]; j < end; ++j) bag_of[static_cast<std::size_t>(j)] = b;
            }
            for (std::size_t s = 0; s < n; ++s) {
                g.bags[s] = bag_of[static_cast<std::size_t>(g.perm[s])];
            }
        }
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

namespace {
template <class T>
void embedding_bag_impl(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids,
                        const i64* offsets, i64 n_bags, const T* weights, PoolMode mode, T* out,
                        int num_threads, const simd::Level* level_override) {
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
    simd::Level used = simd::Level::generic;
    const embedding_detail::Kernels* k =
        level_override ? pick_kernels(*level_override, &used) : active_kernels().kernels;
    const embedding_detail::PoolFn<T> pool = pool_fn(k, static_cast<T*>(nullptr));
    try {
        parallel_for(n_bags, num_threads, bag_chunk(n_bags, num_threads),
                     [&](i64 b0, i64 b1) {
                         if (!pool(a, b0, b1)) throw std::out_of_range("ids out of range");
                     });
    } catch (const std::out_of_range&) {
        check_ids("ids", ids, n_ids, num_rows);  // name the first bad id
        throw;
    }
}
}  // namespace

template <class T>
void embedding_bag(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids,
                   const i64* offsets, i64 n_bags, const T* weights, PoolMode mode, T* out,
                   int num_threads) {
    embedding_bag_impl<T>(table, num_rows, dim, ids, n_ids, offsets, n_bags, weights, mode, out,
                          num_threads, nullptr);
}

template <class T>
void embedding_bag(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids,
                   const i64* offsets, i64 n_bags, const T* weights, PoolMode mode, T* out,
                   int num_threads, simd::Level level) {
    embedding_bag_impl<T>(table, num_rows, dim, ids, n_ids, offsets, n_bags, weights, mode, out,
                          num_threads, &level);
}

simd::Level embedding_bag_kernel_level(simd::Level level) {
    simd::Level used = simd::Level::generic;
    pick_kernels(level, &used);
    return used;
}

simd::Level embedding_bag_kernel_level() { return active_kernels().used; }

template <class T>
void embedding_bag_backward_dense(const T* grad_out, i64 n_bags, i64 dim, const i64* ids,
                                  i64 n_ids, const i64* offsets, const T* weights, PoolMode mode,
                                  i64 num_rows, T* grad_table, int num_threads) {
    const RowGroups g =
        plan_backward(n_bags, dim, ids, n_ids, offsets, weights != nullptr, mode, num_rows);
    // Zero every row (in parallel: first touch spreads the pages), then
    // overwrite the looked-up ones.
    const i64 zero_chunk = std::max<i64>(1, (1 << 16) / std::max<i64>(1, dim));
    if (dim > 0) {
        parallel_for(num_rows, num_threads, zero_chunk, [&](i64 r0, i64 r1) {
            std::memset(static_cast<void*>(grad_table + r0 * dim), 0,
                        static_cast<std::size_t>((r1 - r0) * dim) * sizeof(T));
        });
    }
    const i64* rows = g.rows.data();
    backward_rows<T>(g, grad_out, dim, offsets, n_bags, n_ids, weights, mode, num_threads,
                     [&](i64 u) { return grad_table + rows[u] * dim; });
}

template <class T>
SparseRows<T> embedding_bag_backward_sparse(const T* grad_out, i64 n_bags, i64 dim,
                                            const i64* ids, i64 n_ids, const i64* offsets,
                                            const T* weights, PoolMode mode, i64 num_rows,
                                            int num_threads) {
    RowGroups g =
        plan_backward(n_bags, dim, ids, n_ids, offsets, weights != nullptr, mode, num_rows);
    SparseRows<T> result;
    // Not zeroed: the reduction writes every element (and takes the page
    // faults in parallel).
    result.values.resize(g.rows.size() * static_cast<std::size_t>(dim));
    T* base = result.values.data();
    backward_rows<T>(g, grad_out, dim, offsets, n_bags, n_ids, weights, mode, num_threads,
                     [&](i64 u) { return base + u * dim; });
    result.rows = std::move(g.rows);
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
    const i64 lines = std::min<i64>(kMaxPrefetchLines, (dim * static_cast<i64>(sizeof(T)) + 63) / 64);
    parallel_for(n_bags, num_threads, bag_chunk(n_bags, num_threads), [&](i64 b0, i64 b1) {
        const i64 p_end = bag_end(offsets, n_bags, n_ids, b1 - 1);
        for (i64 j = offsets[b0]; j < std::min(p_end, offsets[b0] + kPrefetchDistance); ++j) {
            prefetch_row(table, num_rows, dim, ids[j], lines);
        }
        for (i64 b = b0; b < b1; ++b) {
            const T* METAREC_RESTRICT g = grad_out + b * dim;
            const i64 end = bag_end(offsets, n_bags, n_ids, b);
            for (i64 j = offsets[b]; j < end; ++j) {
                if (j + kPrefetchDistance < p_end) {
                    prefetch_row(table, num_rows, dim, ids[j + kPrefetchDistance], lines);
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
    const i64* uniq = g.rows.data();
    parallel_for(n_unique, num_threads, 256, [&](i64 u0, i64 u1) {
        std::vector<T> sum(static_cast<std::size_t>(dim));
        T* buf = sum.data();
        reduce_rows<T>(g, u0, u1, grads, g.perm.data(), dim, true, [](i64) { return T(1); },
                       [buf](i64) { return buf; },
                       [&](i64 u, T* summed) { update(uniq[u], summed); });
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
    template void embedding_bag<T>(const T*, i64, i64, const i64*, i64, const i64*, i64,        \
                                   const T*, PoolMode, T*, int, simd::Level);                  \
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
