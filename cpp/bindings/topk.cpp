// Bindings for the top-k kernels and the SIMD dispatch level. Inputs arrive
// validated and C-contiguous from metarec_fast.ops.topk; shapes and the
// exclusion pattern are checked again here and in the kernel.
#include "metarec/topk.h"

#include <cstdint>
#include <limits>
#include <string>

#include "common.h"
#include "metarec/simd.h"

namespace py = pybind11;
using metarec_py::carray;
using metarec_py::require_ndim;
using metarec_py::without_gil;

namespace {

metarec::Exclusion make_exclusion(const carray<std::int64_t>& indptr, const carray<std::int64_t>& indices,
                                  py::ssize_t n_rows) {
    metarec::Exclusion ex;
    require_ndim(indptr, 1, "exclude_indptr");
    require_ndim(indices, 1, "exclude_indices");
    if (indptr.shape(0) == 0) return ex;  // no exclusions
    if (indptr.shape(0) != n_rows + 1) {
        throw std::invalid_argument("exclude_indptr must have " + std::to_string(n_rows + 1) +
                                    " entries, got " + std::to_string(indptr.shape(0)));
    }
    ex.indptr = indptr.data();
    ex.indices = indices.data();
    ex.nnz = indices.shape(0);
    return ex;
}

metarec::simd::Level level_arg(const std::string& simd) {
    return simd.empty() ? metarec::simd::active_level() : metarec::simd::parse_level(simd);
}

template <class T>
py::tuple topk_py(const carray<T>& scores, std::int64_t k, const carray<std::int64_t>& ex_indptr,
                  const carray<std::int64_t>& ex_indices, int num_threads) {
    require_ndim(scores, 2, "scores");
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
    const auto n = scores.shape(0);
    const auto m = scores.shape(1);
    const metarec::Exclusion ex = make_exclusion(ex_indptr, ex_indices, n);
    auto ids = metarec_py::empty<std::int64_t>({n, static_cast<py::ssize_t>(k)});
    auto vals = metarec_py::empty<float>({n, static_cast<py::ssize_t>(k)});
    const T* s = scores.data();
    std::int64_t* pi = ids.mutable_data();
    float* pv = vals.mutable_data();
    without_gil([&] { metarec::topk<T>(s, n, m, k, ex, num_threads, pi, pv); });
    return py::make_tuple(ids, vals);
}

template <class T>
const T* check_dot_args(const carray<T>& queries, const carray<T>& items, const py::object& bias,
                        carray<T>& holder) {
    require_ndim(queries, 2, "queries");
    require_ndim(items, 2, "items");
    if (queries.shape(1) != items.shape(1)) {
        throw std::invalid_argument("queries have d=" + std::to_string(queries.shape(1)) + " but items have d=" +
                                    std::to_string(items.shape(1)));
    }
    if (bias.is_none()) return nullptr;
    if (!carray<T>::check_(bias)) throw std::invalid_argument("item_bias must be a C-contiguous array of the queries' dtype");
    holder = bias.cast<carray<T>>();
    require_ndim(holder, 1, "item_bias");
    if (holder.shape(0) != items.shape(0)) {
        throw std::invalid_argument("item_bias has " + std::to_string(holder.shape(0)) + " entries, items have " +
                                    std::to_string(items.shape(0)) + " rows");
    }
    return holder.data();
}

template <class T>
py::tuple topk_dot_py(const carray<T>& queries, const carray<T>& items, std::int64_t k,
                      const py::object& bias, const carray<std::int64_t>& ex_indptr,
                      const carray<std::int64_t>& ex_indices, int num_threads, const std::string& simd) {
    carray<T> bias_holder;
    const T* b = check_dot_args<T>(queries, items, bias, bias_holder);
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
    const auto nq = queries.shape(0);
    const auto ni = items.shape(0);
    const auto d = queries.shape(1);
    const metarec::Exclusion ex = make_exclusion(ex_indptr, ex_indices, nq);
    const metarec::simd::Level level = level_arg(simd);
    auto ids = metarec_py::empty<std::int64_t>({nq, static_cast<py::ssize_t>(k)});
    auto vals = metarec_py::empty<float>({nq, static_cast<py::ssize_t>(k)});
    const T* q = queries.data();
    const T* it = items.data();
    std::int64_t* pi = ids.mutable_data();
    float* pv = vals.mutable_data();
    without_gil([&] { metarec::topk_dot<T>(q, nq, it, ni, d, b, k, ex, num_threads, level, pi, pv); });
    return py::make_tuple(ids, vals);
}

template <class T>
py::array_t<T> dot_scores_py(const carray<T>& queries, const carray<T>& items, const py::object& bias,
                             int num_threads, const std::string& simd) {
    carray<T> bias_holder;
    const T* b = check_dot_args<T>(queries, items, bias, bias_holder);
    const auto nq = queries.shape(0);
    const auto ni = items.shape(0);
    const auto d = queries.shape(1);
    const metarec::simd::Level level = level_arg(simd);
    auto out = metarec_py::empty<T>({nq, ni});
    const T* q = queries.data();
    const T* it = items.data();
    T* po = out.mutable_data();
    without_gil([&] { metarec::dot_scores<T>(q, nq, it, ni, d, b, num_threads, level, po); });
    return out;
}

template <class T>
void bind_typed(py::module_& m, const char* suffix) {
    const std::string sfx(suffix);
    m.def(("topk_" + sfx).c_str(), &topk_py<T>, py::arg("scores").noconvert(), py::arg("k"),
          py::arg("exclude_indptr").noconvert(), py::arg("exclude_indices").noconvert(),
          py::arg("num_threads") = 0,
          "Top-k per row of scores (validated inputs; see metarec_fast.ops.topk).");
    m.def(("topk_dot_" + sfx).c_str(), &topk_dot_py<T>, py::arg("queries").noconvert(),
          py::arg("items").noconvert(), py::arg("k"), py::arg("item_bias"),
          py::arg("exclude_indptr").noconvert(), py::arg("exclude_indices").noconvert(),
          py::arg("num_threads") = 0, py::arg("simd") = "",
          "Fused top-k of queries @ items.T + item_bias (see metarec_fast.ops.topk_dot). "
          "simd='' uses the active level; 'generic'/'avx2'/'avx512' force one (testing).");
    m.def(("_dot_scores_" + sfx).c_str(), &dot_scores_py<T>, py::arg("queries").noconvert(),
          py::arg("items").noconvert(), py::arg("item_bias"), py::arg("num_threads") = 0,
          py::arg("simd") = "",
          "Testing aid: the dense score matrix computed with topk_dot's exact arithmetic.");
}

}  // namespace

void bind_topk(pybind11::module_& m) {
    m.def("simd_level", [] { return std::string(metarec::simd::level_name(metarec::simd::active_level())); },
          "SIMD level the kernels use: 'generic', 'avx2' or 'avx512' (METAREC_SIMD lowers it).");
    m.def("simd_detected", [] { return std::string(metarec::simd::level_name(metarec::simd::detected_level())); },
          "Best SIMD level this CPU supports.");
    bind_typed<float>(m, "f32");
    bind_typed<double>(m, "f64");
}
