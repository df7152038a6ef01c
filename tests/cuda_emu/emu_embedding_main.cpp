// Runs the CUDA embedding launchers and kernels of cpp/cuda/embedding.cu under
// the host emulation (tests/cuda_emu/cuda_runtime.h). Built by
// tests/test_cuda_emulated.py twice:
//  * as a shared library with the C ABI below (ctypes): the test compares every
//    result bit for bit with the CPU kernels of metarec_fast._core;
//  * with -DMETAREC_EMU_MAIN -fsanitize=address,undefined as a stand-alone
//    stress run on buffers of exactly the documented sizes.
// Compile with -ffp-contract=off (the kernels' _rn intrinsics are plain host
// operations here, and the CPU kernels are built that way too).
//
// The kernels never communicate between threads, so every CUDA thread runs
// start to finish in one go. Vector loads and stores are checked for
// alignment to their width (counted, emu_misaligned()). `blocks` > 0 caps
// every grid (emu::grid_cap) to exercise the grid-stride loops.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_runtime.h>

// Misaligned vector accesses are counted, not faulted (a GPU would fault).
long long g_misaligned = 0;
#define METAREC_EMB_CHECK_ALIGNED(p, bytes) \
    (g_misaligned += (reinterpret_cast<std::uintptr_t>(p) % (bytes)) != 0)

#include "embedding.cu"

using i64 = std::int64_t;

namespace {

std::string g_error;

// Runs a launcher with grid cap `blocks`; 0 on success, else 1 (ValueError),
// 2 (IndexError) or 3 (anything else, e.g. an emulated deadlock), message in
// emu_last_error().
template <class F>
int guarded(int blocks, F&& f) {
    emu::grid_cap = blocks > 0 ? static_cast<unsigned>(blocks) : 0u;
    int rc = 0;
    try {
        f();
    } catch (const std::invalid_argument& e) {
        g_error = e.what();
        rc = 1;
    } catch (const std::out_of_range& e) {
        g_error = e.what();
        rc = 2;
    } catch (const std::exception& e) {
        g_error = e.what();
        rc = 3;
    }
    emu::grid_cap = 0;
    return rc;
}

template <class T>
void do_gather(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids, T* out, int blocks) {
    if (guarded(blocks, [&] { metarec::cuda::embedding_gather<T>(table, num_rows, dim, ids, n_ids, out, nullptr, 0); })) {
        throw std::runtime_error(g_error);
    }
}

template <class T>
void do_forward(const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids, const i64* offsets, i64 n_bags,
                const T* weights, bool mean, T* out, int blocks) {
    if (guarded(blocks, [&] {
            metarec::cuda::embedding_bag_forward<T>(table, num_rows, dim, ids, n_ids, offsets, n_bags, weights, mean,
                                                    out, nullptr, 0);
        })) {
        throw std::runtime_error(g_error);
    }
}

[[maybe_unused]] void do_group(const i64* ids, i64 n_ids, const i64* offsets, i64 n_bags, i64 num_rows, i64* ws, int blocks) {
    if (guarded(blocks, [&] { metarec::cuda::embedding_group(ids, n_ids, offsets, n_bags, num_rows, ws, nullptr, 0); })) {
        throw std::runtime_error(g_error);
    }
}

template <class T>
void do_backward(const T* grad_out, i64 n_bags, i64 dim, const i64* offsets, i64 n_ids, const T* weights, bool mean,
                 const i64* ws, i64 n_launch, bool dense, i64 num_rows, T* dest, int blocks) {
    if (guarded(blocks, [&] {
            metarec::cuda::embedding_bag_backward<T>(grad_out, n_bags, dim, offsets, n_ids, weights, mean, ws,
                                                     n_launch, dense, num_rows, dest, nullptr, 0);
        })) {
        throw std::runtime_error(g_error);
    }
}

template <class T>
void do_weight_grad(const T* grad_out, i64 n_bags, const T* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids,
                    const i64* offsets, T* out, int blocks) {
    if (guarded(blocks, [&] {
            metarec::cuda::embedding_bag_weight_grad<T>(grad_out, n_bags, table, num_rows, dim, ids, n_ids, offsets,
                                                        out, nullptr, 0);
        })) {
        throw std::runtime_error(g_error);
    }
}

}  // namespace

