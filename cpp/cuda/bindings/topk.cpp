// Python bindings of the CUDA top-k kernels. Arguments are device addresses
// (torch data_ptr()), shapes, the caller's stream and device index; the
// wrappers in metarec_fast.ops.topk validate everything first and allocate
// the outputs (n_rows x k int64 ids, float32 scores) with torch.
#include <cstdint>

#include "../topk.h"
#include "common.h"

namespace py = pybind11;
using metarec_cuda_py::as_stream;
using metarec_cuda_py::device_ptr;
using metarec_cuda_py::without_gil;

namespace {

template <class T>
void topk_py(std::uintptr_t scores, std::int64_t n_rows, std::int64_t n_cols, std::int64_t k,
             std::uintptr_t ex_indptr, std::uintptr_t ex_indices, std::int64_t nnz,
             std::uintptr_t out_ids, std::uintptr_t out_scores, std::uintptr_t stream, int device,
             int slices) {
    without_gil([&] {
        metarec::cuda::topk<T>(device_ptr<const T>(scores), n_rows, n_cols, k,
                               device_ptr<const std::int64_t>(ex_indptr),
                               device_ptr<const std::int64_t>(ex_indices), nnz,
                               device_ptr<std::int64_t>(out_ids), device_ptr<float>(out_scores),
                               as_stream(stream), device, slices);
    });
}

template <class T>
void topk_dot_py(std::uintptr_t queries, std::int64_t nq, std::uintptr_t items, std::int64_t ni,
                 std::int64_t d, std::uintptr_t bias, std::int64_t k, std::uintptr_t ex_indptr,
                 std::uintptr_t ex_indices, std::int64_t nnz, std::uintptr_t out_ids,
                 std::uintptr_t out_scores, std::uintptr_t stream, int device, int slices) {
    without_gil([&] {
        metarec::cuda::topk_dot<T>(device_ptr<const T>(queries), nq, device_ptr<const T>(items), ni,
                                   d, device_ptr<const T>(bias), k,
                                   device_ptr<const std::int64_t>(ex_indptr),
                                   device_ptr<const std::int64_t>(ex_indices), nnz,
                                   device_ptr<std::int64_t>(out_ids), device_ptr<float>(out_scores),
                                   as_stream(stream), device, slices);
    });
}

template <class T>
void bind_typed(py::module_& m, const std::string& sfx) {
    m.def(("topk_" + sfx).c_str(), &topk_py<T>, py::arg("scores"), py::arg("n_rows"),
          py::arg("n_cols"), py::arg("k"), py::arg("exclude_indptr"), py::arg("exclude_indices"),
          py::arg("nnz"), py::arg("out_ids"), py::arg("out_scores"), py::arg("stream"),
          py::arg("device"), py::arg("slices") = 0,
          "Top-k per row of a device score matrix (see metarec_fast.ops.topk). Pointers are "
          "device addresses; exclude_indptr=0 means no exclusions; slices>0 forces the column "
          "split (testing). Synchronises the stream to report NaN as ValueError.");
    m.def(("topk_dot_" + sfx).c_str(), &topk_dot_py<T>, py::arg("queries"), py::arg("nq"),
          py::arg("items"), py::arg("ni"), py::arg("d"), py::arg("item_bias"), py::arg("k"),
          py::arg("exclude_indptr"), py::arg("exclude_indices"), py::arg("nnz"),
          py::arg("out_ids"), py::arg("out_scores"), py::arg("stream"), py::arg("device"),
          py::arg("slices") = 0,
          "Fused top-k of queries @ items.T + item_bias on the device (see "
          "metarec_fast.ops.topk_dot); item_bias=0 means none; slices>0 forces the item split "
          "(testing).");
}

}  // namespace

void bind_cuda_topk(pybind11::module_& m) {
    m.attr("topk_max_k") = metarec::cuda::kTopkMaxK;
    bind_typed<float>(m, "f32");
    bind_typed<double>(m, "f64");
}
