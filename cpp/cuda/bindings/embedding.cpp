// Python bindings of the CUDA embedding kernels (metarec_fast._cuda). Every
// tensor arrives as a raw device address (torch's data_ptr(), 0 for None)
// plus its sizes; python/metarec_fast/ops/embedding.py has validated shapes,
// dtypes, devices, ids and offsets and allocated the outputs with torch on the
// device. Launches are asynchronous on the caller's stream.
#include <cstdint>
#include <string>

#include "common.h"
#include "embedding.h"

namespace py = pybind11;
using metarec_cuda_py::as_stream;
using metarec_cuda_py::device_ptr;
using metarec_cuda_py::without_gil;

namespace {

using i64 = std::int64_t;
using addr = std::uintptr_t;

template <class T>
void bind_float(py::module_& m, const char* suffix) {
    const std::string s(suffix);
    m.def(
        ("embedding_gather_" + s).c_str(),
        [](addr table, i64 num_rows, i64 dim, addr ids, i64 n_ids, addr out, addr stream,
           int device) {
            without_gil([&] {
                metarec::cuda::embedding_gather<T>(device_ptr<const T>(table), num_rows, dim,
                                                   device_ptr<const i64>(ids), n_ids,
                                                   device_ptr<T>(out), as_stream(stream), device);
            });
        },
        py::arg("table"), py::arg("num_rows"), py::arg("dim"), py::arg("ids"), py::arg("n_ids"),
        py::arg("out"), py::arg("stream"), py::arg("device"),
        "out[i] = table[ids[i]] (device pointers; asynchronous on `stream`).");

    m.def(
        ("embedding_bag_forward_" + s).c_str(),
        [](addr table, i64 num_rows, i64 dim, addr ids, i64 n_ids, addr offsets, i64 n_bags,
           addr weights, bool mean, addr out, addr stream, int device) {
            without_gil([&] {
                metarec::cuda::embedding_bag_forward<T>(
                    device_ptr<const T>(table), num_rows, dim, device_ptr<const i64>(ids), n_ids,
                    device_ptr<const i64>(offsets), n_bags, device_ptr<const T>(weights), mean,
                    device_ptr<T>(out), as_stream(stream), device);
            });
        },
        py::arg("table"), py::arg("num_rows"), py::arg("dim"), py::arg("ids"), py::arg("n_ids"),
        py::arg("offsets"), py::arg("n_bags"), py::arg("weights"), py::arg("mean"),
        py::arg("out"), py::arg("stream"), py::arg("device"),
        "Pooled bags into out[n_bags, dim] (weights 0 = none).");

    m.def(
        ("embedding_bag_backward_" + s).c_str(),
        [](addr grad_out, i64 n_bags, i64 dim, addr offsets, i64 n_ids, addr weights, bool mean,
           addr workspace, i64 n_launch, bool dense, i64 num_rows, addr dest, addr stream,
           int device) {
            without_gil([&] {
                metarec::cuda::embedding_bag_backward<T>(
                    device_ptr<const T>(grad_out), n_bags, dim, device_ptr<const i64>(offsets),
                    n_ids, device_ptr<const T>(weights), mean, device_ptr<const i64>(workspace),
                    n_launch, dense, num_rows, device_ptr<T>(dest), as_stream(stream), device);
            });
        },
        py::arg("grad_out"), py::arg("n_bags"), py::arg("dim"), py::arg("offsets"),
        py::arg("n_ids"), py::arg("weights"), py::arg("mean"), py::arg("workspace"),
        py::arg("n_launch"), py::arg("dense"), py::arg("num_rows"), py::arg("dest"),
        py::arg("stream"), py::arg("device"),
        "Table gradient from a grouped workspace (see embedding_group): dense "
        "[num_rows, dim] or sparse values [n_unique, dim].");

    m.def(
        ("embedding_bag_weight_grad_" + s).c_str(),
        [](addr grad_out, i64 n_bags, addr table, i64 num_rows, i64 dim, addr ids, i64 n_ids,
           addr offsets, addr out, addr stream, int device) {
            without_gil([&] {
                metarec::cuda::embedding_bag_weight_grad<T>(
                    device_ptr<const T>(grad_out), n_bags, device_ptr<const T>(table), num_rows,
                    dim, device_ptr<const i64>(ids), n_ids, device_ptr<const i64>(offsets),
                    device_ptr<T>(out), as_stream(stream), device);
            });
        },
        py::arg("grad_out"), py::arg("n_bags"), py::arg("table"), py::arg("num_rows"),
        py::arg("dim"), py::arg("ids"), py::arg("n_ids"), py::arg("offsets"), py::arg("out"),
        py::arg("stream"), py::arg("device"),
        "out[j] = dot(grad_out[bag(j)], table[ids[j]]) (per-sample weight gradient).");
}

}  // namespace