// C ABI for ctypes: `f64` selects double, else float; pointers are host
// addresses of C-contiguous arrays (weights may be null). Each returns 0, or
// an error code (see guarded) with the message in emu_last_error().
extern "C" {

const char* emu_last_error() { return g_error.c_str(); }
long long emu_misaligned() { return g_misaligned; }
long long emu_launches() { return emu::launches; }

int emu_gather(int f64, const void* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids, void* out,
               int blocks) {
    return guarded(blocks, [&] {
        if (f64) {
            metarec::cuda::embedding_gather<double>(static_cast<const double*>(table), num_rows, dim, ids, n_ids,
                                                    static_cast<double*>(out), nullptr, 0);
        } else {
            metarec::cuda::embedding_gather<float>(static_cast<const float*>(table), num_rows, dim, ids, n_ids,
                                                   static_cast<float*>(out), nullptr, 0);
        }
    });
}

int emu_forward(int f64, const void* table, i64 num_rows, i64 dim, const i64* ids, i64 n_ids, const i64* offsets,
                i64 n_bags, const void* weights, int mean, void* out, int blocks) {
    return guarded(blocks, [&] {
        if (f64) {
            metarec::cuda::embedding_bag_forward<double>(static_cast<const double*>(table), num_rows, dim, ids,
                                                         n_ids, offsets, n_bags, static_cast<const double*>(weights),
                                                         mean != 0, static_cast<double*>(out), nullptr, 0);
        } else {
            metarec::cuda::embedding_bag_forward<float>(static_cast<const float*>(table), num_rows, dim, ids, n_ids,
                                                        offsets, n_bags, static_cast<const float*>(weights),
                                                        mean != 0, static_cast<float*>(out), nullptr, 0);
        }
    });
}

int emu_check(const i64* ids, i64 n_ids, i64 num_rows, const i64* offsets, i64 n_bags, i64* result, int blocks) {
    return guarded(blocks,
                   [&] { metarec::cuda::embedding_check(ids, n_ids, num_rows, offsets, n_bags, result, nullptr, 0); });
}

int emu_group(const i64* ids, i64 n_ids, const i64* offsets, i64 n_bags, i64 num_rows, i64* ws, int blocks) {
    return guarded(blocks,
                   [&] { metarec::cuda::embedding_group(ids, n_ids, offsets, n_bags, num_rows, ws, nullptr, 0); });
}

int emu_backward(int f64, const void* grad_out, i64 n_bags, i64 dim, const i64* offsets, i64 n_ids,
                 const void* weights, int mean, const i64* ws, i64 n_launch, int dense, i64 num_rows, void* dest,
                 int blocks) {
    return guarded(blocks, [&] {
        if (f64) {
            metarec::cuda::embedding_bag_backward<double>(static_cast<const double*>(grad_out), n_bags, dim, offsets,
                                                          n_ids, static_cast<const double*>(weights), mean != 0, ws,
                                                          n_launch, dense != 0, num_rows, static_cast<double*>(dest),
                                                          nullptr, 0);
        } else {
            metarec::cuda::embedding_bag_backward<float>(static_cast<const float*>(grad_out), n_bags, dim, offsets,
                                                         n_ids, static_cast<const float*>(weights), mean != 0, ws,
                                                         n_launch, dense != 0, num_rows, static_cast<float*>(dest),
                                                         nullptr, 0);
        }
    });
}

int emu_weight_grad(int f64, const void* grad_out, i64 n_bags, const void* table, i64 num_rows, i64 dim,
                    const i64* ids, i64 n_ids, const i64* offsets, void* out, int blocks) {
    return guarded(blocks, [&] {
        if (f64) {
            metarec::cuda::embedding_bag_weight_grad<double>(static_cast<const double*>(grad_out), n_bags,
                                                             static_cast<const double*>(table), num_rows, dim, ids,
                                                             n_ids, offsets, static_cast<double*>(out), nullptr, 0);
        } else {
            metarec::cuda::embedding_bag_weight_grad<float>(static_cast<const float*>(grad_out), n_bags,
                                                            static_cast<const float*>(table), num_rows, dim, ids,
                                                            n_ids, offsets, static_cast<float*>(out), nullptr, 0);
        }
    });
}

}  // extern "C"

#ifdef METAREC_EMU_MAIN
// Stand-alone stress run for AddressSanitizer (tests/test_cuda_emulated.py
// builds it with -fsanitize=address,undefined): random problems, including
// empty bags, ids and offsets the Python layer would reject, misaligned
// tables and tiny grids, on buffers of exactly the documented sizes. Any read
// or write outside them aborts the run.
#include <cstdio>
#include <memory>

