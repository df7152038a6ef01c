// Leak check for the C++ kernels: a standalone program (no Python) that calls
// every kernel of metarec_kernels on small inputs, on 1 and 2 threads, through
// both the normal path and every kind of exception path (bad ids, bad offsets,
// bad CSR, NaN inputs, an interrupt request between chunks), a few rounds each.
//
// Built and run by scripts/sanitize.sh against the AddressSanitizer build of
// the static kernel library, with LeakSanitizer on (detect_leaks=1): any heap
// block a kernel allocates and never frees -- including on the paths that
// throw out of an OpenMP region -- is reported and fails the script. Under
// Python the same check drowns in CPython's deliberate exit-time allocations,
// which is why it runs here. Not part of the wheel.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "metarec/adapt.h"
#include "metarec/embedding.h"
#include "metarec/metrics.h"
#include "metarec/parallel.h"
#include "metarec/simd.h"
#include "metarec/topk.h"

using std::int64_t;

namespace {

int g_calls = 0;
int g_throws = 0;

// Runs f, which must throw E (or succeed when expect_throw is false).
template <class E, class F>
void expect(bool expect_throw, const char* what, F&& f) {
    ++g_calls;
    try {
        f();
    } catch (const E&) {
        if (!expect_throw) {
            std::fprintf(stderr, "leak_check: %s threw unexpectedly\n", what);
            std::exit(1);
        }
        ++g_throws;
        return;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "leak_check: %s threw the wrong exception: %s\n", what, e.what());
        std::exit(1);
    }
    if (expect_throw) {
        std::fprintf(stderr, "leak_check: %s did not throw\n", what);
        std::exit(1);
    }
}

template <class T>
std::vector<T> ramp(int64_t n, double scale = 0.37) {
    std::vector<T> v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<T>(std::sin(scale * static_cast<double>(i + 1)));
    return v;
}

bool always_stop() { return true; }

template <class T>
void embedding_kernels(int threads) {
    const int64_t rows = 50, dim = 5, n_ids = 300, n_bags = 40;
    auto table = ramp<T>(rows * dim);
    std::vector<int64_t> ids(n_ids), bad_ids(n_ids), offsets(n_bags), bad_offsets(n_bags);
    for (int64_t i = 0; i < n_ids; ++i) ids[i] = bad_ids[i] = (i * 7) % rows;
    bad_ids[n_ids - 3] = rows;  // out of range
    for (int64_t b = 0; b < n_bags; ++b) offsets[b] = bad_offsets[b] = b * n_ids / n_bags;
    bad_offsets[5] = bad_offsets[4] - 1;  // decreasing
    auto weights = ramp<T>(n_ids);
    std::vector<T> out(n_ids * dim), bags(n_bags * dim), grad_table(rows * dim), wgrad(n_ids);
    auto grad_out = ramp<T>(n_bags * dim);

    using metarec::PoolMode;
    for (bool bad : {false, true}) {
        const int64_t* id = bad ? bad_ids.data() : ids.data();
        expect<std::out_of_range>(bad, "gather", [&] {
            metarec::gather(table.data(), rows, dim, id, n_ids, out.data(), threads);
        });
        for (PoolMode mode : {PoolMode::Sum, PoolMode::Mean}) {
            const T* w = mode == PoolMode::Sum ? weights.data() : nullptr;
            expect<std::out_of_range>(bad, "embedding_bag", [&] {
                metarec::embedding_bag(table.data(), rows, dim, id, n_ids, offsets.data(), n_bags, w, mode,
                                       bags.data(), threads);
            });
            expect<std::out_of_range>(bad, "embedding_bag_backward_dense", [&] {
                metarec::embedding_bag_backward_dense(grad_out.data(), n_bags, dim, id, n_ids, offsets.data(), w,
                                                      mode, rows, grad_table.data(), threads);
            });
            expect<std::out_of_range>(bad, "embedding_bag_backward_sparse", [&] {
                auto s = metarec::embedding_bag_backward_sparse(grad_out.data(), n_bags, dim, id, n_ids,
                                                                offsets.data(), w, mode, rows, threads);
                if (!bad && s.rows.empty()) throw std::logic_error("no rows");
            });
        }
        expect<std::out_of_range>(bad, "embedding_bag_weight_grad", [&] {
            metarec::embedding_bag_weight_grad(grad_out.data(), n_bags, table.data(), rows, dim, id, n_ids,
                                               offsets.data(), wgrad.data(), threads);
        });
        expect<std::out_of_range>(bad, "group_by_row", [&] {
            auto g = metarec::group_by_row(id, n_ids, rows, offsets.data(), n_bags);
            if (!bad && g.rows.empty()) throw std::logic_error("no rows");
        });
        std::vector<T> state(rows, T(0));
        expect<std::out_of_range>(bad, "sparse_sgd", [&] {
            metarec::sparse_sgd(table.data(), rows, dim, id, n_ids, out.data(), T(0.01), threads);
        });
        expect<std::out_of_range>(bad, "sparse_adagrad", [&] {
            metarec::sparse_adagrad(table.data(), state.data(), rows, dim, id, n_ids, out.data(), T(0.01),
                                    T(1e-8), threads);
        });
    }
    expect<std::invalid_argument>(true, "embedding_bag (bad offsets)", [&] {
        metarec::embedding_bag(table.data(), rows, dim, ids.data(), n_ids, bad_offsets.data(), n_bags,
                               static_cast<const T*>(nullptr), PoolMode::Sum, bags.data(), threads);
    });
    expect<std::invalid_argument>(true, "embedding_bag_backward_sparse (bad offsets)", [&] {
        metarec::embedding_bag_backward_sparse(grad_out.data(), n_bags, dim, ids.data(), n_ids,
                                               bad_offsets.data(), static_cast<const T*>(nullptr),
                                               PoolMode::Mean, rows, threads);
    });
    std::vector<char> src(3 << 20, 1), dst(3 << 20);
    metarec::parallel_copy(src.data(), dst.data(), static_cast<int64_t>(src.size()), threads);
}

