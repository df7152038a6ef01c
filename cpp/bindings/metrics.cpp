// Bindings for the metric kernels. The Python wrappers (metarec_fast.metrics)
// validate and convert; here arrays are taken as they are (C-contiguous, the
// expected dtypes), shapes are re-checked, outputs are allocated, and the
// kernel runs with the GIL released.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.h"
#include "metarec/metrics.h"

namespace py = pybind11;
using metarec_py::carray;
using metarec_py::empty;
using metarec_py::require_ndim;
using metarec_py::without_gil;

namespace {

template <class T>
bool is_c(const py::array& a) {
    return py::isinstance<carray<T>>(a);
}

// Either int32 or int64, C-contiguous; returns true for int32.
bool index_kind(const py::array& a, const char* name) {
    if (is_c<std::int32_t>(a)) return true;
    if (is_c<std::int64_t>(a)) return false;
    throw py::type_error(std::string(name) + " must be a C-contiguous int32 or int64 array");
}

// Either float32 or float64, C-contiguous; returns true for float32.
bool float_kind(const py::array& a, const char* name) {
    if (is_c<float>(a)) return true;
    if (is_c<double>(a)) return false;
    throw py::type_error(std::string(name) + " must be a C-contiguous float32 or float64 array");
}

carray<std::int64_t> strict_int64(const py::array& a, const char* name) {
    if (!is_c<std::int64_t>(a)) {
        throw py::type_error(std::string(name) + " must be a C-contiguous int64 array");
    }
    require_ndim(a, 1, name);
    return py::reinterpret_borrow<carray<std::int64_t>>(a);
}

py::tuple ranking(const py::array& topk, const py::array& indptr_a, const py::array& indices,
                  const py::object& gains_o, std::int64_t n_items, const py::array& ks_a,
                  int num_threads) {
    require_ndim(topk, 2, "topk_ids");
    require_ndim(indices, 1, "relevant.indices");
    const bool topk32 = index_kind(topk, "topk_ids");
    const bool idx32 = index_kind(indices, "relevant.indices");
    auto indptr = strict_int64(indptr_a, "relevant.indptr");
    auto ks = strict_int64(ks_a, "ks");
    const std::int64_t nq = topk.shape(0), K = topk.shape(1), nk = ks.shape(0);
    if (indptr.shape(0) != nq + 1) {
        throw std::invalid_argument("relevant.indptr must have " + std::to_string(nq + 1) +
                                    " entries, got " + std::to_string(indptr.shape(0)));
    }
    const double* gains = nullptr;
    carray<double> gains_arr;
    if (!gains_o.is_none()) {
        if (!py::isinstance<carray<double>>(gains_o)) {
            throw py::type_error("gains must be a C-contiguous float64 array");
        }
        gains_arr = py::reinterpret_borrow<carray<double>>(gains_o);
        require_ndim(gains_arr, 1, "gains");
        if (gains_arr.shape(0) != indices.shape(0)) {
            throw std::invalid_argument("gains has " + std::to_string(gains_arr.shape(0)) +
                                        " entries, relevant.indices " +
                                        std::to_string(indices.shape(0)));
        }
        gains = gains_arr.data();
    }
    const std::int64_t n_metrics = metarec::kNumRankingMetrics + (gains ? 1 : 0);
    auto values = empty<double>({n_metrics, nk, nq});
    auto means = empty<double>({n_metrics, nk});
    auto n_relevant = empty<std::int64_t>({nq});

    metarec::RankingInput in;
    in.topk = topk.data();
    in.topk_int32 = topk32;
    in.n_queries = nq;
    in.k_cols = K;
    in.indptr = indptr.data();
    in.indices = indices.data();
    in.indices_int32 = idx32;
    in.nnz = indices.shape(0);
    in.gains = gains;
    in.n_items = n_items;
    in.ks = ks.data();
    in.n_ks = nk;
    metarec::RankingOutput out;
    out.values = values.mutable_data();
    out.means = means.mutable_data();
    out.n_relevant = n_relevant.mutable_data();
    without_gil([&] { metarec::ranking_metrics(in, out, num_threads); });
    return py::make_tuple(values, means, n_relevant, out.n_evaluated);
}

template <class P, class T>
py::tuple rating_typed(const py::array& pred, const py::array& truth, const py::object& indptr_o,
                       int num_threads) {
    metarec::RatingInput<P, T> in;
    in.pred = static_cast<const P*>(pred.data());
    in.truth = static_cast<const T*>(truth.data());
    in.n = pred.size();
    metarec::RatingOutput out;
    py::object user_mae = py::none(), user_rmse = py::none();
    if (!indptr_o.is_none()) {
        auto indptr = strict_int64(py::reinterpret_borrow<py::array>(indptr_o), "indptr");
        if (indptr.shape(0) < 1) throw std::invalid_argument("indptr must have at least one entry");
        in.indptr = indptr.data();
        in.n_groups = indptr.shape(0) - 1;
        auto mae = empty<double>({in.n_groups});
        auto rmse = empty<double>({in.n_groups});
        out.group_mae = mae.mutable_data();
        out.group_rmse = rmse.mutable_data();
        user_mae = mae;
        user_rmse = rmse;
        without_gil([&] { metarec::rating_metrics(in, out, num_threads); });
    } else {
        without_gil([&] { metarec::rating_metrics(in, out, num_threads); });
    }
    return py::make_tuple(out.abs_sum, out.sq_sum, user_mae, user_rmse);
}

template <class P, class T>
py::tuple query_ndcg_typed(const py::array& pred, const py::array& truth,
                           const carray<std::int64_t>& indptr, const carray<std::int64_t>& ks,
                           int num_threads) {
    metarec::QueryNdcgInput<P, T> in;
    in.pred = static_cast<const P*>(pred.data());
    in.truth = static_cast<const T*>(truth.data());
    in.n = pred.size();
    in.indptr = indptr.data();
    in.n_groups = indptr.shape(0) - 1;
    in.ks = ks.data();
    in.n_ks = ks.shape(0);
    auto values = empty<double>({in.n_ks, in.n_groups});
    auto means = empty<double>({in.n_ks});
    metarec::QueryNdcgOutput out;
    out.values = values.mutable_data();
    out.means = means.mutable_data();
    without_gil([&] { metarec::query_ndcg(in, out, num_threads); });
    return py::make_tuple(values, means, out.n_evaluated);
}

// Dispatches fn<P, T> on the float kinds of pred and truth (same size, 1-d).
template <template <class, class> class Fn, class... Args>
py::tuple dispatch_pair(const py::array& pred, const py::array& truth, Args&&... args) {
    require_ndim(pred, 1, "pred");
    require_ndim(truth, 1, "true");
    if (pred.shape(0) != truth.shape(0)) {
        throw std::invalid_argument("pred has " + std::to_string(pred.shape(0)) + " entries, true " +
                                    std::to_string(truth.shape(0)));
    }
    const bool p32 = float_kind(pred, "pred"), t32 = float_kind(truth, "true");
    if (p32 && t32) return Fn<float, float>::run(pred, truth, std::forward<Args>(args)...);
    if (p32) return Fn<float, double>::run(pred, truth, std::forward<Args>(args)...);
    if (t32) return Fn<double, float>::run(pred, truth, std::forward<Args>(args)...);
    return Fn<double, double>::run(pred, truth, std::forward<Args>(args)...);
}

template <class P, class T>
struct RatingFn {
    static py::tuple run(const py::array& pred, const py::array& truth, const py::object& indptr,
                         int num_threads) {
        return rating_typed<P, T>(pred, truth, indptr, num_threads);
    }
};

template <class P, class T>
struct QueryNdcgFn {
    static py::tuple run(const py::array& pred, const py::array& truth,
                         const carray<std::int64_t>& indptr, const carray<std::int64_t>& ks,
                         int num_threads) {
        return query_ndcg_typed<P, T>(pred, truth, indptr, ks, num_threads);
    }
};

}  // namespace

