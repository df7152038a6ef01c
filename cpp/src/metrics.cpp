// Ranking and rating metrics (see metarec/metrics.h).
//
// Ranking follows RecBole's idea -- find the hits of a top-k row once, then
// read every cutoff off running sums -- but per query in one sequential pass:
// the query's relevant items go into a small open-addressing hash table
// (cache resident whatever the catalogue size, no sorted input needed) behind
// an 8 KiB hashed bit filter that rejects most non-relevant ids with one
// well-predicted test, the top-k row is scanned once, and each cutoff's values
// are written when the scan reaches it. Queries are independent, so the
// parallel split never changes a value; means are per-chunk partial sums
// (chunks of fixed size) added serially in chunk order.
#include "metarec/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "metarec/parallel.h"

namespace metarec {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_ks(const std::int64_t* ks, std::int64_t n_ks) {
    if (n_ks <= 0) throw std::invalid_argument("ks must not be empty");
    for (std::int64_t j = 0; j < n_ks; ++j) {
        if (ks[j] < 1) throw std::invalid_argument("ks must be positive, got " + std::to_string(ks[j]));
        if (j > 0 && ks[j] <= ks[j - 1]) throw std::invalid_argument("ks must be strictly ascending");
    }
}

// indptr[0] == 0, non-decreasing, indptr[n_rows] == nnz. Returns the longest row.
std::int64_t check_indptr(const std::int64_t* indptr, std::int64_t n_rows, std::int64_t nnz,
                          const char* name) {
    if (indptr == nullptr) throw std::invalid_argument(std::string(name) + " is missing");
    if (indptr[0] != 0) {
        throw std::invalid_argument(std::string(name) + " must start at 0, got " +
                                    std::to_string(indptr[0]));
    }
    std::int64_t longest = 0;
    for (std::int64_t i = 0; i < n_rows; ++i) {
        const std::int64_t len = indptr[i + 1] - indptr[i];
        if (len < 0) {
            throw std::invalid_argument(std::string(name) + " decreases at row " + std::to_string(i) +
                                        " (" + std::to_string(indptr[i]) + " -> " +
                                        std::to_string(indptr[i + 1]) + ")");
        }
        longest = std::max(longest, len);
    }
    if (indptr[n_rows] != nnz) {
        throw std::invalid_argument(std::string(name) + " ends at " + std::to_string(indptr[n_rows]) +
                                    " but there are " + std::to_string(nnz) + " entries");
    }
    return longest;
}

// disc[r] = 1 / log2(r + 2): the discount of 0-based rank r.
std::vector<double> discounts(std::int64_t n) {
    std::vector<double> disc(static_cast<std::size_t>(n));
    for (std::int64_t r = 0; r < n; ++r) disc[r] = 1.0 / std::log2(static_cast<double>(r) + 2.0);
    return disc;
}

// Adds the non-NaN entries of rows x [begin, end) of a [n_rows, n_cols]
// matrix into sums[n_rows]; count = non-NaN entries of row 0 (the kernels
// write NaN into every row of a skipped query, so the count is shared). Four
// interleaved accumulators break the add latency chain; the summation order
// depends only on (begin, end), which the fixed chunking pins down.
void chunk_partial_sums(const double* values, std::int64_t n_rows, std::int64_t n_cols,
                        std::int64_t begin, std::int64_t end, double* sums, double* count) {
    for (std::int64_t m = 0; m < n_rows; ++m) {
        const double* v = values + m * n_cols;
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        std::int64_t c = 0;
        for (std::int64_t q = begin; q < end; ++q) {
            const double x = v[q];
            const bool ok = !std::isnan(x);
            acc[q & 3] += ok ? x : 0.0;
            c += ok;
        }
        sums[m] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        if (m == 0) *count = static_cast<double>(c);
    }
}

// Serial combination of the chunk sums, in chunk order.
std::int64_t combine_means(const std::vector<double>& sums, const std::vector<double>& counts,
                           std::int64_t n_rows, double* means) {
    double total = 0.0;
    for (double c : counts) total += c;
    for (std::int64_t m = 0; m < n_rows; ++m) {
        double s = 0.0;
        for (std::size_t c = 0; c < counts.size(); ++c) s += sums[c * n_rows + m];
        means[m] = total > 0 ? s / total : kNaN;
    }
    return static_cast<std::int64_t>(total);
}

// Graded gain 2^g - 1. Integer g (the usual ratings) skips libm's exp2;
// both branches give the same double.
inline double graded_gain(double g) {
    if (g >= 0.0 && g < 63.0 && g == static_cast<double>(static_cast<int>(g))) {
        return static_cast<double>((std::uint64_t{1} << static_cast<int>(g)) - 1);
    }
    return std::exp2(g) - 1.0;
}

// Sorts the first `top` elements of [first, last) by `comp` into place (the
// rest in unspecified order): nth_element + sort, O(n + top log top), which
// beats std::partial_sort's heap when top is a large fraction of n.
template <class It, class Comp>
void sort_top(It first, It last, std::int64_t top, Comp comp) {
    if (top <= 0) return;
    if (top < last - first) std::nth_element(first, first + top, last, comp);
    std::sort(first, first + top, comp);
}

// The `top` largest graded gains 2^g - 1 over g[0, n), descending, into
// ideal[0, top). Ratings are usually small integers: those are counted into
// buckets (O(n + max g)) instead of sorted; equal values make the result
// identical either way. `counts` is scratch.
template <class G>
void ideal_gains(const G* g, std::int64_t n, std::int64_t top, std::vector<double>& ideal,
                 std::vector<std::int64_t>& counts) {
    constexpr int kBuckets = 64;
    int gmax = -1;
    for (std::int64_t i = 0; i < n; ++i) {
        const double x = static_cast<double>(g[i]);
        if (!(x >= 0.0 && x < kBuckets && x == static_cast<double>(static_cast<int>(x)))) {
            gmax = kBuckets;  // not a small integer: sort
            break;
        }
        gmax = std::max(gmax, static_cast<int>(x));
    }
    ideal.resize(static_cast<std::size_t>(n));
    if (gmax < kBuckets) {
        counts.assign(static_cast<std::size_t>(gmax + 1), 0);
        for (std::int64_t i = 0; i < n; ++i) ++counts[static_cast<int>(g[i])];
        std::int64_t r = 0;
        for (int v = gmax; v >= 0 && r < top; --v) {
            const double gv = graded_gain(static_cast<double>(v));
            for (std::int64_t c = counts[v]; c > 0 && r < top; --c) ideal[r++] = gv;
        }
        return;
    }
    for (std::int64_t i = 0; i < n; ++i) ideal[i] = graded_gain(static_cast<double>(g[i]));
    sort_top(ideal.begin(), ideal.end(), top, [](double a, double b) { return a > b; });
}

// The first error found in a chunk (queries are scanned in order inside a
// chunk, so the first error of the first failing chunk is the first overall).
struct FirstError {
    enum Kind { kNone = 0, kTopkRange, kRelevantRange, kRelevantDuplicate, kGroupIndptr };
    Kind kind = kNone;
    std::int64_t row = 0;
    std::int64_t col = 0;
    std::int64_t value = 0;
};

[[noreturn]] void throw_error(const FirstError& e, std::int64_t n_items) {
    const std::string where =
        " (row " + std::to_string(e.row) + ", position " + std::to_string(e.col) + ")";
    switch (e.kind) {
        case FirstError::kTopkRange:
            throw std::out_of_range("topk_ids contains id " + std::to_string(e.value) + where +
                                    ", outside [-1, " + std::to_string(n_items) + ")");
        case FirstError::kRelevantRange:
            throw std::out_of_range("relevant contains column " + std::to_string(e.value) + where +
                                    ", outside [0, " + std::to_string(n_items) + ")");
        case FirstError::kRelevantDuplicate:
            throw std::invalid_argument("relevant lists item " + std::to_string(e.value) +
                                        " twice in row " + std::to_string(e.row) +
                                        " (for a scipy matrix, call sum_duplicates())");
        default:
            throw std::logic_error("metrics: unknown error");
    }
}

// Open-addressing set of a query's relevant items: key = item id, slot =
// the item's position in its CSR row (-1 once a top-k position consumed it).
struct RelevantSet {
    struct Slot {
        std::int64_t key;
        std::int64_t pos;
    };
    std::vector<Slot> slots;
    std::uint64_t mask = 0;
    int shift = 64;

