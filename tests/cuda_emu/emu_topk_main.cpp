// Runs the CUDA top-k kernels of cpp/cuda/topk.cu under the host emulation
// (tests/cuda_emu/cuda_runtime.h) and compares every result bit for bit with
// a brute-force reference using the same arithmetic (bias, then fused
// multiply-adds over d in order). Built and run by tests/test_cuda_emulated.py.
// Before that, case_runtime() checks the emulation itself with deliberately
// broken kernels. Prints one line per case; exits 1 on any mismatch.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "topk.h"

namespace {

using std::int64_t;
int failures = 0;
int cases = 0;

struct Excl {
    std::vector<int64_t> indptr, indices;
    bool any = false;
};

Excl make_excl(std::mt19937_64& rng, int64_t rows, int64_t cols, int per_row) {
    Excl e;
    e.indptr.push_back(0);
    if (per_row < 0 || cols == 0) {
        e.indptr.assign(static_cast<std::size_t>(rows + 1), 0);
        e.any = per_row >= 0;
        return e;
    }
    for (int64_t r = 0; r < rows; ++r) {
        const int cnt = static_cast<int>(rng() % static_cast<unsigned>(per_row + 1));
        std::vector<int64_t> row;
        for (int c = 0; c < cnt; ++c) row.push_back(static_cast<int64_t>(rng() % cols));
        if (cnt > 1) row.push_back(row[0]);  // a duplicate
        std::sort(row.begin(), row.end());
        e.indices.insert(e.indices.end(), row.begin(), row.end());
        e.indptr.push_back(static_cast<int64_t>(e.indices.size()));
    }
    e.any = true;
    return e;
}

bool excluded(const Excl& e, int64_t r, int64_t c) {
    if (!e.any) return false;
    return std::binary_search(e.indices.begin() + e.indptr[r], e.indices.begin() + e.indptr[r + 1], c);
}

template <class T>
void select_row(std::vector<std::pair<T, int64_t>>& cand, int64_t k, int64_t* ids, float* vals) {
    std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (int64_t j = 0; j < k; ++j) {
        if (j < static_cast<int64_t>(cand.size())) {
            ids[j] = cand[j].second;
            vals[j] = static_cast<float>(cand[j].first);
        } else {
            ids[j] = -1;
            vals[j] = -std::numeric_limits<float>::infinity();
        }
    }
}

bool same(const std::vector<int64_t>& a, const std::vector<int64_t>& b, const std::vector<float>& va,
          const std::vector<float>& vb, int64_t k, std::string& where) {
    for (std::size_t i = 0; i < a.size(); ++i) {
        const bool vs = (va[i] == vb[i]) || (std::isnan(va[i]) && std::isnan(vb[i]));
        if (a[i] != b[i] || !vs) {
            where = "row " + std::to_string(i / k) + " pos " + std::to_string(i % k) + ": got (" +
                    std::to_string(a[i]) + ", " + std::to_string(va[i]) + ") want (" +
                    std::to_string(b[i]) + ", " + std::to_string(vb[i]) + ")";
            return false;
        }
    }
    return true;
}

auto last = std::chrono::steady_clock::now();

void report(const std::string& name, bool ok, const std::string& why) {
    ++cases;
    if (!ok) ++failures;
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last).count();
    last = now;
    std::printf("%s %s (%.0f ms)%s%s\n", ok ? "ok  " : "FAIL", name.c_str(), ms, ok ? "" : ": ",
                ok ? "" : why.c_str());
    std::fflush(stdout);
}

// values: 0 = standard normal, n > 0 = integers in [-n, n] (exact sums, many ties),
// -1 = all ones.
template <class T>
std::vector<T> data(std::mt19937_64& rng, int64_t n, int values) {
    std::vector<T> v(static_cast<std::size_t>(n));
    std::normal_distribution<double> nd;
    for (auto& x : v) {
        if (values == 0) {
            x = static_cast<T>(nd(rng));
        } else if (values > 0) {
            x = static_cast<T>(static_cast<int>(rng() % (2 * values + 1)) - values);
        } else {
            x = T(1);
        }
    }
    return v;
}