void bind_cuda_embedding(py::module_& m) {
    bind_float<float>(m, "f32");
    bind_float<double>(m, "f64");

    m.def(
        "embedding_check",
        [](addr ids, i64 n_ids, i64 num_rows, addr offsets, i64 n_bags, addr result, addr stream,
           int device) {
            without_gil([&] {
                metarec::cuda::embedding_check(device_ptr<const i64>(ids), n_ids, num_rows,
                                               device_ptr<const i64>(offsets), n_bags,
                                               device_ptr<i64>(result), as_stream(stream),
                                               device);
            });
        },
        py::arg("ids"), py::arg("n_ids"), py::arg("num_rows"), py::arg("offsets"),
        py::arg("n_bags"), py::arg("result"), py::arg("stream"), py::arg("device"),
        "Writes [first bad id position or -1, first decreasing offset or -1, offsets[0], "
        "offsets[-1]] to the 4-word int64 device buffer `result`.");

    m.def(
        "embedding_check_ids",
        [](addr ids, i64 n_ids, i64 num_rows, addr result, addr stream, int device) {
            without_gil([&] {
                metarec::cuda::embedding_check_ids(device_ptr<const i64>(ids), n_ids, num_rows,
                                                   device_ptr<i64>(result), as_stream(stream), device);
            });
        },
        py::arg("ids"), py::arg("n_ids"), py::arg("num_rows"), py::arg("result"), py::arg("stream"),
        py::arg("device"),
        "Writes the first bad id position (or -1) to the 1-word int64 device buffer `result` "
        "(gather: ids without bags).");

    m.def(
        "embedding_group_layout",
        [](i64 n_ids) {
            const metarec::cuda::GroupLayout l = metarec::cuda::group_layout(n_ids);
            py::dict d;
            d["words"] = l.words;
            d["sorted_rows"] = l.sorted_rows;
            d["perm"] = l.perm;
            d["rows"] = l.rows;
            d["starts"] = l.starts;
            d["n_unique"] = l.n_unique;
            return d;
        },
        py::arg("n_ids"),
        "Word offsets into the int64 workspace of embedding_group for n_ids lookups.");

    m.def(
        "embedding_group",
        [](addr ids, i64 n_ids, addr offsets, i64 n_bags, i64 num_rows, addr workspace,
           addr stream, int device) {
            without_gil([&] {
                metarec::cuda::embedding_group(device_ptr<const i64>(ids), n_ids,
                                               device_ptr<const i64>(offsets), n_bags, num_rows,
                                               device_ptr<i64>(workspace), as_stream(stream),
                                               device);
            });
        },
        py::arg("ids"), py::arg("n_ids"), py::arg("offsets"), py::arg("n_bags"),
        py::arg("num_rows"), py::arg("workspace"), py::arg("stream"), py::arg("device"),
        "Groups lookups by row (stable radix sort) into an int64 workspace of "
        "embedding_group_layout(n_ids)['words'] words.");
}
