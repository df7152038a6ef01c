// Bindings for the embedding kernels. The Python wrappers in
// metarec_fast.ops.embedding validate and convert inputs once; here every
// array is strict (exact dtype, C-contiguous, no conversion) and the kernels
// run with the GIL released. In-place outputs (optimiser tables and state)
// must be writeable: pybind11 never hands them over as a copy (noconvert).
#include <pybind11/stl.h>

#include <string>
#include <utility>

#include "common.h"
#include "metarec/embedding.h"
#include "metarec/parallel.h"

namespace py = pybind11;
using metarec_py::carray;
using metarec_py::require_ndim;
using metarec_py::without_gil;

namespace {

// Hands a kernel-filled (uninitialised-allocator) vector to numpy without a
// copy; the capsule owns the buffer.
template <class T>
py::array_t<T> uninit_to_numpy(metarec::uninit_vector<T>&& data, std::vector<py::ssize_t> shape) {
    auto* owner = new metarec::uninit_vector<T>(std::move(data));
    py::capsule free_when_done(owner, [](void* p) {
        delete static_cast<metarec::uninit_vector<T>*>(p);
    });
    return py::array_t<T>(std::move(shape), owner->data(), free_when_done);
}

metarec::PoolMode parse_mode(const std::string& mode) {
    if (mode == "sum") return metarec::PoolMode::Sum;
    if (mode == "mean") return metarec::PoolMode::Mean;
    throw std::invalid_argument("mode must be 'sum' or 'mean', got '" + mode + "'");
}

// Optional per-sample weights: None, or a strict 1-d array of n_ids entries.
template <class T>
carray<T> optional_weights(const py::object& weights, std::int64_t n_ids) {
    if (weights.is_none()) return carray<T>();
    if (!py::isinstance<carray<T>>(weights)) {
        throw py::type_error(std::string("weights must be a C-contiguous ") +
                             (sizeof(T) == 4 ? "float32" : "float64") + " array like the table");
    }
    auto w = weights.cast<carray<T>>();
    require_ndim(w, 1, "weights");
    if (w.shape(0) != n_ids) {
        throw std::invalid_argument("weights has " + std::to_string(w.shape(0)) +
                                    " entries, ids has " + std::to_string(n_ids));
    }
    return w;
}

template <class T>
void bind_float(py::module_& m) {
    m.def(
        "embedding_gather",
        [](const carray<T>& table, const carray<std::int64_t>& ids, int num_threads) {
            require_ndim(table, 2, "table");
            require_ndim(ids, 1, "ids");
            const std::int64_t n = ids.shape(0), d = table.shape(1);
            auto out = metarec_py::empty<T>({n, d});
            T* o = out.mutable_data();
            const int threads = metarec::resolve_num_threads(num_threads);
            without_gil([&] {
                metarec::gather<T>(table.data(), table.shape(0), d, ids.data(), n, o, threads);
            });
            return out;
        },
        py::arg("table").noconvert(), py::arg("ids").noconvert(), py::arg("num_threads") = 0);

    m.def(
        "embedding_bag_forward",
        [](const carray<T>& table, const carray<std::int64_t>& ids,
           const carray<std::int64_t>& offsets, const py::object& weights, const std::string& mode,
           int num_threads, const std::string& simd) {
            require_ndim(table, 2, "table");
            require_ndim(ids, 1, "ids");
            require_ndim(offsets, 1, "offsets");
            const std::int64_t n_ids = ids.shape(0), n_bags = offsets.shape(0),
                               d = table.shape(1);
            const carray<T> w_keep = optional_weights<T>(weights, n_ids);  // alive during the call
            const T* w = weights.is_none() ? nullptr : w_keep.data();
            const metarec::PoolMode pm = parse_mode(mode);
            auto out = metarec_py::empty<T>({n_bags, d});
            T* o = out.mutable_data();
            const int threads = metarec::resolve_num_threads(num_threads);
            if (simd.empty()) {
                without_gil([&] {
                    metarec::embedding_bag<T>(table.data(), table.shape(0), d, ids.data(), n_ids,
                                              offsets.data(), n_bags, w, pm, o, threads);
                });
            } else {
                const metarec::simd::Level level = metarec::simd::parse_level(simd);
                without_gil([&] {
                    metarec::embedding_bag<T>(table.data(), table.shape(0), d, ids.data(), n_ids,
                                              offsets.data(), n_bags, w, pm, o, threads, level);
                });
            }
            return out;
        },
        py::arg("table").noconvert(), py::arg("ids").noconvert(), py::arg("offsets").noconvert(),
        py::arg("weights").none(true), py::arg("mode"), py::arg("num_threads") = 0,
        py::arg("simd") = "",
        "simd='' uses the active level (selected once); 'generic'/'avx2'/'avx512' force one "
        "(testing; every level gives bit-identical results).");

    m.def(
        "embedding_bag_backward",
        [](const carray<T>& grad_out, const carray<std::int64_t>& ids,
           const carray<std::int64_t>& offsets, std::int64_t num_rows, const py::object& weights,
           const std::string& mode, bool sparse, int num_threads) -> py::object {
            require_ndim(grad_out, 2, "grad_out");
            require_ndim(ids, 1, "ids");
            require_ndim(offsets, 1, "offsets");
            const std::int64_t n_ids = ids.shape(0), n_bags = offsets.shape(0),
                               d = grad_out.shape(1);
            if (grad_out.shape(0) != n_bags) {
                throw std::invalid_argument("grad_out has " + std::to_string(grad_out.shape(0)) +
                                            " rows, offsets has " + std::to_string(n_bags) +
                                            " bags");
            }
            if (num_rows < 0) {
                throw std::invalid_argument("num_rows must be non-negative, got " +
                                            std::to_string(num_rows));
            }
            const carray<T> w_keep = optional_weights<T>(weights, n_ids);  // alive during the call
            const T* w = weights.is_none() ? nullptr : w_keep.data();
            const metarec::PoolMode pm = parse_mode(mode);
            const int threads = metarec::resolve_num_threads(num_threads);
            if (sparse) {
                auto res = without_gil([&] {
                    return metarec::embedding_bag_backward_sparse<T>(
                        grad_out.data(), n_bags, d, ids.data(), n_ids, offsets.data(), w, pm,
                        num_rows, threads);
                });
                const auto n_unique = static_cast<py::ssize_t>(res.rows.size());
                auto rows = metarec_py::to_numpy(std::move(res.rows), {n_unique});
                auto vals = uninit_to_numpy<T>(std::move(res.values), {n_unique, d});
                return py::make_tuple(rows, vals);
            }
            auto out = metarec_py::empty<T>({num_rows, d});
            T* o = out.mutable_data();
            without_gil([&] {
                metarec::embedding_bag_backward_dense<T>(grad_out.data(), n_bags, d, ids.data(),
                                                         n_ids, offsets.data(), w, pm, num_rows, o,
                                                         threads);
            });
            return std::move(out);
        },
        py::arg("grad_out").noconvert(), py::arg("ids").noconvert(),
        py::arg("offsets").noconvert(), py::arg("num_rows"), py::arg("weights").none(true),
        py::arg("mode"), py::arg("sparse"), py::arg("num_threads") = 0);

    m.def(
        "embedding_bag_weight_grad",
        [](const carray<T>& grad_out, const carray<T>& table, const carray<std::int64_t>& ids,
           const carray<std::int64_t>& offsets, int num_threads) {
            require_ndim(grad_out, 2, "grad_out");
            require_ndim(table, 2, "table");
            require_ndim(ids, 1, "ids");
            require_ndim(offsets, 1, "offsets");
            const std::int64_t n_ids = ids.shape(0), n_bags = offsets.shape(0),
                               d = table.shape(1);
            if (grad_out.shape(0) != n_bags || grad_out.shape(1) != d) {
                throw std::invalid_argument("grad_out must have shape (" + std::to_string(n_bags) +
                                            ", " + std::to_string(d) + ")");
            }
            auto out = metarec_py::empty<T>({n_ids});
            T* o = out.mutable_data();
            const int threads = metarec::resolve_num_threads(num_threads);
            without_gil([&] {
                metarec::embedding_bag_weight_grad<T>(grad_out.data(), n_bags, table.data(),
                                                      table.shape(0), d, ids.data(), n_ids,
                                                      offsets.data(), o, threads);
            });
            return out;
        },
        py::arg("grad_out").noconvert(), py::arg("table").noconvert(), py::arg("ids").noconvert(),
        py::arg("offsets").noconvert(), py::arg("num_threads") = 0);

    m.def(
        "sparse_sgd",
        [](carray<T> table, const carray<std::int64_t>& rows, const carray<T>& grads, double lr,
           int num_threads) {
            require_ndim(table, 2, "table");
            require_ndim(rows, 1, "rows");
            require_ndim(grads, 2, "grads");
            const std::int64_t n = rows.shape(0), d = table.shape(1);
            if (grads.shape(0) != n || grads.shape(1) != d) {
                throw std::invalid_argument("grads must have shape (" + std::to_string(n) + ", " +
                                            std::to_string(d) + ")");
            }
            T* t = table.mutable_data();  // throws if read-only
            const int threads = metarec::resolve_num_threads(num_threads);
            without_gil([&] {
                metarec::sparse_sgd<T>(t, table.shape(0), d, rows.data(), n, grads.data(),
                                       static_cast<T>(lr), threads);
            });
        },
        py::arg("table").noconvert(), py::arg("rows").noconvert(), py::arg("grads").noconvert(),
        py::arg("lr"), py::arg("num_threads") = 0);

    m.def(
        "sparse_adagrad",
        [](carray<T> table, carray<T> state, const carray<std::int64_t>& rows,
           const carray<T>& grads, double lr, double eps, int num_threads) {
            require_ndim(table, 2, "table");
            require_ndim(state, 1, "state");
            require_ndim(rows, 1, "rows");
            require_ndim(grads, 2, "grads");
            const std::int64_t n = rows.shape(0), d = table.shape(1);
            if (grads.shape(0) != n || grads.shape(1) != d) {
                throw std::invalid_argument("grads must have shape (" + std::to_string(n) + ", " +
                                            std::to_string(d) + ")");
            }
            if (state.shape(0) != table.shape(0)) {
                throw std::invalid_argument("state must have " + std::to_string(table.shape(0)) +
                                            " entries, got " + std::to_string(state.shape(0)));
            }
            T* t = table.mutable_data();
            T* s = state.mutable_data();
            const int threads = metarec::resolve_num_threads(num_threads);
            without_gil([&] {
                metarec::sparse_adagrad<T>(t, s, table.shape(0), d, rows.data(), n, grads.data(),
                                           static_cast<T>(lr), static_cast<T>(eps), threads);
            });
        },
        py::arg("table").noconvert(), py::arg("state").noconvert(), py::arg("rows").noconvert(),
        py::arg("grads").noconvert(), py::arg("lr"), py::arg("eps"), py::arg("num_threads") = 0);
}

}  // namespace