    void reset(std::int64_t n) {
        std::uint64_t cap = 8;
        int bits = 3;
        while (cap < static_cast<std::uint64_t>(2 * n)) {
            cap <<= 1;
            ++bits;
        }
        mask = cap - 1;
        shift = 64 - bits;
        slots.assign(cap, Slot{-1, -1});
    }
    std::uint64_t home(std::int64_t id) const {
        return (static_cast<std::uint64_t>(id) * 0x9E3779B97F4A7C15ULL) >> shift;
    }
    // False if `id` is already present.
    bool insert(std::int64_t id, std::int64_t pos) {
        for (std::uint64_t h = home(id);; h = (h + 1) & mask) {
            Slot& s = slots[h];
            if (s.key == id) return false;
            if (s.key < 0) {
                s.key = id;
                s.pos = pos;
                return true;
            }
        }
    }
    // The row position of `id` the first time it is looked up, -1 otherwise.
    std::int64_t take(std::int64_t id) {
        for (std::uint64_t h = home(id);; h = (h + 1) & mask) {
            Slot& s = slots[h];
            if (s.key == id) {
                const std::int64_t pos = s.pos;
                s.pos = -1;
                return pos;
            }
            if (s.key < 0) return -1;
        }
    }
};

// A 64 Ki-bit hashed pre-filter in front of RelevantSet (8 KiB, stays in L1):
// a clear bit proves an id is not relevant, which is the common case while
// scanning a top-k row, with a well-predicted branch and no table probe.
struct RelevantFilter {
    static constexpr int kBits = 16;
    std::vector<std::uint64_t> words = std::vector<std::uint64_t>(std::size_t{1} << (kBits - 6), 0);
    static std::uint64_t slot(std::int64_t id) {
        return (static_cast<std::uint64_t>(id) * 0xD6E8FEB86659FD93ULL) >> (64 - kBits);
    }
    void set(std::int64_t id) {
        const std::uint64_t h = slot(id);
        words[h >> 6] |= std::uint64_t{1} << (h & 63);
    }
    void clear(std::int64_t id) { words[slot(id) >> 6] = 0; }
    bool maybe(std::int64_t id) const {
        const std::uint64_t h = slot(id);
        return (words[h >> 6] >> (h & 63)) & 1;
    }
};

template <class TopT, class IdxT>
void ranking_impl(const RankingInput& in, RankingOutput& out, int threads) {
    const TopT* topk = static_cast<const TopT*>(in.topk);
    const IdxT* indices = static_cast<const IdxT*>(in.indices);
    const std::int64_t nq = in.n_queries, K = in.k_cols, nk = in.n_ks, n_items = in.n_items;
    const std::int64_t* ks = in.ks;
    const bool graded = in.gains != nullptr;
    const std::int64_t n_metrics = kNumRankingMetrics + (graded ? 1 : 0);
    const std::int64_t max_k = ks[nk - 1];
    const std::int64_t scan = std::min(K, max_k);  // positions that can hit

    const std::int64_t longest = check_indptr(in.indptr, nq, in.nnz, "relevant.indptr");
    // Discounts for every rank a DCG (scan) or an IDCG (min(max_k, |rel|)) can reach.
    const std::int64_t n_disc = std::max(scan, std::min(max_k, longest));
    const std::vector<double> disc = discounts(n_disc);
    std::vector<double> idcg_binary(static_cast<std::size_t>(n_disc) + 1, 0.0);
    for (std::int64_t r = 0; r < n_disc; ++r) idcg_binary[r + 1] = idcg_binary[r] + disc[r];

    const std::int64_t n_chunks = (nq + kMetricsChunk - 1) / kMetricsChunk;
    std::vector<double> chunk_sums(static_cast<std::size_t>(n_chunks * n_metrics * nk), 0.0);
    std::vector<double> chunk_counts(static_cast<std::size_t>(n_chunks), 0.0);
    std::vector<FirstError> errors(static_cast<std::size_t>(n_chunks));

    parallel_for(nq, threads, kMetricsChunk, [&](std::int64_t begin, std::int64_t end) {
        const std::int64_t chunk = begin / kMetricsChunk;
        FirstError& err = errors[chunk];
        RelevantSet set;
        RelevantFilter filter;
        std::vector<double> gain;   // 2^g - 1 by row position
        std::vector<double> ideal;  // sorted gains, then their IDCG prefix
        std::vector<std::int64_t> counts;
        auto put = [&](int metric, std::int64_t j, std::int64_t q, double v) {
            out.values[(metric * nk + j) * nq + q] = v;
        };
        for (std::int64_t q = begin; q < end; ++q) {
            const std::int64_t lo = in.indptr[q], nrel = in.indptr[q + 1] - lo;
            const TopT* row = topk + q * K;
            // Bounds of the whole top-k row (also past the last cutoff):
            // id in [-1, n_items) <=> (id + 1) as unsigned <= n_items. Branch-free
            // so that it vectorises; the offender is located only on failure.
            bool bad = false;
            for (std::int64_t r = 0; r < K; ++r) {
                bad |= static_cast<std::uint64_t>(static_cast<std::int64_t>(row[r])) + 1 >
                       static_cast<std::uint64_t>(n_items);
            }
            if (bad) {
                for (std::int64_t r = 0; r < K; ++r) {
                    const std::int64_t id = static_cast<std::int64_t>(row[r]);
                    if (id < -1 || id >= n_items) {
                        err = FirstError{FirstError::kTopkRange, q, r, id};
                        return;  // reported after the loop
                    }
                }
            }
            set.reset(nrel);
            for (std::int64_t p = 0; p < nrel; ++p) {
                const std::int64_t id = static_cast<std::int64_t>(indices[lo + p]);
                if (id < 0 || id >= n_items) {
                    err = FirstError{FirstError::kRelevantRange, q, p, id};
                } else if (!set.insert(id, p)) {
                    err = FirstError{FirstError::kRelevantDuplicate, q, p, id};
                } else {
                    filter.set(id);
                    continue;
                }
                return;  // reported after the loop (set and filter die with the chunk)
            }
            out.n_relevant[q] = nrel;
            if (nrel == 0) {
                for (std::int64_t m = 0; m < n_metrics; ++m)
                    for (std::int64_t j = 0; j < nk; ++j) put(static_cast<int>(m), j, q, kNaN);
                continue;
            }
            if (graded) {
                const std::int64_t top = std::min(max_k, nrel);
                gain.resize(static_cast<std::size_t>(nrel));
                for (std::int64_t p = 0; p < nrel; ++p) gain[p] = graded_gain(in.gains[lo + p]);
                ideal_gains(in.gains + lo, nrel, top, ideal, counts);
                double acc = 0.0;  // ideal[r] becomes the IDCG over ranks < r + 1
                for (std::int64_t r = 0; r < top; ++r) {
                    acc += ideal[r] * disc[r];
                    ideal[r] = acc;
                }
            }
            std::int64_t hits = 0, first_hit = -1;
            double dcg = 0.0, dcg_graded = 0.0, ap = 0.0;
            auto record = [&](std::int64_t jj) {
                const std::int64_t k = ks[jj];
                const std::int64_t cap = std::min(k, nrel);
                const double h = static_cast<double>(hits);
                put(kPrecision, jj, q, h / static_cast<double>(k));
                put(kRecall, jj, q, h / static_cast<double>(nrel));
                put(kRecallCapped, jj, q, h / static_cast<double>(cap));
                put(kNdcg, jj, q, dcg / idcg_binary[cap]);
                put(kHr, jj, q, hits > 0 ? 1.0 : 0.0);
                put(kMap, jj, q, ap / static_cast<double>(cap));
                put(kMrr, jj, q, first_hit >= 0 ? 1.0 / static_cast<double>(first_hit + 1) : 0.0);
                if (graded) {
                    const double idcg = ideal[cap - 1];
                    put(kNdcgGraded, jj, q, idcg > 0.0 ? dcg_graded / idcg : 0.0);
                }
            };
            // Scan up to each cutoff in turn, recording it when reached (a
            // cutoff beyond the row is recorded with the totals of the row).
            std::int64_t r = 0;
            for (std::int64_t j = 0; j < nk; ++j) {
                const std::int64_t stop = std::min(ks[j], scan);
                for (; r < stop; ++r) {
                    const std::int64_t id = static_cast<std::int64_t>(row[r]);
                    if (id < 0 || !filter.maybe(id)) continue;
                    const std::int64_t pos = set.take(id);
                    if (pos < 0) continue;  // not relevant, or a repeat
                    ++hits;
                    dcg += disc[r];
                    if (graded) dcg_graded += gain[pos] * disc[r];
                    ap += static_cast<double>(hits) / static_cast<double>(r + 1);
                    if (first_hit < 0) first_hit = r;
                }
                record(j);
            }
            for (std::int64_t p = 0; p < nrel; ++p) filter.clear(indices[lo + p]);
        }
        chunk_partial_sums(out.values, n_metrics * nk, nq, begin, end,
                           &chunk_sums[chunk * n_metrics * nk], &chunk_counts[chunk]);
    });
    for (const FirstError& e : errors)
        if (e.kind != FirstError::kNone) throw_error(e, n_items);
    out.n_evaluated = combine_means(chunk_sums, chunk_counts, n_metrics * nk, out.means);
}

}  // namespace