namespace {

std::uint64_t g_state = 0x9E3779B97F4A7C15ull;
std::uint64_t next_u64() {
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return g_state;
}
void must(int rc) {
    if (rc != 0) throw std::runtime_error(g_error);
}
i64 uniform(i64 n) { return n <= 0 ? 0 : static_cast<i64>(next_u64() % static_cast<std::uint64_t>(n)); }

// Exactly n elements on the heap (offset by one element when `shift`, to
// break alignment); the redzone follows the last element either way.
template <class T>
struct Buf {
    std::unique_ptr<T[]> mem;
    T* p;
    Buf(i64 n, bool shift) : mem(new T[static_cast<std::size_t>(n + (shift ? 1 : 0))]) {
        p = mem.get() + (shift ? 1 : 0);
        for (i64 i = 0; i < n; ++i) p[i] = static_cast<T>(uniform(1000)) / T(7);
    }
};

template <class T>
void run_one(int round) {
    const i64 dims[] = {1, 2, 3, 4, 5, 8, 64, 66, 130};
    const i64 dim = dims[uniform(9)];
    const i64 num_rows = 1 + uniform(300);
    const i64 n_bags = uniform(40);
    const bool shift = uniform(2) == 1;
    const bool bad = round % 5 == 4;  // out-of-range ids and broken offsets
    const int blocks = static_cast<int>(uniform(4));  // 0 = the launchers' grid
    std::vector<i64> offsets;
    i64 n_ids = 0;
    for (i64 b = 0; b < n_bags; ++b) {
        offsets.push_back(n_ids);
        n_ids += uniform(4) == 0 ? 0 : uniform(12);
    }
    if (n_bags == 0) n_ids = 0;
    Buf<i64> ids(n_ids, false);
    for (i64 j = 0; j < n_ids; ++j) ids.p[j] = uniform(num_rows);
    Buf<i64> offs(n_bags, false);
    for (i64 b = 0; b < n_bags; ++b) offs.p[b] = offsets[static_cast<std::size_t>(b)];
    if (bad && n_ids > 0) {
        ids.p[uniform(n_ids)] = num_rows + uniform(5);
        ids.p[uniform(n_ids)] = -1 - uniform(5);
    }
    Buf<T> table(num_rows * dim, shift);
    Buf<T> weights(n_ids, shift);
    Buf<T> out(n_bags * dim, shift);
    Buf<T> grad_out(n_bags * dim, shift);
    const bool weighted = uniform(2) == 1;
    const bool mean = !weighted && uniform(2) == 1;
    const T* w = weighted ? weights.p : nullptr;

    Buf<i64> check(4, false);
    must(emu_check(ids.p, n_ids, num_rows, offs.p, n_bags, check.p, blocks));
    Buf<T> gathered(n_ids * dim, shift);
    do_gather(table.p, num_rows, dim, ids.p, n_ids, gathered.p, blocks);
    if (bad && n_bags > 1) {  // forward and weight grad clamp broken offsets
        Buf<i64> broken(n_bags, false);
        for (i64 b = 0; b < n_bags; ++b) broken.p[b] = uniform(n_ids + 10) - 5;
        do_forward(table.p, num_rows, dim, ids.p, n_ids, broken.p, n_bags, w, mean, out.p, blocks);
        Buf<T> wg(n_ids, shift);
        do_weight_grad(grad_out.p, n_bags, table.p, num_rows, dim, ids.p, n_ids, broken.p, wg.p,
                    blocks);
    }
    do_forward(table.p, num_rows, dim, ids.p, n_ids, offs.p, n_bags, w, mean, out.p, blocks);
    Buf<T> wg(n_ids, shift);
    do_weight_grad(grad_out.p, n_bags, table.p, num_rows, dim, ids.p, n_ids, offs.p, wg.p, blocks);
    if (bad) {  // the grouping sorts only the key bits below num_rows: keep ids in range
        for (i64 j = 0; j < n_ids; ++j) ids.p[j] = uniform(num_rows);
    }
    Buf<i64> ws(7 * n_ids + 2, false);
    do_group(ids.p, n_ids, offs.p, n_bags, num_rows, ws.p, blocks);
    Buf<T> dense(num_rows * dim, shift);
    do_backward(grad_out.p, n_bags, dim, offs.p, n_ids, w, mean, ws.p, n_ids, true, num_rows,
             dense.p, blocks);
    const i64 n_unique = ws.p[7 * n_ids + 1];
    Buf<T> values(n_unique * dim, shift);
    do_backward(grad_out.p, n_bags, dim, offs.p, n_ids, w, mean, ws.p, n_unique, false, num_rows,
             values.p, blocks);
}

}  // namespace

int main(int argc, char** argv) {
    const int rounds = argc > 1 ? std::atoi(argv[1]) : 400;
    for (int round = 0; round < rounds; ++round) {
        run_one<float>(round);
        run_one<double>(round);
    }
    std::printf("ok, %lld misaligned vector accesses\n", g_misaligned);
    return g_misaligned == 0 ? 0 : 1;
}
#endif