template <class T>
void case_dot(int64_t nq, int64_t ni, int64_t d, int64_t k, int slices, int values, int excl_per_row,
              bool with_bias, unsigned seed) {
    std::mt19937_64 rng(seed);
    auto q = data<T>(rng, nq * d, values);
    auto it = data<T>(rng, ni * d, values);
    auto b = data<T>(rng, ni, values);
    Excl ex = excl_per_row >= 0 ? make_excl(rng, nq, ni, excl_per_row) : Excl{};
    std::vector<int64_t> ids(static_cast<std::size_t>(nq * k), 7), rids(ids.size());
    std::vector<float> vals(ids.size(), 7.f), rvals(ids.size());
    const std::string name = std::string("topk_dot<") + (sizeof(T) == 4 ? "f32" : "f64") + "> nq=" +
                             std::to_string(nq) + " ni=" + std::to_string(ni) + " d=" + std::to_string(d) +
                             " k=" + std::to_string(k) + " slices=" + std::to_string(slices) +
                             " values=" + std::to_string(values) + " excl=" + std::to_string(excl_per_row) +
                             (with_bias ? " bias" : "");
    try {
        metarec::cuda::topk_dot<T>(q.data(), nq, it.data(), ni, d, with_bias ? b.data() : nullptr, k,
                                   ex.any ? ex.indptr.data() : nullptr,
                                   ex.any ? ex.indices.data() : nullptr,
                                   static_cast<int64_t>(ex.indices.size()), ids.data(), vals.data(),
                                   nullptr, 0, slices);
    } catch (const std::exception& e) {
        report(name, false, std::string("threw ") + e.what());
        return;
    }
    for (int64_t r = 0; r < nq; ++r) {
        std::vector<std::pair<T, int64_t>> cand;
        for (int64_t i = 0; i < ni; ++i) {
            if (excluded(ex, r, i)) continue;
            T s = with_bias ? b[i] : T(0);
            for (int64_t t = 0; t < d; ++t) s = std::fma(q[r * d + t], it[i * d + t], s);
            if (s != s) continue;
            cand.emplace_back(s, i);
        }
        select_row(cand, k, rids.data() + r * k, rvals.data() + r * k);
    }
    std::string why;
    report(name, same(ids, rids, vals, rvals, k, why), why);
}

template <class T>
void case_rows(int64_t n, int64_t m, int64_t k, int slices, int values, int excl_per_row, unsigned seed,
               bool infs, int64_t nan_at = -1) {
    std::mt19937_64 rng(seed);
    auto s = data<T>(rng, n * m, values);
    if (infs) {
        for (int64_t i = 0; i < n * m; i += 7) s[i] = -std::numeric_limits<T>::infinity();
        for (int64_t i = 3; i < n * m; i += 101) s[i] = std::numeric_limits<T>::infinity();
        if (n > 1) std::fill(s.begin() + m, s.begin() + 2 * m, -std::numeric_limits<T>::infinity());
    }
    if (nan_at >= 0) {
        s[nan_at] = std::numeric_limits<T>::quiet_NaN();
        if (nan_at + 5 < n * m) s[n * m - 1] = std::numeric_limits<T>::quiet_NaN();
    }
    Excl ex = excl_per_row >= 0 ? make_excl(rng, n, m, excl_per_row) : Excl{};
    std::vector<int64_t> ids(static_cast<std::size_t>(n * k), 7), rids(ids.size());
    std::vector<float> vals(ids.size(), 7.f), rvals(ids.size());
    const std::string name = std::string("topk<") + (sizeof(T) == 4 ? "f32" : "f64") + "> n=" +
                             std::to_string(n) + " m=" + std::to_string(m) + " k=" + std::to_string(k) +
                             " slices=" + std::to_string(slices) + " values=" + std::to_string(values) +
                             " excl=" + std::to_string(excl_per_row) + (infs ? " infs" : "") +
                             (nan_at >= 0 ? " nan@" + std::to_string(nan_at) : "");
    try {
        metarec::cuda::topk<T>(s.data(), n, m, k, ex.any ? ex.indptr.data() : nullptr,
                               ex.any ? ex.indices.data() : nullptr,
                               static_cast<int64_t>(ex.indices.size()), ids.data(), vals.data(), nullptr,
                               0, slices);
    } catch (const std::invalid_argument& e) {
        const std::string want = nan_at >= 0 ? "scores contains NaN at index (" + std::to_string(nan_at / m) +
                                                   ", " + std::to_string(nan_at % m) + ")"
                                             : "";
        const bool ok = nan_at >= 0 && want == e.what();
        report(name, ok, std::string("threw '") + e.what() + "', want '" + want + "'");
        return;
    }
    if (nan_at >= 0) {
        report(name, false, "NaN not reported");
        return;
    }
    for (int64_t r = 0; r < n; ++r) {
        std::vector<std::pair<T, int64_t>> cand;
        for (int64_t c = 0; c < m; ++c) {
            if (!excluded(ex, r, c)) cand.emplace_back(s[r * m + c], c);
        }
        select_row(cand, k, rids.data() + r * k, rvals.data() + r * k);
    }
    std::string why;
    report(name, same(ids, rids, vals, rvals, k, why), why);
}

