// The compiled core of metarec-fast: build facts, threading, and one
// bind_<area>() call per kernel family.
#include <pybind11/stl.h>

#include <string>

#include "common.h"
#include "metarec/parallel.h"

namespace py = pybind11;

namespace metarec_py {
void require_ndim(const py::array& a, int ndim, const char* name) {
    if (a.ndim() != ndim) {
        throw std::invalid_argument(std::string(name) + " must be " + std::to_string(ndim) +
                                    "-dimensional, got " + std::to_string(a.ndim()) + " dimensions");
    }
}
}  // namespace metarec_py

namespace {
// Polled by thread 0 of every parallel loop (throttled): lets Ctrl-C stop a
// long kernel. PyErr_CheckSignals only acts on the main thread.
bool python_interrupt_checker() {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
}

std::string simd_compiled() {
#if defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__)
    return "avx2";
#elif defined(__SSE2__) || defined(_M_X64)
    return "sse2";
#elif defined(__ARM_NEON)
    return "neon";
#else
    return "generic";
#endif
}
}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "metarec-fast compiled core (C++17, OpenMP). Use the wrappers in metarec_fast.ops.";
    m.attr("__version__") = METAREC_VERSION;
    m.attr("has_openmp") = metarec::has_openmp();
    m.attr("has_cuda") = false;

    py::dict build;
    build["compiler"] = METAREC_CXX_COMPILER;
    build["build_type"] = METAREC_BUILD_TYPE;
    build["native"] = static_cast<bool>(METAREC_NATIVE_BUILD);
    build["simd_baseline"] = simd_compiled();
#if defined(METAREC_HAS_OPENMP) && defined(_OPENMP)
    build["openmp"] = std::to_string(_OPENMP);
#else
    build["openmp"] = py::none();
#endif
    m.attr("build_info") = build;

    m.def("set_num_threads", &metarec::set_default_num_threads, py::arg("n"),
          "Sets the OpenMP default thread count used when a kernel gets num_threads=0.");
    m.def("get_num_threads", &metarec::default_num_threads,
          "The OpenMP default thread count (omp_get_max_threads).");
    m.def("resolve_num_threads", &metarec::resolve_num_threads, py::arg("requested"),
          "0 -> default, -1 -> all processors, n > 0 -> n.");

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const metarec::Interrupted&) {
            // The signal handler already set KeyboardInterrupt; keep it.
            if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
        }
    });
    metarec::set_interrupt_checker(&python_interrupt_checker);

    bind_embedding(m);
    bind_topk(m);
    bind_metrics(m);
    bind_adapt(m);
}
