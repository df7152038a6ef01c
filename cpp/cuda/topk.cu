// CUDA top-k (see topk.h).
//
// Both kernels share one selection scheme, per (row, slice):
//  * a block owns R rows and one slice of the columns (items);
//  * a candidate (score, id) is appended to the row's shared-memory buffer
//    (CAP entries) only if it beats the row's current threshold: the worst
//    entry of the row's top-k list once that list holds kk entries;
//  * when a buffer overflows (and at the end of the slice) the block flushes:
//    one warp per row takes the buffered candidates, drops excluded ids
//    (binary search in the row's sorted CSR exclusion list) and inserts the
//    rest into the row's top-k list (global scratch, unsorted, kk entries),
//    replacing its worst entry and finding the new worst with a warp
//    reduction. Candidates that did not fit stay pending in registers and are
//    appended again after the flush, against the new threshold;
//  * a second kernel (merge_kernel) gathers a row's slice lists (at most
//    kSortCap entries), sorts them in shared memory with a bitonic network
//    under the total order (score desc, id asc), writes the first kk and pads.
// The top-kk under a strict total order is unique, so the result does not
// depend on the slicing or on the order in which candidates arrive.
//
// topk_dot_kernel computes its score tiles with a register-tiled SIMT GEMM:
// 256 threads as 16 x 16, each thread TM x TN scores (see row_of), query and
// item tiles staged through shared memory BK columns of d at a time (with a
// register prefetch of the next BK columns), read back with 16-byte loads. A score is
// bias + fused multiply-adds over d in order, like the CPU FMA kernels.
#include "topk.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace metarec {
namespace cuda {

namespace {

using std::int64_t;

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kSentinelId = INT_MAX;   // sorts after every real id
constexpr int kSortCap = 2048;          // entries the merge kernel sorts per row (power of 2)
constexpr int kRowsCap = 1024;          // candidate buffer of the explicit-score kernel
// Scratch for the per-(row, slice) lists; more rows are handled in groups.
#ifndef METAREC_TOPK_SCRATCH_BYTES
#define METAREC_TOPK_SCRATCH_BYTES (int64_t(1) << 30)
#endif
constexpr int64_t kScratchBytes = METAREC_TOPK_SCRATCH_BYTES;

static_assert(kTopkMaxK <= kSortCap, "one slice must fit the merge");

template <class T>
__device__ __forceinline__ T neg_inf() {
    return static_cast<T>(-INFINITY);
}

__device__ __forceinline__ float fma_rn(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double fma_rn(double a, double b, double c) { return __fma_rn(a, b, c); }

// The output order: higher score first, then lower id.
template <class T>
__device__ __forceinline__ bool better(T a, int ia, T b, int ib) {
    return a > b || (a == b && ia < ib);
}

struct Excl {
    const int64_t* indptr = nullptr;  // nullptr: no exclusions
    const int64_t* indices = nullptr;
    int64_t nnz = 0;
    int64_t row_offset = 0;  // global row of the launch's row 0
};

// The excluded ids of a (launch-local) row, clamped to [0, nnz).
__device__ __forceinline__ void excl_row(const Excl& ex, int64_t row, const int64_t*& base,
                                         int64_t& count) {
    base = nullptr;
    count = 0;
    if (ex.indptr == nullptr || ex.nnz <= 0) return;
    const int64_t g = ex.row_offset + row;
    int64_t a = ex.indptr[g];
    int64_t b = ex.indptr[g + 1];
    a = a < 0 ? 0 : (a > ex.nnz ? ex.nnz : a);
    b = b < a ? a : (b > ex.nnz ? ex.nnz : b);
    base = ex.indices + a;
    count = b - a;
}

__device__ __forceinline__ bool contains_sorted(const int64_t* a, int64_t n, int64_t x) {
    int64_t lo = 0;
    int64_t hi = n;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < x) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < n && a[lo] == x;
}

// Per (row, slice) top-k lists in global scratch: entry j of (row, slice) at
// ((row * S + slice) * kk + j); n[row * S + slice] entries are valid.
template <class T>
struct Lists {
    T* s = nullptr;
    int* id = nullptr;
    int* n = nullptr;
    int kk = 0;
    int S = 1;
};

// Selection state of R rows in shared memory.
template <class T, int R, int CAP>
struct SelShared {
    T buf_s[R * CAP];
    int buf_id[R * CAP];
    T thr_s[R];   // the list's worst entry, once full
    int thr_id[R];
    int full[R];  // the list holds kk entries
    int cnt[R];   // buffered candidates (may run past CAP: those did not fit)
    int n[R];     // list entries
    int wpos[R];  // position of the worst entry in the list
};

template <class T, int R, int CAP>
__device__ void sel_init(SelShared<T, R, CAP>& sh) {
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
        sh.thr_s[r] = T(0);
        sh.thr_id[r] = 0;
        sh.full[r] = 0;
        sh.cnt[r] = 0;
        sh.n[r] = 0;
        sh.wpos[r] = 0;
    }
}

// Worth buffering: not NaN, and better than the worst kept entry (if any).
template <class T, int R, int CAP>
__device__ __forceinline__ bool sel_passes(const SelShared<T, R, CAP>& sh, int r, T s, int id) {
    return s == s && (sh.full[r] == 0 || better(s, id, sh.thr_s[r], sh.thr_id[r]));
}

template <class T, int R, int CAP>
__device__ __forceinline__ bool sel_append(SelShared<T, R, CAP>& sh, int r, T s, int id) {
    const int pos = atomicAdd(&sh.cnt[r], 1);
    if (pos >= CAP) return false;
    sh.buf_s[r * CAP + pos] = s;
    sh.buf_id[r * CAP + pos] = id;
    return true;
}

// The worst of the kk entries of a full list, as (score, id, position), the
// same in every lane of the warp.
template <class T>
__device__ void warp_worst(const T* ls, const int* li, int kk, int lane, T& ws, int& wi, int& wp) {
    bool has = false;
    T s0 = T(0);
    int i0 = 0;
    int p0 = 0;
    for (int j = lane; j < kk; j += 32) {
        const T s = ls[j];
        const int i = li[j];
        if (!has || better(s0, i0, s, i)) {
            s0 = s;
            i0 = i;
            p0 = j;
            has = true;
        }
    }
    for (int off = 16; off > 0; off >>= 1) {
        const T os = __shfl_xor_sync(kFullMask, s0, off);
        const int oi = __shfl_xor_sync(kFullMask, i0, off);
        const int op = __shfl_xor_sync(kFullMask, p0, off);
        const int oh = __shfl_xor_sync(kFullMask, has ? 1 : 0, off);
        if (oh != 0 && (!has || better(s0, i0, os, oi))) {
            s0 = os;
            i0 = oi;
            p0 = op;
            has = true;
        }
    }
    ws = s0;
    wi = i0;
    wp = p0;
}

// Moves every buffered candidate of rows [0, rows) into their lists (see the
// top of this file). Called by all threads of the block.
template <class T, int R, int CAP>
__device__ void sel_flush(SelShared<T, R, CAP>& sh, int rows, int64_t row0, const Lists<T>& L,
                          int slice, const Excl& ex) {
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int n_warps = blockDim.x >> 5;
    const int kk = L.kk;
    for (int r = warp; r < rows; r += n_warps) {
        const int m = min(sh.cnt[r], CAP);
        if (m == 0) continue;  // warp-uniform
        const int64_t row = row0 + r;
        const int64_t off = (row * L.S + slice) * int64_t(kk);
        T* ls = L.s + off;
        int* li = L.id + off;
        int n = sh.n[r];
        bool full = sh.full[r] != 0;
        T ts = sh.thr_s[r];
        int ti = sh.thr_id[r];
        int wp = sh.wpos[r];
        const int64_t* eb = nullptr;
        int64_t ec = 0;
        excl_row(ex, row, eb, ec);
        for (int b0 = 0; b0 < m; b0 += 32) {
            const int j = b0 + lane;
            bool have = j < m;
            T s = T(0);
            int id = 0;
            if (have) {
                s = sh.buf_s[r * CAP + j];
                id = sh.buf_id[r * CAP + j];
            }
            // The threshold only rises: what fails now fails later too.
            if (have && full) have = better(s, id, ts, ti);
            if (have && ec > 0) have = !contains_sorted(eb, ec, int64_t(id));
            unsigned todo = __ballot_sync(kFullMask, have);
            while (todo != 0u) {  // warp-uniform; candidates in lane order
                const int l = __ffs(todo) - 1;
                todo &= todo - 1u;
                const T cs = __shfl_sync(kFullMask, s, l);
                const int ci = __shfl_sync(kFullMask, id, l);
                if (!full) {
                    if (lane == 0) {
                        ls[n] = cs;
                        li[n] = ci;
                    }
                    ++n;
                    if (n == kk) {
                        __syncwarp();
                        warp_worst(ls, li, kk, lane, ts, ti, wp);
                        full = true;
                    }
                } else if (better(cs, ci, ts, ti)) {
                    if (lane == 0) {
                        ls[wp] = cs;
                        li[wp] = ci;
                    }
                    __syncwarp();
                    warp_worst(ls, li, kk, lane, ts, ti, wp);
                }
            }
        }
        if (lane == 0) {
            sh.cnt[r] = 0;
            sh.n[r] = n;
            sh.full[r] = full ? 1 : 0;
            sh.thr_s[r] = ts;
            sh.thr_id[r] = ti;
            sh.wpos[r] = wp;
        }
    }
    __syncthreads();
}

// ---------------------------------------------------------------- explicit scores

// Block (row, slice): scans scores[row, c_begin:c_end) 256 columns at a time.
// NaN anywhere (excluded positions included, as on the CPU) is recorded as
// the smallest row-major position in *nan_pos.
template <class T>
__global__ void __launch_bounds__(kThreads)
    topk_rows_kernel(const T* __restrict__ scores, int64_t n_rows, int64_t n_cols, Excl ex,
                     Lists<T> L, int64_t cols_per_slice, unsigned long long* nan_pos) {
    __shared__ SelShared<T, 1, kRowsCap> sh;
    const int slice = blockIdx.y;
    const int64_t c_begin = int64_t(slice) * cols_per_slice;
    const int64_t c_end = min(n_cols, c_begin + cols_per_slice);
    for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        sel_init(sh);
        __syncthreads();
        const T* rp = scores + row * n_cols;
        for (int64_t b = c_begin; b < c_end; b += blockDim.x) {  // block-uniform
            const int64_t c = b + threadIdx.x;
            T s = T(0);
            bool pending = false;
            if (c < c_end) {
                s = rp[c];
                if (s != s) {
                    const int64_t flat = (ex.row_offset + row) * n_cols + c;  // global position
                    atomicMin(nan_pos, static_cast<unsigned long long>(flat));
                } else {
                    pending = sel_passes(sh, 0, s, static_cast<int>(c));
                }
            }
            while (true) {
                bool overflow = false;
                if (pending) {
                    if (sel_append(sh, 0, s, static_cast<int>(c))) {
                        pending = false;
                    } else {
                        overflow = true;
                    }
                }
                if (__syncthreads_or(overflow ? 1 : 0) == 0) break;
                sel_flush(sh, 1, row, L, slice, ex);
                if (pending) pending = sel_passes(sh, 0, s, static_cast<int>(c));
            }
        }
        sel_flush(sh, 1, row, L, slice, ex);
        if (threadIdx.x == 0) L.n[row * L.S + slice] = sh.n[0];
        __syncthreads();
    }
}

