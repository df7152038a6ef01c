// Python bindings of the CUDA linear-head inner loop (cpp/cuda/adapt.h).
//
// Every array is a raw device pointer (an int from torch's data_ptr()) of a
// C-contiguous tensor on `device`, with the shapes the Python wrapper
// (metarec_fast.ops.adapt) has checked; the kernels run on `stream`. The
// launchers check the CSR arrays on the device themselves (ValueError /
// IndexError like the CPU kernels).
#include "adapt.h"

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.h"

namespace py = pybind11;
using metarec_cuda_py::device_ptr;

namespace {

using i64 = std::int64_t;
using ptr_t = std::uintptr_t;

metarec::AdaptLoss parse_loss(const std::string& loss) {
    if (loss == "mse") return metarec::AdaptLoss::mse;
    if (loss == "logistic") return metarec::AdaptLoss::logistic;
    throw std::invalid_argument("loss must be 'mse' or 'logistic', got '" + loss + "'");
}

template <class T>
metarec::LinearHeadBatch<T> make_batch(const py::dict& a) {
    metarec::LinearHeadBatch<T> b;
    b.H = device_ptr<const T>(a["H"].cast<ptr_t>());
    b.c = device_ptr<const T>(a["c"].cast<ptr_t>());
    b.n_items = a["n_items"].cast<i64>();
    b.d = a["d"].cast<i64>();
    b.n_users = a["n_users"].cast<i64>();
    b.support_indptr = device_ptr<const i64>(a["support_indptr"].cast<ptr_t>());
    b.support_items = device_ptr<const i64>(a["support_items"].cast<ptr_t>());
    b.support_targets = device_ptr<const T>(a["support_targets"].cast<ptr_t>());
    b.query_indptr = device_ptr<const i64>(a["query_indptr"].cast<ptr_t>());
    b.query_items = device_ptr<const i64>(a["query_items"].cast<ptr_t>());
    b.p0 = device_ptr<const T>(a["p0"].cast<ptr_t>());
    b.b0 = device_ptr<const T>(a["b0"].cast<ptr_t>());
    b.per_user_theta0 = a["per_user_theta0"].cast<bool>();
    b.alpha_p = device_ptr<const T>(a["alpha_p"].cast<ptr_t>());
    b.alpha_per_parameter = a["alpha_per_parameter"].cast<bool>();
    b.alpha_b = static_cast<T>(a["alpha_b"].cast<double>());
    b.steps = a["steps"].cast<int>();
    b.l2 = static_cast<T>(a["l2"].cast<double>());
    b.loss = parse_loss(a["loss"].cast<std::string>());
    // Empty tensors may have null data pointers; these never are empty.
    if (b.support_indptr == nullptr || b.query_indptr == nullptr || b.alpha_p == nullptr) {
        throw std::invalid_argument("linear_head: indptr and alpha_p device pointers must not be null");
    }
    return b;
}

bool is_double(const std::string& dtype) {
    if (dtype == "float64") return true;
    if (dtype == "float32") return false;
    throw std::invalid_argument("dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

template <class T>
void forward(const py::dict& batch, i64 nnz_s, i64 nnz_q, ptr_t trajectory, ptr_t query_pred,
             ptr_t stream, int device) {
    const auto b = make_batch<T>(batch);
    metarec_cuda_py::without_gil([&] {
        metarec::cuda::linear_head_forward<T>(b, nnz_s, nnz_q, device_ptr<T>(trajectory),
                                              device_ptr<T>(query_pred), metarec_cuda_py::as_stream(stream),
                                              device);
    });
}

template <class T>
void backward(const py::dict& batch, i64 nnz_s, i64 nnz_q, ptr_t trajectory, ptr_t grad_query_pred,
              bool second_order, bool alpha_grad, const py::dict& out, ptr_t stream, int device) {
    const auto b = make_batch<T>(batch);
    metarec::cuda::LinearHeadGradBuffers<T> g;
    g.p0 = device_ptr<T>(out["p0"].cast<ptr_t>());
    g.b0 = device_ptr<T>(out["b0"].cast<ptr_t>());
    g.alpha_p = device_ptr<T>(out["alpha_p"].cast<ptr_t>());
    g.alpha_b = device_ptr<T>(out["alpha_b"].cast<ptr_t>());
    g.H = device_ptr<T>(out["H"].cast<ptr_t>());
    g.c = device_ptr<T>(out["c"].cast<ptr_t>());
    if (g.alpha_p == nullptr || g.alpha_b == nullptr) {
        throw std::invalid_argument("linear_head_backward: alpha gradient buffers are required");
    }
    const auto order = second_order ? metarec::AdaptOrder::second : metarec::AdaptOrder::first;
    metarec_cuda_py::without_gil([&] {
        metarec::cuda::linear_head_backward<T>(b, nnz_s, nnz_q, device_ptr<const T>(trajectory),
                                               device_ptr<const T>(grad_query_pred), order, alpha_grad, g,
                                               metarec_cuda_py::as_stream(stream), device);
    });
}

}  // namespace

void bind_cuda_adapt(py::module_& m) {
    m.def(
        "linear_head_forward",
        [](const std::string& dtype, const py::dict& batch, i64 nnz_support, i64 nnz_query,
           ptr_t trajectory, ptr_t query_pred, ptr_t stream, int device) {
            if (is_double(dtype)) {
                forward<double>(batch, nnz_support, nnz_query, trajectory, query_pred, stream, device);
            } else {
                forward<float>(batch, nnz_support, nnz_query, trajectory, query_pred, stream, device);
            }
        },
        py::arg("dtype"), py::arg("batch"), py::arg("nnz_support"), py::arg("nnz_query"),
        py::arg("trajectory"), py::arg("query_pred"), py::arg("stream"), py::arg("device"),
        "Inner loop forward on the GPU into caller-allocated trajectory [n_users, steps+1, d+1] "
        "and query_pred [nnz_query]. `batch` maps the LinearHeadBatch fields to device pointers "
        "and host scalars (see metarec_fast.ops.adapt).");
    m.def(
        "linear_head_backward",
        [](const std::string& dtype, const py::dict& batch, i64 nnz_support, i64 nnz_query,
           ptr_t trajectory, ptr_t grad_query_pred, bool second_order, bool alpha_grad,
           const py::dict& out, ptr_t stream, int device) {
            if (is_double(dtype)) {
                backward<double>(batch, nnz_support, nnz_query, trajectory, grad_query_pred, second_order,
                                 alpha_grad, out, stream, device);
            } else {
                backward<float>(batch, nnz_support, nnz_query, trajectory, grad_query_pred, second_order,
                                alpha_grad, out, stream, device);
            }
        },
        py::arg("dtype"), py::arg("batch"), py::arg("nnz_support"), py::arg("nnz_query"),
        py::arg("trajectory"), py::arg("grad_query_pred"), py::arg("second_order"),
        py::arg("alpha_grad"), py::arg("out"), py::arg("stream"), py::arg("device"),
        "Exact gradients of sum(grad_query_pred * query_pred) w.r.t. theta_0, alpha, H and c "
        "into the caller-allocated device buffers out = {p0, b0, alpha_p, alpha_b, H, c} "
        "(fully overwritten).");
}