void ranking_metrics(const RankingInput& in, RankingOutput& out, int num_threads) {
    check_ks(in.ks, in.n_ks);
    if (in.n_queries < 0 || in.k_cols < 0 || in.n_items < 0) {
        throw std::invalid_argument("ranking_metrics: negative size");
    }
    const int threads = resolve_num_threads(num_threads);
    if (in.topk_int32) {
        if (in.indices_int32) ranking_impl<std::int32_t, std::int32_t>(in, out, threads);
        else ranking_impl<std::int32_t, std::int64_t>(in, out, threads);
    } else {
        if (in.indices_int32) ranking_impl<std::int64_t, std::int32_t>(in, out, threads);
        else ranking_impl<std::int64_t, std::int64_t>(in, out, threads);
    }
}

// ---------------------------------------------------------------- rating

template <class P, class T>
void rating_metrics(const RatingInput<P, T>& in, RatingOutput& out, int num_threads) {
    const int threads = resolve_num_threads(num_threads);
    const std::int64_t n = in.n;
    if (n < 0) throw std::invalid_argument("rating_metrics: negative size");
    // Global sums: fixed element chunks, combined in order.
    constexpr std::int64_t kChunk = 1 << 14;
    const std::int64_t n_chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> abs_part(static_cast<std::size_t>(n_chunks), 0.0);
    std::vector<double> sq_part(static_cast<std::size_t>(n_chunks), 0.0);
    parallel_for(n, threads, kChunk, [&](std::int64_t begin, std::int64_t end) {
        double a = 0.0, s = 0.0;
        for (std::int64_t i = begin; i < end; ++i) {
            const double d = static_cast<double>(in.pred[i]) - static_cast<double>(in.truth[i]);
            a += std::fabs(d);
            s += d * d;
        }
        abs_part[begin / kChunk] = a;
        sq_part[begin / kChunk] = s;
    });
    out.abs_sum = 0.0;
    out.sq_sum = 0.0;
    for (std::int64_t c = 0; c < n_chunks; ++c) {
        out.abs_sum += abs_part[c];
        out.sq_sum += sq_part[c];
    }
    if (in.indptr == nullptr) return;
    check_indptr(in.indptr, in.n_groups, n, "indptr");
    parallel_for(in.n_groups, threads, kMetricsChunk, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t u = begin; u < end; ++u) {
            const std::int64_t lo = in.indptr[u], hi = in.indptr[u + 1];
            double a = 0.0, s = 0.0;
            for (std::int64_t i = lo; i < hi; ++i) {
                const double d = static_cast<double>(in.pred[i]) - static_cast<double>(in.truth[i]);
                a += std::fabs(d);
                s += d * d;
            }
            const double cnt = static_cast<double>(hi - lo);
            out.group_mae[u] = hi > lo ? a / cnt : kNaN;
            out.group_rmse[u] = hi > lo ? std::sqrt(s / cnt) : kNaN;
        }
    });
}