// ---------------------------------------------------------------- fused dot

// Row (or column) of a score tile held by thread coordinate t in its slot i.
template <int VEC>
__device__ __forceinline__ int row_of(int t, int i) {
    return (i / VEC) * (16 * VEC) + t * VEC + (i % VEC);
}

// 16 bytes of shared memory (16-byte aligned) into registers.
__device__ __forceinline__ void vload(const float* p, float* o) {
    const float4 x = *reinterpret_cast<const float4*>(p);
    o[0] = x.x;
    o[1] = x.y;
    o[2] = x.z;
    o[3] = x.w;
}
__device__ __forceinline__ void vload(const double* p, double* o) {
    const double2 x = *reinterpret_cast<const double2*>(p);
    o[0] = x.x;
    o[1] = x.y;
}

template <class T>
struct DotCfg;
template <>
struct DotCfg<float> {
    static constexpr int TM = 8, TN = 8, BK = 8, CAP = 32;
};
template <>
struct DotCfg<double> {
    static constexpr int TM = 4, TN = 4, BK = 8, CAP = 32;
};

// Block (query tile of BM rows, item slice): for each item tile of BN items
// in the slice, scores = bias + Q_tile . I_tile^T in registers, then the
// threshold scan and buffered selection.
// MIN_BLOCKS = 2 (the default): two blocks per SM, 128 registers a thread
// (ptxas spills a few bytes); 1: one block per SM without spills. The
// environment variable METAREC_CUDA_TOPK_MIN_BLOCKS=1 selects the latter, so
// that the GPU benchmark can compare both (benchmarks/gpu_bench_topk.py).
template <class T, int MIN_BLOCKS>
__global__ void __launch_bounds__(kThreads, MIN_BLOCKS)
    topk_dot_kernel(const T* __restrict__ Q, int64_t nq, const T* __restrict__ I, int64_t ni,
                    int d, const T* __restrict__ bias, Excl ex, Lists<T> L,
                    int64_t tiles_per_slice) {
    constexpr int TM = DotCfg<T>::TM;
    constexpr int TN = DotCfg<T>::TN;
    constexpr int BK = DotCfg<T>::BK;
    constexpr int CAP = DotCfg<T>::CAP;
    constexpr int BM = 16 * TM;
    constexpr int BN = 16 * TN;
    constexpr int PAD = 4;
    constexpr int A_LOADS = BM * BK / kThreads;
    constexpr int B_LOADS = BN * BK / kThreads;
    static_assert(BM * BK % kThreads == 0 && BN * BK % kThreads == 0, "tile loads");
    static_assert(TM * TN <= 64, "pending mask");
    // Thread (ty, tx) owns rows row_of(ty, i) and columns row_of(tx, j): VEC
    // consecutive ones, then the next VEC 16 * VEC further on, so that each
    // thread reads its a[] / b[] with 16-byte loads and a quarter warp's
    // 16-byte loads of b[] cover 128 consecutive bytes (no bank conflicts).
    constexpr int VEC = 16 / static_cast<int>(sizeof(T));
    static_assert(TM % VEC == 0 && TN % VEC == 0 && (BM + PAD) % VEC == 0, "vector loads");

    // 16-byte rows and offsets: the FMA loop reads them with vector loads.
    __shared__ __align__(16) T As[BK][BM + PAD];
    __shared__ __align__(16) T Bs[BK][BN + PAD];
    __shared__ SelShared<T, BM, CAP> sh;

    const int tid = threadIdx.x;
    const int tx = tid % 16;
    const int ty = tid / 16;
    const int slice = blockIdx.y;
    const int64_t n_itiles = (ni + BN - 1) / BN;
    const int64_t n_qtiles = (nq + BM - 1) / BM;
    const int64_t t_begin = int64_t(slice) * tiles_per_slice;
    const int64_t t_end = min(n_itiles, t_begin + tiles_per_slice);

    for (int64_t qt = blockIdx.x; qt < n_qtiles; qt += gridDim.x) {
        const int64_t q0 = qt * BM;
        const int rows = static_cast<int>(min(int64_t(BM), nq - q0));
        sel_init(sh);
        __syncthreads();
        for (int64_t t = t_begin; t < t_end; ++t) {
            const int64_t i0 = t * BN;
            T acc[TM][TN];
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const int64_t item = i0 + row_of<VEC>(tx, j);
                const T b = (bias != nullptr && item < ni) ? bias[item] : T(0);
#pragma unroll
                for (int i = 0; i < TM; ++i) acc[i][j] = b;
            }
            T ra[A_LOADS];
            T rb[B_LOADS];
            auto load = [&](int k0) {
#pragma unroll
                for (int e = 0; e < A_LOADS; ++e) {
                    const int idx = tid + kThreads * e;
                    const int64_t q = q0 + idx / BK;
                    const int col = k0 + idx % BK;
                    ra[e] = (q < nq && col < d) ? Q[q * d + col] : T(0);
                }
#pragma unroll
                for (int e = 0; e < B_LOADS; ++e) {
                    const int idx = tid + kThreads * e;
                    const int64_t it = i0 + idx / BK;
                    const int col = k0 + idx % BK;
                    rb[e] = (it < ni && col < d) ? I[it * d + col] : T(0);
                }
            };
            if (d > 0) load(0);
            for (int k0 = 0; k0 < d; k0 += BK) {
                __syncthreads();  // everyone is done reading the previous stage
#pragma unroll
                for (int e = 0; e < A_LOADS; ++e) {
                    const int idx = tid + kThreads * e;
                    As[idx % BK][idx / BK] = ra[e];
                }
#pragma unroll
                for (int e = 0; e < B_LOADS; ++e) {
                    const int idx = tid + kThreads * e;
                    Bs[idx % BK][idx / BK] = rb[e];
                }
                __syncthreads();
                if (k0 + BK < d) load(k0 + BK);  // in flight during the FMAs below
                const int kn = min(BK, d - k0);
                if (kn == BK) {
#pragma unroll
                    for (int kk = 0; kk < BK; ++kk) {
                        T a[TM];
                        T b[TN];
#pragma unroll
                        for (int v = 0; v < TM / VEC; ++v) vload(&As[kk][row_of<VEC>(ty, v * VEC)], a + v * VEC);
#pragma unroll
                        for (int v = 0; v < TN / VEC; ++v) vload(&Bs[kk][row_of<VEC>(tx, v * VEC)], b + v * VEC);
#pragma unroll
                        for (int i = 0; i < TM; ++i) {
#pragma unroll
                            for (int j = 0; j < TN; ++j) acc[i][j] = fma_rn(a[i], b[j], acc[i][j]);
                        }
                    }
                } else {
                    // The last, partial stage: exactly d multiply-adds per score.
                    for (int kk = 0; kk < kn; ++kk) {
                        T a[TM];
                        T b[TN];
#pragma unroll
                        for (int v = 0; v < TM / VEC; ++v) vload(&As[kk][row_of<VEC>(ty, v * VEC)], a + v * VEC);
#pragma unroll
                        for (int v = 0; v < TN / VEC; ++v) vload(&Bs[kk][row_of<VEC>(tx, v * VEC)], b + v * VEC);
#pragma unroll
                        for (int i = 0; i < TM; ++i) {
#pragma unroll
                            for (int j = 0; j < TN; ++j) acc[i][j] = fma_rn(a[i], b[j], acc[i][j]);
                        }
                    }
                }
            }

            // Threshold scan: bit i * TN + j set = score (i, j) still to buffer.
            unsigned long long pending = 0ull;
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const int r = row_of<VEC>(ty, i);
                if (r < rows) {
#pragma unroll
                    for (int j = 0; j < TN; ++j) {
                        const int64_t item = i0 + row_of<VEC>(tx, j);
                        if (item < ni && sel_passes(sh, r, acc[i][j], static_cast<int>(item))) {
                            pending |= 1ull << (i * TN + j);
                        }
                    }
                }
            }
            while (true) {  // block-uniform: ends when no buffer overflowed
                bool overflow = false;
                if (pending != 0ull) {
#pragma unroll
                    for (int i = 0; i < TM; ++i) {
#pragma unroll
                        for (int j = 0; j < TN; ++j) {
                            const unsigned long long bit = 1ull << (i * TN + j);
                            if (pending & bit) {
                                const int item = static_cast<int>(i0 + row_of<VEC>(tx, j));
                                if (sel_append(sh, row_of<VEC>(ty, i), acc[i][j], item)) {
                                    pending &= ~bit;
                                } else {
                                    overflow = true;
                                }
                            }
                        }
                    }
                }
                if (__syncthreads_or(overflow ? 1 : 0) == 0) break;
                sel_flush(sh, rows, q0, L, slice, ex);
                if (pending != 0ull) {
#pragma unroll
                    for (int i = 0; i < TM; ++i) {
#pragma unroll
                        for (int j = 0; j < TN; ++j) {
                            const unsigned long long bit = 1ull << (i * TN + j);
                            const int item = static_cast<int>(i0 + row_of<VEC>(tx, j));
                            if ((pending & bit) && !sel_passes(sh, row_of<VEC>(ty, i), acc[i][j], item)) {
                                pending &= ~bit;
                            }
                        }
                    }
                }
            }
        }
        sel_flush(sh, rows, q0, L, slice, ex);
        for (int r = tid; r < rows; r += kThreads) L.n[(q0 + r) * L.S + slice] = sh.n[r];
        __syncthreads();
    }
}