template <class T>
void topk_kernels(int threads) {
    const int64_t nq = 30, ni = 200, d = 6, k = 7;
    auto scores = ramp<T>(nq * ni);
    auto queries = ramp<T>(nq * d, 0.11), items = ramp<T>(ni * d, 0.23), bias = ramp<T>(ni, 0.5);
    std::vector<int64_t> indptr(nq + 1), indices;
    for (int64_t r = 0; r < nq; ++r) {
        indptr[r] = static_cast<int64_t>(indices.size());
        for (int64_t j = 0; j < r % 4; ++j) indices.push_back(j * 3 + r % 3);
    }
    indptr[nq] = static_cast<int64_t>(indices.size());
    metarec::Exclusion excl{indptr.data(), indices.data(), static_cast<int64_t>(indices.size())};
    auto bad_indices = indices;
    bad_indices.back() = ni + 5;
    metarec::Exclusion bad_excl{indptr.data(), bad_indices.data(), static_cast<int64_t>(indices.size())};
    std::vector<int64_t> out_ids(nq * k);
    std::vector<float> out_scores(nq * k);
    std::vector<T> full(nq * ni);

    expect<std::out_of_range>(false, "check_exclusion", [&] { metarec::check_exclusion(excl, nq, ni); });
    expect<std::out_of_range>(true, "check_exclusion (bad)", [&] { metarec::check_exclusion(bad_excl, nq, ni); });
    expect<std::out_of_range>(false, "topk", [&] {
        metarec::topk(scores.data(), nq, ni, k, excl, threads, out_ids.data(), out_scores.data());
    });
    // k beyond the catalogue: padding path.
    std::vector<int64_t> big_ids(nq * (ni + 3));
    std::vector<float> big_scores(nq * (ni + 3));
    expect<std::out_of_range>(false, "topk (k > n)", [&] {
        metarec::topk(scores.data(), nq, ni, ni + 3, metarec::Exclusion{}, threads, big_ids.data(),
                      big_scores.data());
    });
    for (int lv = 0; lv <= 2; ++lv) {
        auto level = static_cast<metarec::simd::Level>(lv);
        if (!metarec::simd::supported(level)) continue;
        expect<std::invalid_argument>(false, "topk_dot", [&] {
            metarec::topk_dot(queries.data(), nq, items.data(), ni, d, bias.data(), k, excl, threads, level,
                              out_ids.data(), out_scores.data());
        });
        // One query (the blocked, sliced path) and many items.
        expect<std::invalid_argument>(false, "topk_dot (1 query)", [&] {
            metarec::topk_dot(queries.data(), 1, items.data(), ni, d, static_cast<const T*>(nullptr), k,
                              metarec::Exclusion{}, threads, level, out_ids.data(), out_scores.data());
        });
        expect<std::invalid_argument>(false, "dot_scores", [&] {
            metarec::dot_scores(queries.data(), nq, items.data(), ni, d, bias.data(), threads, level, full.data());
        });
        auto nan_items = items;
        nan_items[(ni - 2) * d + 1] = std::numeric_limits<T>::quiet_NaN();
        expect<std::invalid_argument>(true, "topk_dot (NaN item)", [&] {
            metarec::topk_dot(queries.data(), nq, nan_items.data(), ni, d, bias.data(), k, excl, threads, level,
                              out_ids.data(), out_scores.data());
        });
    }
    // An interrupt request between chunks: Interrupted leaves the parallel region.
    metarec::set_interrupt_checker(&always_stop);
    const int64_t big_q = 400, big_i = 3000;
    auto big = ramp<T>(big_q * big_i);
    std::vector<int64_t> bi(big_q * k);
    std::vector<float> bs(big_q * k);
    // The checker is throttled (~50 ms): call until it fires (bounded).
    for (int attempt = 0; attempt < 200; ++attempt) {
        bool stopped = false;
        try {
            metarec::topk(big.data(), big_q, big_i, k, metarec::Exclusion{}, threads, bi.data(), bs.data());
        } catch (const metarec::Interrupted&) {
            stopped = true;
        }
        ++g_calls;
        if (stopped) {
            ++g_throws;
            break;
        }
    }
    metarec::set_interrupt_checker(nullptr);
}