// ------------------------------------------------------------ query nDCG

template <class P, class T>
void query_ndcg(const QueryNdcgInput<P, T>& in, QueryNdcgOutput& out, int num_threads) {
    check_ks(in.ks, in.n_ks);
    const int threads = resolve_num_threads(num_threads);
    const std::int64_t ng = in.n_groups, nk = in.n_ks;
    const std::int64_t max_k = in.ks[nk - 1];
    const std::int64_t longest = check_indptr(in.indptr, ng, in.n, "indptr");
    const std::vector<double> disc = discounts(std::min(max_k, longest));

    const std::int64_t n_chunks = (ng + kMetricsChunk - 1) / kMetricsChunk;
    std::vector<double> chunk_sums(static_cast<std::size_t>(n_chunks * nk), 0.0);
    std::vector<double> chunk_counts(static_cast<std::size_t>(n_chunks), 0.0);

    parallel_for(ng, threads, kMetricsChunk, [&](std::int64_t begin, std::int64_t end) {
        std::vector<std::int64_t> order;
        std::vector<double> ideal, dcg;
        std::vector<std::int64_t> counts;
        for (std::int64_t u = begin; u < end; ++u) {
            const std::int64_t lo = in.indptr[u], len = in.indptr[u + 1] - lo;
            const std::int64_t top = std::min(max_k, len);
            const P* pred = in.pred + lo;
            const T* truth = in.truth + lo;
            ideal_gains(truth, len, top, ideal, counts);
            if (len == 0 || !(ideal[0] > 0.0)) {  // IDCG == 0: skipped
                for (std::int64_t j = 0; j < nk; ++j) out.values[j * ng + u] = kNaN;
                continue;
            }
            // Predicted order: score descending, ties by position.
            order.resize(static_cast<std::size_t>(len));
            for (std::int64_t i = 0; i < len; ++i) order[i] = i;
            sort_top(order.begin(), order.end(), top, [pred](std::int64_t a, std::int64_t b) {
                return pred[a] > pred[b] || (pred[a] == pred[b] && a < b);
            });
            dcg.resize(static_cast<std::size_t>(top));
            double d = 0.0, id = 0.0;
            for (std::int64_t r = 0; r < top; ++r) {
                d += graded_gain(static_cast<double>(truth[order[r]])) * disc[r];
                id += ideal[r] * disc[r];
                dcg[r] = d;
                ideal[r] = id;
            }
            for (std::int64_t j = 0; j < nk; ++j) {
                const std::int64_t cut = std::min(in.ks[j], len);
                out.values[j * ng + u] = dcg[cut - 1] / ideal[cut - 1];
            }
        }
        chunk_partial_sums(out.values, nk, ng, begin, end, &chunk_sums[(begin / kMetricsChunk) * nk],
                           &chunk_counts[begin / kMetricsChunk]);
    });
    out.n_evaluated = combine_means(chunk_sums, chunk_counts, nk, out.means);
}

#define METAREC_INSTANTIATE(P, T)                                                         \
    template void rating_metrics<P, T>(const RatingInput<P, T>&, RatingOutput&, int); \
    template void query_ndcg<P, T>(const QueryNdcgInput<P, T>&, QueryNdcgOutput&, int);
METAREC_INSTANTIATE(float, float)
METAREC_INSTANTIATE(float, double)
METAREC_INSTANTIATE(double, float)
METAREC_INSTANTIATE(double, double)
#undef METAREC_INSTANTIATE

}  // namespace metarec