// ---------------------------------------------------------------- merge + pad

// Per row: the S slice lists (S * kk <= P <= kSortCap entries, P a power of 2)
// sorted best first; the first kk written, the rest of k padded.
template <class T>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(const T* __restrict__ ls, const int* __restrict__ li, const int* __restrict__ ln,
                 int64_t n_rows, int S, int kk, int P, int64_t k, int64_t* __restrict__ out_ids,
                 float* __restrict__ out_scores) {
    __shared__ T ks[kSortCap];
    __shared__ int ki[kSortCap];
    for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        for (int e = threadIdx.x; e < P; e += blockDim.x) {
            T s = neg_inf<T>();
            int id = kSentinelId;
            const int sl = e / kk;
            const int j = e % kk;
            if (sl < S) {
                const int64_t at = row * S + sl;
                if (j < ln[at]) {
                    s = ls[at * kk + j];
                    id = li[at * kk + j];
                }
            }
            ks[e] = s;
            ki[e] = id;
        }
        __syncthreads();
        for (int size = 2; size <= P; size <<= 1) {
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                for (int i = threadIdx.x; i < P; i += blockDim.x) {
                    const int j = i ^ stride;
                    if (j > i) {
                        const bool better_first = (i & size) == 0;
                        if (better(ks[j], ki[j], ks[i], ki[i]) == better_first) {
                            const T ts = ks[i];
                            ks[i] = ks[j];
                            ks[j] = ts;
                            const int tiv = ki[i];
                            ki[i] = ki[j];
                            ki[j] = tiv;
                        }
                    }
                }
                __syncthreads();
            }
        }
        for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
            int64_t id = -1;
            float v = -INFINITY;
            if (j < kk && ki[j] != kSentinelId) {
                id = ki[j];
                v = static_cast<float>(ks[j]);
            }
            out_ids[row * k + j] = id;
            out_scores[row * k + j] = v;
        }
        __syncthreads();  // before the next row overwrites ks / ki
    }
}

