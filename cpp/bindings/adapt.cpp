// Bindings for the batched linear-head inner loop (metarec/adapt.h).
#include "metarec/adapt.h"

#include <string>

#include "common.h"
#include "metarec/simd.h"

namespace py = pybind11;
using metarec_py::carray;

namespace {

// '' = the active level; 'generic'/'avx2'/'avx512' force one (testing).
metarec::simd::Level level_arg(const std::string& simd) {
    return simd.empty() ? metarec::simd::active_level() : metarec::simd::parse_level(simd);
}

template <class T>
metarec::LinearHeadBatch<T> make_batch(const carray<T>& H, const carray<T>& c,
                                       const carray<std::int64_t>& s_indptr,
                                       const carray<std::int64_t>& s_items, const carray<T>& s_targets,
                                       const carray<std::int64_t>& q_indptr,
                                       const carray<std::int64_t>& q_items, const carray<T>& p0,
                                       const carray<T>& b0, bool per_user_theta0,
                                       const carray<T>& alpha_p, T alpha_b, int steps, T l2,
                                       const std::string& loss) {
    metarec_py::require_ndim(H, 2, "H");
    metarec_py::require_ndim(p0, 2, "p0");
    metarec::LinearHeadBatch<T> b;
    b.H = H.data();
    b.c = c.data();
    b.n_items = H.shape(0);
    b.d = H.shape(1);
    if (c.size() != b.n_items) throw std::invalid_argument("c must have one entry per item");
    b.n_users = s_indptr.size() - 1;
    if (b.n_users < 0 || q_indptr.size() != s_indptr.size()) {
        throw std::invalid_argument("support and query indptr must both have n_users + 1 entries");
    }
    b.support_indptr = s_indptr.data();
    b.support_items = s_items.data();
    b.support_targets = s_targets.data();
    b.query_indptr = q_indptr.data();
    b.query_items = q_items.data();
    if (s_indptr.data()[b.n_users] != s_items.size() || s_items.size() != s_targets.size()) {
        throw std::invalid_argument("support indptr, items and targets disagree in length");
    }
    if (q_indptr.data()[b.n_users] != q_items.size()) {
        throw std::invalid_argument("query indptr and items disagree in length");
    }
    const std::int64_t n_theta = per_user_theta0 ? b.n_users : 1;
    if (p0.shape(0) != n_theta || p0.shape(1) != b.d || b0.size() != n_theta) {
        throw std::invalid_argument("p0 must be [" + std::to_string(n_theta) + ", " +
                                    std::to_string(b.d) + "] and b0 [" + std::to_string(n_theta) + "]");
    }
    b.p0 = p0.data();
    b.b0 = b0.data();
    b.per_user_theta0 = per_user_theta0;
    if (alpha_p.size() != 1 && alpha_p.size() != b.d) {
        throw std::invalid_argument("alpha_p must have 1 or d entries");
    }
    b.alpha_p = alpha_p.data();
    b.alpha_per_parameter = alpha_p.size() == b.d && b.d > 1;
    b.alpha_b = alpha_b;
    b.steps = steps;
    b.l2 = l2;
    if (loss == "mse") {
        b.loss = metarec::AdaptLoss::mse;
    } else if (loss == "logistic") {
        b.loss = metarec::AdaptLoss::logistic;
    } else {
        throw std::invalid_argument("loss must be 'mse' or 'logistic', got '" + loss + "'");
    }
    return b;
}

template <class T>
void bind_for(py::module_& m) {
    m.def(
        "linear_head_forward",
        [](const carray<T>& H, const carray<T>& c, const carray<std::int64_t>& s_indptr,
           const carray<std::int64_t>& s_items, const carray<T>& s_targets,
           const carray<std::int64_t>& q_indptr, const carray<std::int64_t>& q_items,
           const carray<T>& p0, const carray<T>& b0, bool per_user_theta0, const carray<T>& alpha_p,
           T alpha_b, int steps, T l2, const std::string& loss, int num_threads,
           const std::string& simd) {
            auto b = make_batch<T>(H, c, s_indptr, s_items, s_targets, q_indptr, q_items, p0, b0,
                                   per_user_theta0, alpha_p, alpha_b, steps, l2, loss);
            const auto level = level_arg(simd);
            auto traj = metarec_py::empty<T>({b.n_users, steps + 1, b.d + 1});
            auto pred = metarec_py::empty<T>({q_items.size()});
            T* traj_ptr = traj.mutable_data();
            T* pred_ptr = pred.mutable_data();
            metarec_py::without_gil([&] {
                metarec::linear_head_forward<T>(b, traj_ptr, pred_ptr, num_threads, level);
            });
            return py::make_tuple(traj, pred);
        },
        py::arg("H").noconvert(), py::arg("c").noconvert(), py::arg("support_indptr").noconvert(),
        py::arg("support_items").noconvert(), py::arg("support_targets").noconvert(),
        py::arg("query_indptr").noconvert(), py::arg("query_items").noconvert(),
        py::arg("p0").noconvert(), py::arg("b0").noconvert(), py::arg("per_user_theta0"),
        py::arg("alpha_p").noconvert(), py::arg("alpha_b"), py::arg("steps"), py::arg("l2"),
        py::arg("loss"), py::arg("num_threads") = 0, py::arg("simd") = "",
        "Inner loop forward: (trajectory [n_users, steps+1, d+1], query predictions). "
        "simd='' uses the active level; 'generic'/'avx2'/'avx512' force one (testing).");

    m.def(
        "linear_head_backward",
        [](const carray<T>& H, const carray<T>& c, const carray<std::int64_t>& s_indptr,
           const carray<std::int64_t>& s_items, const carray<T>& s_targets,
           const carray<std::int64_t>& q_indptr, const carray<std::int64_t>& q_items,
           const carray<T>& p0, const carray<T>& b0, bool per_user_theta0, const carray<T>& alpha_p,
           T alpha_b, int steps, T l2, const std::string& loss, const carray<T>& trajectory,
           const carray<T>& grad_query_pred, bool second_order, bool alpha_grad, int num_threads,
           const std::string& simd) {
            auto b = make_batch<T>(H, c, s_indptr, s_items, s_targets, q_indptr, q_items, p0, b0,
                                   per_user_theta0, alpha_p, alpha_b, steps, l2, loss);
            if (trajectory.size() != b.n_users * (steps + 1) * (b.d + 1)) {
                throw std::invalid_argument("trajectory has the wrong size for this batch");
            }
            if (grad_query_pred.size() != q_items.size()) {
                throw std::invalid_argument("grad_query_pred must have one entry per query item");
            }
            const auto level = level_arg(simd);
            const auto order = second_order ? metarec::AdaptOrder::second : metarec::AdaptOrder::first;
            metarec::LinearHeadGrads<T> g = metarec_py::without_gil([&] {
                return metarec::linear_head_backward<T>(b, trajectory.data(), grad_query_pred.data(),
                                                        order, alpha_grad, num_threads, level);
            });
            const py::ssize_t n_theta = per_user_theta0 ? b.n_users : 1;
            const py::ssize_t n_alpha = static_cast<py::ssize_t>(g.alpha_p.size());
            py::dict out;
            out["p0"] = metarec_py::to_numpy(std::move(g.p0), {n_theta, b.d});
            out["b0"] = metarec_py::to_numpy(std::move(g.b0), {n_theta});
            out["alpha_p"] = metarec_py::to_numpy(std::move(g.alpha_p), {n_alpha});
            out["alpha_b"] = g.alpha_b;
            out["H"] = metarec_py::to_numpy(std::move(g.H), {b.n_items, b.d});
            out["c"] = metarec_py::to_numpy(std::move(g.c), {b.n_items});
            return out;
        },
        py::arg("H").noconvert(), py::arg("c").noconvert(), py::arg("support_indptr").noconvert(),
        py::arg("support_items").noconvert(), py::arg("support_targets").noconvert(),
        py::arg("query_indptr").noconvert(), py::arg("query_items").noconvert(),
        py::arg("p0").noconvert(), py::arg("b0").noconvert(), py::arg("per_user_theta0"),
        py::arg("alpha_p").noconvert(), py::arg("alpha_b"), py::arg("steps"), py::arg("l2"),
        py::arg("loss"), py::arg("trajectory").noconvert(), py::arg("grad_query_pred").noconvert(),
        py::arg("second_order"), py::arg("alpha_grad") = true, py::arg("num_threads") = 0,
        py::arg("simd") = "",
        "Exact gradients of sum(grad_query_pred * query_pred) for theta_0, alpha, H and c. "
        "simd='' uses the active level; 'generic'/'avx2'/'avx512' force one (testing).");
}

}  // namespace

void bind_adapt(py::module_& m) {
    bind_for<float>(m);
    bind_for<double>(m);
}