void case_errors() {
    std::vector<float> x(100, 1.f);
    std::vector<int64_t> ids(4000);
    std::vector<float> vals(4000);
    auto expect = [&](const char* name, auto fn, const char* needle) {
        try {
            fn();
            report(name, false, "did not throw");
        } catch (const std::invalid_argument& e) {
            const bool ok = std::string(e.what()).find(needle) != std::string::npos;
            report(name, ok, e.what());
        }
    };
    expect("k limit topk_dot", [&] {
        metarec::cuda::topk_dot<float>(x.data(), 1, x.data(), 1100, 0, nullptr, 1025, nullptr, nullptr, 0,
                                       ids.data(), vals.data(), nullptr, 0);
    }, "1024");
    expect("k limit topk", [&] {
        metarec::cuda::topk<float>(x.data(), 1, 1100, 2000, nullptr, nullptr, 0, ids.data(), vals.data(),
                                   nullptr, 0);
    }, "1024");
    expect("k = 0", [&] {
        metarec::cuda::topk<float>(x.data(), 1, 10, 0, nullptr, nullptr, 0, ids.data(), vals.data(), nullptr,
                                   0);
    }, "positive");
}

// ---------------------------------------------------------------- the emulation itself
// Kernels with deliberate bugs: the emulation must report them (a deadlock,
// or a wrong result under the shuffled resume order), and the correct
// versions must pass. Run first, so a broken emulation cannot pass topk.

__global__ void divergent_barrier_kernel(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1;
}