__global__ void pad_kernel(int64_t* __restrict__ ids, float* __restrict__ scores, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += int64_t(gridDim.x) * blockDim.x) {
        ids[i] = -1;
        scores[i] = -INFINITY;
    }
}

// ---------------------------------------------------------------- host side

constexpr int64_t kMaxGridX = int64_t(1) << 30;

int grid_x(int64_t blocks) { return static_cast<int>(std::max<int64_t>(1, std::min(blocks, kMaxGridX))); }

int next_pow2(int64_t x) {
    int p = 1;
    while (p < x) p <<= 1;
    return p;
}

int sm_count(int device) {
    int sms = 0;
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
          "cudaDeviceGetAttribute");
    return std::max(1, sms);
}

void pad_all(int64_t* out_ids, float* out_scores, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    const int64_t blocks = std::min<int64_t>(ceil_div(n, kThreads), 4096);
    METAREC_CUDA_LAUNCH(pad_kernel, static_cast<unsigned>(blocks), kThreads, stream, out_ids, out_scores,
                        n);
    check_launch("pad_kernel");
}

void check_shape(int64_t n_rows, int64_t n_cols, int64_t k, const char* cols_name) {
    if (n_rows < 0 || n_cols < 0) throw std::invalid_argument("topk: negative shape");
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
    if (n_cols >= INT_MAX) {
        throw std::invalid_argument(std::string("the CUDA top-k supports fewer than 2^31 - 1 ") +
                                    cols_name + ", got " + std::to_string(n_cols));
    }
    const int64_t kk = std::min(k, n_cols);
    if (kk > kTopkMaxK) {
        throw std::invalid_argument("k=" + std::to_string(k) + " exceeds the CUDA top-k limit of " +
                                    std::to_string(kTopkMaxK) + " " + cols_name +
                                    " per row; use device='cpu' for larger k");
    }
}