void bind_embedding(py::module_& m) {
    bind_float<float>(m);
    bind_float<double>(m);
    m.def(
        "embedding_simd_level",
        [](const std::string& simd) {
            const metarec::simd::Level used =
                simd.empty() ? metarec::embedding_bag_kernel_level()
                             : metarec::embedding_bag_kernel_level(metarec::simd::parse_level(simd));
            return std::string(metarec::simd::level_name(used));
        },
        py::arg("simd") = "",
        "Level of the embedding-bag loop that runs for the active level (simd='') or a forced one "
        "(lower when that level reuses the loop below it).");
    m.def(
        "_parallel_copy",
        [](const py::array& src, py::array& dst, int num_threads) {
            const auto contiguous = py::array::c_style;
            if (!(src.flags() & contiguous) || !(dst.flags() & contiguous)) {
                throw std::invalid_argument("src and dst must be C-contiguous");
            }
            if (!dst.writeable()) throw std::invalid_argument("dst is read-only");
            const auto nbytes = static_cast<std::int64_t>(src.nbytes());
            if (static_cast<std::int64_t>(dst.nbytes()) != nbytes) {
                throw std::invalid_argument("src and dst must have the same number of bytes");
            }
            const void* s = src.data();
            void* d = dst.mutable_data();
            const int threads = metarec::resolve_num_threads(num_threads);
            without_gil([&] { metarec::parallel_copy(s, d, nbytes, threads); });
        },
        py::arg("src"), py::arg("dst"), py::arg("num_threads") = 0,
        "Private: parallel memcpy between two contiguous buffers (copy-bandwidth benchmark).");
}