template <class T>
void adapt_kernels(int threads) {
    const int64_t n_items = 40, d = 4, n_users = 25;
    auto H = ramp<T>(n_items * d), c = ramp<T>(n_items, 0.9);
    std::vector<int64_t> s_indptr(n_users + 1), q_indptr(n_users + 1), s_items, q_items;
    std::vector<T> s_targets;
    for (int64_t u = 0; u < n_users; ++u) {
        s_indptr[u] = static_cast<int64_t>(s_items.size());
        q_indptr[u] = static_cast<int64_t>(q_items.size());
        for (int64_t j = 0; j < 1 + u % 5; ++j) {
            s_items.push_back((u * 3 + j * 7) % n_items);
            s_targets.push_back(static_cast<T>((u + j) % 5 + 1));
        }
        for (int64_t j = 0; j < u % 4; ++j) q_items.push_back((u * 5 + j * 11) % n_items);
    }
    s_indptr[n_users] = static_cast<int64_t>(s_items.size());
    q_indptr[n_users] = static_cast<int64_t>(q_items.size());
    auto p0 = ramp<T>(d, 0.3);
    std::vector<T> b0{T(0.1)}, alpha_p(d, T(0.05));

    metarec::LinearHeadBatch<T> batch;
    batch.H = H.data();
    batch.c = c.data();
    batch.n_items = n_items;
    batch.d = d;
    batch.n_users = n_users;
    batch.support_indptr = s_indptr.data();
    batch.support_items = s_items.data();
    batch.support_targets = s_targets.data();
    batch.query_indptr = q_indptr.data();
    batch.query_items = q_items.data();
    batch.p0 = p0.data();
    batch.b0 = b0.data();
    batch.alpha_p = alpha_p.data();
    batch.alpha_per_parameter = true;
    batch.alpha_b = T(0.05);
    batch.steps = 3;
    batch.l2 = T(0.01);
    std::vector<T> traj(n_users * (batch.steps + 1) * (d + 1)), qpred(q_items.size());
    auto gq = ramp<T>(static_cast<int64_t>(q_items.size()), 0.7);

    for (auto loss : {metarec::AdaptLoss::mse, metarec::AdaptLoss::logistic}) {
        batch.loss = loss;
        for (int lv = 0; lv <= 2; ++lv) {
            auto level = static_cast<metarec::simd::Level>(lv);
            if (!metarec::simd::supported(level)) continue;
            expect<std::invalid_argument>(false, "linear_head_forward", [&] {
                batch.validate();
                metarec::linear_head_forward(batch, traj.data(), qpred.data(), threads, level);
            });
            for (auto order : {metarec::AdaptOrder::second, metarec::AdaptOrder::first}) {
                expect<std::invalid_argument>(false, "linear_head_backward", [&] {
                    auto g = metarec::linear_head_backward(batch, traj.data(), gq.data(), order, true, threads,
                                                           level);
                    if (g.H.size() != static_cast<size_t>(n_items * d)) throw std::logic_error("size");
                });
            }
        }
    }
    // Exception paths: a support item out of range, a decreasing indptr.
    auto bad_items = s_items;
    bad_items[bad_items.size() / 2] = n_items;
    batch.support_items = bad_items.data();
    expect<std::out_of_range>(true, "LinearHeadBatch::validate (bad item)", [&] { batch.validate(); });
    expect<std::out_of_range>(true, "linear_head_forward (bad item)", [&] {
        metarec::linear_head_forward(batch, traj.data(), qpred.data(), threads);
    });
    batch.support_items = s_items.data();
    auto bad_indptr = q_indptr;
    bad_indptr[3] = bad_indptr[4] + 1;
    batch.query_indptr = bad_indptr.data();
    expect<std::invalid_argument>(true, "LinearHeadBatch::validate (bad indptr)", [&] { batch.validate(); });
    batch.query_indptr = q_indptr.data();
    expect<std::invalid_argument>(true, "simd::parse_level", [&] { metarec::simd::parse_level("sse9"); });
}

