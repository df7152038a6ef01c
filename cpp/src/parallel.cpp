#include "metarec/parallel.h"

#include <atomic>
#include <chrono>
#include <string>

namespace metarec {

bool has_openmp() noexcept {
#if defined(METAREC_HAS_OPENMP)
    return true;
#else
    return false;
#endif
}

int resolve_num_threads(int requested) {
    if (requested == 0) return default_num_threads();
    if (requested == -1) {
#if defined(METAREC_HAS_OPENMP)
        return omp_get_num_procs();
#else
        return 1;
#endif
    }
    if (requested > 0) return requested;
    throw std::invalid_argument("num_threads must be None, -1 or a positive integer, got " +
                                std::to_string(requested));
}

void set_default_num_threads(int n) {
    if (n <= 0) {
        throw std::invalid_argument("num_threads must be positive, got " + std::to_string(n));
    }
#if defined(METAREC_HAS_OPENMP)
    omp_set_num_threads(n);
#endif
}

int default_num_threads() noexcept {
#if defined(METAREC_HAS_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

namespace {
std::atomic<InterruptChecker> g_checker{nullptr};
// Last poll time in steady-clock nanoseconds; only thread 0 of a loop polls,
// but several Python threads may run loops at once, hence atomic.
std::atomic<std::int64_t> g_last_poll_ns{0};
constexpr std::int64_t kPollIntervalNs = 50'000'000;  // 50 ms
}  // namespace

void set_interrupt_checker(InterruptChecker checker) noexcept { g_checker.store(checker); }

namespace detail {
bool poll_interrupt() noexcept {
    InterruptChecker checker = g_checker.load(std::memory_order_relaxed);
    if (checker == nullptr) return false;
    const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    std::int64_t last = g_last_poll_ns.load(std::memory_order_relaxed);
    if (now - last < kPollIntervalNs) return false;
    g_last_poll_ns.store(now, std::memory_order_relaxed);
    return checker();
}
}  // namespace detail

}  // namespace metarec
