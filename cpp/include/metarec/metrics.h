// Ranking and rating metrics over many queries (users) at once.
//
// Every kernel computes each query's values independently and sequentially
// (one thread per query), and every mean is a sum of fixed-size chunk partial
// sums combined serially in chunk order, so results are bit-identical for any
// thread count. Inputs are bounds-checked here as well: a bad id or offset
// throws std::out_of_range / std::invalid_argument naming the first offending
// value in query order (never an arbitrary one picked by the thread schedule),
// and nothing is ever read out of range.
#pragma once

#include <cstdint>

namespace metarec {

// Row order of RankingOutput::values. ndcg_graded is present only with gains.
enum RankingMetric : int {
    kPrecision = 0,     // hits@k / k
    kRecall = 1,        // hits@k / |rel|
    kRecallCapped = 2,  // hits@k / min(k, |rel|)
    kNdcg = 3,          // binary gain, 1/log2(rank + 1) discount, IDCG over min(k, |rel|) hits
    kHr = 4,            // 1 if hits@k > 0
    kMap = 5,           // sum_{hit at rank r <= k} precision@r / min(k, |rel|)
    kMrr = 6,           // 1 / rank of the first hit if it is <= k, else 0
    kNdcgGraded = 7,    // gain 2^g - 1, IDCG from the gains sorted descending
};
constexpr int kNumRankingMetrics = 7;  // without ndcg_graded

// Queries handled by one parallel chunk. Fixed (independent of the thread
// count) because the means are summed per chunk.
constexpr std::int64_t kMetricsChunk = 256;

struct RankingInput {
    const void* topk = nullptr;  // [n_queries, k_cols], int32 or int64; -1 = padding
    bool topk_int32 = false;
    std::int64_t n_queries = 0;
    std::int64_t k_cols = 0;
    const std::int64_t* indptr = nullptr;  // [n_queries + 1], relevant items per query
    const void* indices = nullptr;         // [nnz], int32 or int64, any order within a row
    std::int64_t nnz = 0;                  // length of indices (and gains); == indptr[n_queries]
    bool indices_int32 = false;
    const double* gains = nullptr;  // aligned with indices, >= 0, or nullptr (binary only)
    std::int64_t n_items = 0;       // ids must lie in [0, n_items)
    const std::int64_t* ks = nullptr;  // cutoffs, strictly ascending, >= 1
    std::int64_t n_ks = 0;
};

struct RankingOutput {
    // [n_metrics, n_ks, n_queries]; n_metrics = 7 (+1 with gains) in
    // RankingMetric order. NaN for a query with no relevant item.
    double* values = nullptr;
    double* means = nullptr;             // [n_metrics, n_ks], NaN if nothing was evaluated
    std::int64_t* n_relevant = nullptr;  // [n_queries], distinct relevant items per query
    std::int64_t n_evaluated = 0;
};

// Precision, recall (plain and capped), nDCG (binary and graded), hit rate,
// MAP and MRR at every cutoff in one pass over each top-k row. A row is read
// as if padded with -1 up to max(ks): a cutoff beyond k_cols uses the ids
// available, and padding is never a hit but still counts as a slot (so
// precision@k always divides by k). An id repeated within a row counts once
// (its first occurrence). Throws std::out_of_range for a top-k id outside
// [-1, n_items) or a relevant id outside [0, n_items), std::invalid_argument
// for a relevant item listed twice in one row or a malformed indptr.
void ranking_metrics(const RankingInput& in, RankingOutput& out, int num_threads);

// Mean absolute and root-mean-square error over n pairs, plus, when `indptr`
// (n_groups + 1 offsets into the pairs) is given, the same per group.
// P and T are float or double; accumulation is in double.
template <class P, class T>
struct RatingInput {
    const P* pred = nullptr;
    const T* truth = nullptr;
    std::int64_t n = 0;
    const std::int64_t* indptr = nullptr;  // optional
    std::int64_t n_groups = 0;
};

struct RatingOutput {
    double abs_sum = 0.0;  // sum |pred - true| over all pairs (chunked, fixed order)
    double sq_sum = 0.0;   // sum (pred - true)^2
    double* group_mae = nullptr;   // [n_groups] (only with indptr); NaN for an empty group
    double* group_rmse = nullptr;  // [n_groups]
};

template <class P, class T>
void rating_metrics(const RatingInput<P, T>& in, RatingOutput& out, int num_threads);

// MeLU's within-query ranking: for each group [indptr[u], indptr[u+1]) order
// the rows by predicted score (descending, ties by position) and compute
// nDCG@k with gain 2^true - 1 against the ideal order of the true ratings.
// A cutoff beyond the group size uses the whole group. Groups whose IDCG is 0
// (empty, or every true rating 0) get NaN and are not evaluated. `truth` must
// be >= 0 and finite, `pred` not NaN (checked by the caller).
template <class P, class T>
struct QueryNdcgInput {
    const P* pred = nullptr;
    const T* truth = nullptr;
    std::int64_t n = 0;
    const std::int64_t* indptr = nullptr;  // [n_groups + 1]
    std::int64_t n_groups = 0;
    const std::int64_t* ks = nullptr;  // strictly ascending, >= 1
    std::int64_t n_ks = 0;
};

struct QueryNdcgOutput {
    double* values = nullptr;  // [n_ks, n_groups]
    double* means = nullptr;   // [n_ks]
    std::int64_t n_evaluated = 0;
};

template <class P, class T>
void query_ndcg(const QueryNdcgInput<P, T>& in, QueryNdcgOutput& out, int num_threads);

}  // namespace metarec