void metrics_kernels(int threads) {
    const int64_t nq = 300, kc = 10, n_items = 60;  // > kMetricsChunk queries: several chunks
    std::vector<int64_t> top(nq * kc), indptr(nq + 1), rel;
    std::vector<double> gains;
    for (int64_t q = 0; q < nq; ++q) {
        for (int64_t j = 0; j < kc; ++j) top[q * kc + j] = j == kc - 1 && q % 3 == 0 ? -1 : (q + j * 5) % n_items;
        indptr[q] = static_cast<int64_t>(rel.size());
        for (int64_t j = 0; j < q % 4; ++j) {
            rel.push_back((q * 2 + j * 13) % n_items);
            gains.push_back(static_cast<double>(j % 3));
        }
    }
    indptr[nq] = static_cast<int64_t>(rel.size());
    std::vector<int64_t> ks{1, 5, 20};
    auto run = [&](const std::vector<int64_t>& t, const std::vector<int64_t>& r, bool with_gains) {
        metarec::RankingInput in;
        in.topk = t.data();
        in.n_queries = nq;
        in.k_cols = kc;
        in.indptr = indptr.data();
        in.indices = r.data();
        in.nnz = static_cast<int64_t>(r.size());
        in.gains = with_gains ? gains.data() : nullptr;
        in.n_items = n_items;
        in.ks = ks.data();
        in.n_ks = static_cast<int64_t>(ks.size());
        const int64_t n_metrics = metarec::kNumRankingMetrics + (with_gains ? 1 : 0);
        std::vector<double> values(n_metrics * ks.size() * nq), means(n_metrics * ks.size());
        std::vector<int64_t> n_rel(nq);
        metarec::RankingOutput out{values.data(), means.data(), n_rel.data(), 0};
        metarec::ranking_metrics(in, out, threads);
    };
    expect<std::out_of_range>(false, "ranking_metrics", [&] { run(top, rel, true); });
    {  // int32 top-k ids and relevant ids
        std::vector<std::int32_t> top32(top.begin(), top.end()), rel32(rel.begin(), rel.end());
        rel32[rel32.size() / 2] = static_cast<std::int32_t>(n_items);
        for (bool bad : {false, true}) {
            expect<std::out_of_range>(bad, "ranking_metrics (int32)", [&] {
                metarec::RankingInput in;
                in.topk = top32.data();
                in.topk_int32 = true;
                in.n_queries = nq;
                in.k_cols = kc;
                in.indptr = indptr.data();
                in.indices = bad ? static_cast<const void*>(rel32.data()) : static_cast<const void*>(rel.data());
                in.indices_int32 = bad;
                in.nnz = static_cast<int64_t>(rel.size());
                in.n_items = n_items;
                in.ks = ks.data();
                in.n_ks = static_cast<int64_t>(ks.size());
                std::vector<double> values(metarec::kNumRankingMetrics * ks.size() * nq);
                std::vector<double> means(metarec::kNumRankingMetrics * ks.size());
                std::vector<int64_t> n_rel(nq);
                metarec::RankingOutput out{values.data(), means.data(), n_rel.data(), 0};
                metarec::ranking_metrics(in, out, threads);
            });
        }
    }
    expect<std::out_of_range>(false, "ranking_metrics (binary)", [&] { run(top, rel, false); });
    auto bad_top = top;
    bad_top[(nq - 1) * kc + 2] = n_items + 1;
    expect<std::out_of_range>(true, "ranking_metrics (bad top-k id)", [&] { run(bad_top, rel, false); });
    auto bad_rel = rel;
    bad_rel.back() = -4;
    expect<std::out_of_range>(true, "ranking_metrics (bad relevant id)", [&] { run(top, bad_rel, true); });

    const int64_t n = 1000, groups = 37;
    auto pred = ramp<float>(n), truth_f = ramp<float>(n, 0.13);
    auto truth = ramp<double>(n, 0.13);
    for (auto& t : truth) t = std::fabs(t) * 4;
    std::vector<int64_t> gptr(groups + 1);
    for (int64_t g = 0; g <= groups; ++g) gptr[g] = g * n / groups;
    std::vector<double> gmae(groups), grmse(groups);
    expect<std::invalid_argument>(false, "rating_metrics", [&] {
        metarec::RatingInput<float, float> in{pred.data(), truth_f.data(), n, gptr.data(), groups};
        metarec::RatingOutput out;
        out.group_mae = gmae.data();
        out.group_rmse = grmse.data();
        metarec::rating_metrics(in, out, threads);
    });
    expect<std::invalid_argument>(false, "rating_metrics (double)", [&] {
        metarec::RatingInput<double, double> in{truth.data(), truth.data(), n, nullptr, 0};
        metarec::RatingOutput out;
        metarec::rating_metrics(in, out, threads);
    });
    std::vector<double> qv(ks.size() * groups), qm(ks.size());
    expect<std::invalid_argument>(false, "query_ndcg", [&] {
        metarec::QueryNdcgInput<float, double> in{pred.data(), truth.data(), n, gptr.data(), groups, ks.data(),
                                                   static_cast<int64_t>(ks.size())};
        metarec::QueryNdcgOutput out{qv.data(), qm.data(), 0};
        metarec::query_ndcg(in, out, threads);
    });
}

}  // namespace

int main() {
    expect<std::invalid_argument>(true, "resolve_num_threads(-5)", [] { metarec::resolve_num_threads(-5); });
    for (int round = 0; round < 3; ++round) {
        for (int threads : {1, 2}) {
            embedding_kernels<float>(threads);
            embedding_kernels<double>(threads);
            topk_kernels<float>(threads);
            topk_kernels<double>(threads);
            adapt_kernels<float>(threads);
            adapt_kernels<double>(threads);
            metrics_kernels(threads);
        }
    }
    std::printf("leak_check: %d kernel calls (%d through an exception path) done\n", g_calls, g_throws);
    return 0;
}
