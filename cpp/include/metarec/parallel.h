// Thread-count resolution and an exception-safe, interruptible parallel loop.
//
// Every kernel in metarec-fast parallelises through `parallel_for`, so three
// promises hold everywhere: no exception escapes an OpenMP region (the first
// one is captured and re-thrown on the calling thread), a long call can be
// interrupted between chunks, and the split of work never changes results
// (each index is processed by exactly one thread, in a fixed order inside it).
#pragma once

#include <cstdint>
#include <exception>
#include <stdexcept>

#if defined(METAREC_HAS_OPENMP)
#include <omp.h>
#endif

namespace metarec {

// Thrown after a parallel loop when the interrupt checker asked it to stop.
// The Python bindings turn it back into the pending KeyboardInterrupt.
struct Interrupted : std::runtime_error {
    Interrupted() : std::runtime_error("interrupted") {}
};

// True when the library was compiled with OpenMP.
bool has_openmp() noexcept;

// Number of threads a kernel uses when told `requested`:
//   0  -> the OpenMP default (omp_get_max_threads(); honours OMP_NUM_THREADS,
//         omp_set_num_threads and threadpoolctl),
//   -1 -> all processors (omp_get_num_procs()),
//   n>0 -> exactly n.  Anything else throws std::invalid_argument.
int resolve_num_threads(int requested);

// Global default used when a kernel is called with 0 (wraps omp_set/get_max_threads).
void set_default_num_threads(int n);
int default_num_threads() noexcept;

// A process-wide hook polled by thread 0 between chunks (at most every ~50 ms).
// It returns true to request a stop. The bindings install one that checks
// Python signals; pure C++ users may leave it unset.
using InterruptChecker = bool (*)();
void set_interrupt_checker(InterruptChecker checker) noexcept;

namespace detail {
// Polls the checker if the throttle interval has passed; thread-0 only.
bool poll_interrupt() noexcept;

inline int thread_id() noexcept {
#if defined(METAREC_HAS_OPENMP)
    return omp_get_thread_num();
#else
    return 0;
#endif
}
}  // namespace detail

// Runs body(begin, end) over [0, n) in chunks of `chunk` indices with dynamic
// scheduling on `num_threads` threads (already resolved, > 0). Exceptions
// from `body` are captured, remaining chunks are skipped and the first
// exception is re-thrown here. An interrupt request throws Interrupted.
template <class Body>
void parallel_for(std::int64_t n, int num_threads, std::int64_t chunk, Body&& body) {
    if (n <= 0) return;
    if (chunk < 1) chunk = 1;
    const std::int64_t n_chunks = (n + chunk - 1) / chunk;
    std::exception_ptr error = nullptr;
    bool stop = false;  // written under the critical section, read racily as a hint
    bool interrupted = false;
#if defined(METAREC_HAS_OPENMP)
    const int threads = n_chunks < num_threads ? static_cast<int>(n_chunks) : num_threads;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
#endif
    for (std::int64_t c = 0; c < n_chunks; ++c) {
        bool skip;
#if defined(METAREC_HAS_OPENMP)
#pragma omp atomic read
#endif
        skip = stop;
        if (skip) continue;
        try {
            if (detail::thread_id() == 0 && detail::poll_interrupt()) {
#if defined(METAREC_HAS_OPENMP)
#pragma omp atomic write
#endif
                stop = true;
#if defined(METAREC_HAS_OPENMP)
#pragma omp critical(metarec_parallel_error)
#endif
                interrupted = true;
                continue;
            }
            const std::int64_t begin = c * chunk;
            const std::int64_t end = begin + chunk < n ? begin + chunk : n;
            body(begin, end);
        } catch (...) {
#if defined(METAREC_HAS_OPENMP)
#pragma omp critical(metarec_parallel_error)
#endif
            {
                if (!error) error = std::current_exception();
            }
#if defined(METAREC_HAS_OPENMP)
#pragma omp atomic write
#endif
            stop = true;
        }
    }
    if (error) std::rethrow_exception(error);
    if (interrupted) throw Interrupted();
}

}  // namespace metarec
