// Shared helpers for the binding files: array conversion without copies,
// GIL release around kernels, and translation of kernel errors.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace metarec_py {

namespace py = pybind11;

// Strict C-contiguous input: the Python wrappers convert once, so a wrong
// dtype or layout reaching here is a bug and must not be silently copied.
template <class T>
using carray = py::array_t<T, py::array::c_style>;

// Hands a std::vector to numpy without copying: a capsule owns the buffer.
template <class T>
py::array_t<T> to_numpy(std::vector<T>&& data, std::vector<py::ssize_t> shape) {
    auto* owner = new std::vector<T>(std::move(data));
    py::capsule free_when_done(owner, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(std::move(shape), owner->data(), free_when_done);
}

// Allocates an uninitialised numpy array the kernel writes into.
template <class T>
py::array_t<T> empty(std::vector<py::ssize_t> shape) {
    return py::array_t<T>(std::move(shape));
}

// Runs `fn` with the GIL released. Kernel exceptions propagate to pybind11's
// translators (std::invalid_argument -> ValueError, std::out_of_range ->
// IndexError, metarec::Interrupted -> KeyboardInterrupt).
template <class Fn>
decltype(auto) without_gil(Fn&& fn) {
    py::gil_scoped_release release;
    return std::forward<Fn>(fn)();
}

// Validates a 1-d/2-d array's shape at the C++ boundary.
void require_ndim(const py::array& a, int ndim, const char* name);

}  // namespace metarec_py

// One per area; each defined in its own binding file.
void bind_embedding(pybind11::module_& m);
void bind_topk(pybind11::module_& m);
void bind_metrics(pybind11::module_& m);
void bind_adapt(pybind11::module_& m);