// Slices per row and the rows handled per launch group, so that the lists
// take at most kScratchBytes. `units` = column units (tiles) a slice is made of.
struct Plan {
    int S = 1;
    int64_t units_per_slice = 1;
    int64_t rows_per_group = 1;
};

Plan make_plan(int64_t row_blocks, int64_t rows_per_block, int64_t units, int64_t kk,
               std::size_t entry_bytes, int sms, int forced) {
    Plan p;
    const int64_t max_s = std::max<int64_t>(1, std::min<int64_t>(kSortCap / kk, units));
    int64_t s = 1;
    if (forced > 0) {
        s = forced;
    } else {
        const int64_t target = 4 * int64_t(sms);  // a few blocks per SM
        s = (target + row_blocks - 1) / row_blocks;
    }
    s = std::max<int64_t>(1, std::min(s, max_s));
    p.units_per_slice = (units + s - 1) / s;
    p.S = static_cast<int>((units + p.units_per_slice - 1) / p.units_per_slice);
    const int64_t per_row = int64_t(p.S) * kk * int64_t(entry_bytes) + int64_t(p.S) * 4;
    int64_t rows = std::max<int64_t>(1, kScratchBytes / per_row);
    rows = std::max<int64_t>(rows_per_block, rows / rows_per_block * rows_per_block);
    p.rows_per_group = rows;
    return p;
}