__global__ void divergent_shuffle_kernel(int* out) {
    int v = static_cast<int>(threadIdx.x);
    if (threadIdx.x % 32 < 31) v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

// out[t] = t-th thread's neighbour's value, with or without the barrier.
__global__ void neighbour_kernel(int* out, bool barrier) {
    __shared__ int sh[256];
    const int t = static_cast<int>(threadIdx.x);
    sh[t] = 1000 + t + static_cast<int>(blockIdx.x);
    if (barrier) __syncthreads();
    out[blockIdx.x * 256 + t] = sh[(t + 1) % 256];
}

__global__ void collectives_kernel(int* out) {
    const int t = static_cast<int>(threadIdx.y * blockDim.x + threadIdx.x);
    double x = t;
    for (int m = 16; m >= 1; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    const int lane = t % 32;
    const unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
    const int any = __syncthreads_or(t == 77);
    const int all = __syncthreads_and(t < 1024);
    const int cnt = __syncthreads_count(t % 2 == 0);
    const int from0 = __shfl_sync(0xffffffffu, t, 0);
    out[t * 6 + 0] = static_cast<int>(x);
    out[t * 6 + 1] = static_cast<int>(ballot);
    out[t * 6 + 2] = any;
    out[t * 6 + 3] = all;
    out[t * 6 + 4] = cnt;
    out[t * 6 + 5] = from0;
}

void case_runtime() {
    std::vector<int> out(64 * 256, -1);
    auto deadlocks = [&](const char* name, auto kernel) {
        try {
            METAREC_CUDA_LAUNCH(kernel, 1, 64, nullptr, out.data());
            report(name, false, "no deadlock reported");
        } catch (const std::runtime_error& e) {
            report(name, std::string(e.what()).find("deadlock") != std::string::npos, e.what());
        }
    };
    deadlocks("emulation: divergent __syncthreads is a deadlock", divergent_barrier_kernel);
    deadlocks("emulation: divergent shuffle is a deadlock", divergent_shuffle_kernel);
    for (bool barrier : {true, false}) {
        METAREC_CUDA_LAUNCH(neighbour_kernel, 64, 256, nullptr, out.data(), barrier);
        int wrong = 0;
        for (int b = 0; b < 64; ++b) {
            for (int t = 0; t < 256; ++t) wrong += out[b * 256 + t] != 1000 + (t + 1) % 256 + b;
        }
        report(barrier ? "emulation: shared memory after a barrier" : "emulation: a missing barrier shows",
               barrier ? wrong == 0 : wrong > 0, std::to_string(wrong) + " wrong reads");
    }
    std::vector<int> col(1024 * 6, -1);
    METAREC_CUDA_LAUNCH(collectives_kernel, 1, dim3(32, 32), nullptr, col.data());
    int wrong = 0;
    unsigned want_ballot = 0;
    for (int l = 0; l < 32; l += 3) want_ballot |= 1u << l;
    for (int t = 0; t < 1024; ++t) {
        const int w = t / 32;
        const int want_sum = 32 * 32 * w + 31 * 16;  // sum of 32w .. 32w + 31
        wrong += col[t * 6] != want_sum;
        wrong += static_cast<unsigned>(col[t * 6 + 1]) != want_ballot;
        wrong += col[t * 6 + 2] != 1 || col[t * 6 + 3] != 1 || col[t * 6 + 4] != 512;
        wrong += col[t * 6 + 5] != 32 * w;
    }
    report("emulation: shuffles, ballots, syncthreads_or/and/count on a 32 x 32 block", wrong == 0,
           std::to_string(wrong) + " wrong");
}

}  // namespace

int main(int argc, char** argv) {
    // --quick: the normal pytest run; no argument: larger shapes too (METAREC_FUZZ_SCALE > 1).
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    case_runtime();
    // fused dot: shapes, ties, exclusions, slices, bias, padding
    case_dot<float>(1, 1, 1, 1, 0, 0, -1, false, 1);
    case_dot<float>(5, 40, 3, 5, 0, 0, 6, true, 2);
    case_dot<float>(13, 33, 8, 4, 0, 1, 5, true, 3);
    case_dot<float>(3, 50, 0, 10, 0, 0, 4, true, 8);    // d = 0: ties, bias decides
    case_dot<float>(4, 0, 3, 2, 0, 0, -1, false, 9);    // no items: padding
    case_dot<float>(0, 5, 3, 2, 0, 0, -1, false, 10);   // no queries
    case_dot<float>(10, 30, 4, 50, 2, 1, 40, true, 11); // k > items, whole rows excluded
    case_dot<float>(3, 300, 9, 7, 0, 1, 20, true, 13);  // d not a multiple of BK
    case_dot<float>(130, 140, 3, 4, 0, 1, 10, true, 4); // two query tiles
    case_dot<float>(130, 140, 3, 4, 3, 1, 10, true, 5); // ... and item slices
    case_dot<float>(8, 300, 2, 33, 0, -1, -1, false, 12);  // all equal: overflow + flush path
    case_dot<float>(20, 300, 5, 40, 1, 2, 30, false, 7);
    case_dot<double>(40, 150, 3, 8, 0, 1, 10, true, 14);
    case_dot<double>(40, 150, 17, 20, 2, 0, 10, true, 15);
    case_dot<double>(33, 130, 1, 100, 5, -1, 3, false, 16);
    case_dot<float>(2, 1100, 2, 1024, 1, 1, 30, false, 17);  // the largest kept k
    if (!quick) {
        case_dot<float>(130, 300, 7, 20, 0, 1, 30, true, 4);
        case_dot<float>(130, 300, 7, 20, 3, 1, 30, true, 5);
        case_dot<float>(20, 700, 5, 100, 0, 0, 50, true, 6);
        case_dot<float>(20, 400, 2, 33, 0, -1, -1, false, 12);
        case_dot<double>(70, 200, 3, 16, 0, 1, 10, true, 14);
        case_dot<double>(70, 200, 17, 40, 2, 0, 10, true, 15);
        case_dot<float>(260, 260, 4, 3, 2, 1, 8, true, 18);  // several query tiles
        case_dot<double>(140, 100, 2, 64, 0, -1, 200, false, 19);
    }
    // explicit scores
    case_rows<float>(1, 1, 1, 0, 0, -1, 20, false);
    case_rows<float>(5, 40, 10, 0, 0, 5, 21, false);
    case_rows<float>(3, 2500, 40, 0, 2, 300, 22, true);
    case_rows<float>(3, 2500, 40, 2, 2, 300, 23, true);
    case_rows<double>(4, 2100, 65, 3, 3, 40, 24, true);
    case_rows<float>(4, 0, 3, 0, 0, -1, 25, false);
    case_rows<float>(8, 50, 80, 0, 1, 60, 26, false);
    case_rows<float>(3, 1500, 1, 0, -1, 5, 27, false);
    case_rows<float>(5, 2000, 3, 2, 1, -1, 28, false, 4 * 2000 + 1500);  // NaN, first reported
    case_rows<double>(7, 100, 3, 0, 1, 4, 29, false, 5 * 100 + 3);
    if (!quick) {
        case_rows<float>(6, 3000, 200, 0, 2, 300, 22, true);
        case_rows<float>(6, 3000, 200, 2, 2, 300, 23, true);
        case_rows<float>(2, 5000, 1000, 2, 1, 50, 30, false);
    }
    case_errors();
    std::printf("%d cases, %d failures\n", cases, failures);
    return failures == 0 ? 0 : 1;
}