void bind_metrics(py::module_& m) {
    m.def("ranking_metrics", &ranking, py::arg("topk_ids"), py::arg("indptr"), py::arg("indices"),
          py::arg("gains"), py::arg("n_items"), py::arg("ks"), py::arg("num_threads") = 0,
          "Ranking metrics at every cutoff. Returns (values [n_metrics, n_ks, n_queries], "
          "means [n_metrics, n_ks], n_relevant [n_queries], n_evaluated). Metric rows: precision, "
          "recall, recall_capped, ndcg, hr, map, mrr (+ ndcg_graded with gains).");
    m.def(
        "rating_metrics",
        [](const py::array& pred, const py::array& truth, const py::object& indptr, int num_threads) {
            return dispatch_pair<RatingFn>(pred, truth, indptr, num_threads);
        },
        py::arg("pred"), py::arg("true"), py::arg("indptr") = py::none(), py::arg("num_threads") = 0,
        "Returns (sum |pred - true|, sum (pred - true)^2, per-group MAE or None, per-group RMSE or "
        "None).");
    m.def(
        "query_ndcg",
        [](const py::array& pred, const py::array& truth, const py::array& indptr_a,
           const py::array& ks_a, int num_threads) {
            auto indptr = strict_int64(indptr_a, "indptr");
            auto ks = strict_int64(ks_a, "ks");
            if (indptr.shape(0) < 1) throw std::invalid_argument("indptr must have at least one entry");
            return dispatch_pair<QueryNdcgFn>(pred, truth, indptr, ks, num_threads);
        },
        py::arg("pred"), py::arg("true"), py::arg("indptr"), py::arg("ks"), py::arg("num_threads") = 0,
        "Within-query nDCG (graded 2^true - 1). Returns (values [n_ks, n_groups], means [n_ks], "
        "n_evaluated).");
}