template <class T>
void merge(const Lists<T>& L, int64_t n_rows, int64_t k, int64_t* out_ids, float* out_scores,
           cudaStream_t stream) {
    const int P = next_pow2(int64_t(L.S) * L.kk);
    METAREC_CUDA_LAUNCH(merge_kernel<T>, grid_x(n_rows), kThreads, stream, L.s, L.id, L.n, n_rows, L.S,
                        L.kk, P, k, out_ids, out_scores);
    check_launch("topk merge_kernel");
}

}  // namespace

template <class T>
void topk(const T* scores, int64_t n_rows, int64_t n_cols, int64_t k, const int64_t* ex_indptr,
          const int64_t* ex_indices, int64_t nnz, int64_t* out_ids, float* out_scores,
          cudaStream_t stream, int device, int slices) {
    check_shape(n_rows, n_cols, k, "columns");
    if (n_rows == 0) return;
    DeviceGuard guard(device);
    if (n_cols == 0) return pad_all(out_ids, out_scores, n_rows * k, stream);
    const int64_t kk = std::min(k, n_cols);
    const int64_t units = ceil_div(n_cols, kRowsCap);
    const Plan plan = make_plan(n_rows, 1, units, kk, sizeof(T) + sizeof(int), sm_count(device),
                                slices);
    const int64_t cols_per_slice = plan.units_per_slice * kRowsCap;
    const int64_t group = std::min(n_rows, plan.rows_per_group);
    const int64_t list_entries = group * plan.S * kk;
    DeviceBuffer ls(static_cast<std::size_t>(list_entries) * sizeof(T), stream);
    DeviceBuffer li(static_cast<std::size_t>(list_entries) * sizeof(int), stream);
    DeviceBuffer ln(static_cast<std::size_t>(group * plan.S) * sizeof(int), stream);
    DeviceBuffer nan_pos(sizeof(unsigned long long), stream);
    check(cudaMemsetAsync(nan_pos.as<void>(), 0xff, sizeof(unsigned long long), stream),
          "cudaMemsetAsync");
    Lists<T> L;
    L.s = ls.as<T>();
    L.id = li.as<int>();
    L.n = ln.as<int>();
    L.kk = static_cast<int>(kk);
    L.S = plan.S;
    for (int64_t r0 = 0; r0 < n_rows; r0 += group) {
        const int64_t rows = std::min(group, n_rows - r0);
        Excl ex;
        ex.indptr = ex_indptr;
        ex.indices = ex_indices;
        ex.nnz = nnz;
        ex.row_offset = r0;
        const dim3 grid(grid_x(rows), static_cast<unsigned>(plan.S));
        METAREC_CUDA_LAUNCH(topk_rows_kernel<T>, grid, kThreads, stream, scores + r0 * n_cols, rows, n_cols,
                            ex, L, cols_per_slice, nan_pos.as<unsigned long long>());
        check_launch("topk_rows_kernel");
        merge<T>(L, rows, k, out_ids + r0 * k, out_scores + r0 * k, stream);
    }
    // The first NaN (row-major), over every launch group: read it back.
    unsigned long long first = 0;
    check(cudaMemcpyAsync(&first, nan_pos.as<void>(), sizeof(first), cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    if (first != ~0ull) {
        throw std::invalid_argument("scores contains NaN at index (" +
                                    std::to_string(first / static_cast<unsigned long long>(n_cols)) +
                                    ", " +
                                    std::to_string(first % static_cast<unsigned long long>(n_cols)) +
                                    ")");
    }
}

template <class T>
void topk_dot(const T* queries, int64_t nq, const T* items, int64_t ni, int64_t d, const T* bias,
              int64_t k, const int64_t* ex_indptr, const int64_t* ex_indices, int64_t nnz,
              int64_t* out_ids, float* out_scores, cudaStream_t stream, int device, int slices) {
    check_shape(nq, ni, k, "items");
    if (d < 0) throw std::invalid_argument("topk_dot: negative d");
    if (d >= INT_MAX) throw std::invalid_argument("topk_dot: d must be below 2^31 - 1");
    if (nq == 0) return;
    DeviceGuard guard(device);
    if (ni == 0) return pad_all(out_ids, out_scores, nq * k, stream);
    constexpr int BM = 16 * DotCfg<T>::TM;
    constexpr int BN = 16 * DotCfg<T>::TN;
    const int64_t kk = std::min(k, ni);
    const int64_t n_itiles = ceil_div(ni, BN);
    const Plan plan = make_plan(ceil_div(nq, BM), BM, n_itiles, kk, sizeof(T) + sizeof(int),
                                sm_count(device), slices);
    const int64_t group = std::min(nq, plan.rows_per_group);
    const int64_t list_entries = group * plan.S * kk;
    DeviceBuffer ls(static_cast<std::size_t>(list_entries) * sizeof(T), stream);
    DeviceBuffer li(static_cast<std::size_t>(list_entries) * sizeof(int), stream);
    DeviceBuffer ln(static_cast<std::size_t>(group * plan.S) * sizeof(int), stream);
    Lists<T> L;
    L.s = ls.as<T>();
    L.id = li.as<int>();
    L.n = ln.as<int>();
    L.kk = static_cast<int>(kk);
    L.S = plan.S;
    const char* min_blocks = std::getenv("METAREC_CUDA_TOPK_MIN_BLOCKS");
    const bool one_block_per_sm = min_blocks != nullptr && std::string(min_blocks) == "1";
    for (int64_t q0 = 0; q0 < nq; q0 += group) {
        const int64_t rows = std::min(group, nq - q0);
        Excl ex;
        ex.indptr = ex_indptr;
        ex.indices = ex_indices;
        ex.nnz = nnz;
        ex.row_offset = q0;
        const dim3 grid(grid_x(ceil_div(rows, BM)), static_cast<unsigned>(plan.S));
        if (one_block_per_sm) {
            METAREC_CUDA_LAUNCH((topk_dot_kernel<T, 1>), grid, kThreads, stream, queries + q0 * d, rows,
                                items, ni, static_cast<int>(d), bias, ex, L, plan.units_per_slice);
        } else {
            METAREC_CUDA_LAUNCH((topk_dot_kernel<T, 2>), grid, kThreads, stream, queries + q0 * d, rows,
                                items, ni, static_cast<int>(d), bias, ex, L, plan.units_per_slice);
        }
        check_launch("topk_dot_kernel");
        merge<T>(L, rows, k, out_ids + q0 * k, out_scores + q0 * k, stream);
    }
}

#define METAREC_CUDA_TOPK_INSTANTIATE(T)                                                          \
    template void topk<T>(const T*, int64_t, int64_t, int64_t, const int64_t*, const int64_t*,    \
                          int64_t, int64_t*, float*, cudaStream_t, int, int);                      \
    template void topk_dot<T>(const T*, int64_t, const T*, int64_t, int64_t, const T*, int64_t,   \
                              const int64_t*, const int64_t*, int64_t, int64_t*, float*,          \
                              cudaStream_t, int, int);
METAREC_CUDA_TOPK_INSTANTIATE(float)
METAREC_CUDA_TOPK_INSTANTIATE(double)
#undef METAREC_CUDA_TOPK_INSTANTIATE

}  // namespace cuda
}  // namespace metarec
