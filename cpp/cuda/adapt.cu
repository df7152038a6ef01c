// CUDA twin of the batched linear-head inner loop (see adapt.h and, for the
// mathematics, cpp/src/adapt_kernel_impl.h, which this file mirrors step by
// step).
//
// Layout of the work:
//
// * One warp per user (grid-stride loop over users). Lane l owns the elements
//   k = l, l + 32, l + 64, ... of every d-vector of its user (theta_t, the
//   inner gradient, the adjoint v, w = alpha v, ...), so no element is ever
//   shared between threads: there is no shared memory and no __syncthreads in
//   the per-user kernels, only warp shuffles for the dot products
//   (xor-butterfly sums, whose result is bitwise identical in every lane, so
//   all per-user scalars stay warp-uniform and every loop bound and branch
//   around a shuffle is the same for all 32 lanes). The bias element of theta
//   is a warp-uniform scalar; lane 0 writes it.
// * For d <= 256 a lane's elements live in registers (R = 1, 2, 4 or 8 slots
//   per lane, a compile-time count); for larger d they live in a per-warp
//   slice of global scratch (R = 0), same code through Slots<T, R>.
// * Reductions across users (shared theta_0, alpha) are column sums in a
//   fixed order (column_sums). Body gradients: the per-entry contributions
//   (support entries: written by the per-user backward; query entries:
//   g_q * p_T of their user) are grouped by item with a stable radix sort of
//   the item ids (CUB), and one warp per item sums its entries in entry
//   order, exactly the CPU kernel's order. No floating-point atomics anywhere.
#include "adapt.h"

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace metarec {
namespace cuda {

namespace {

using i64 = std::int64_t;
using u64 = unsigned long long;

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kBlock = kWarp * kWarpsPerBlock;
constexpr unsigned kFullMask = 0xffffffffu;
// Largest d whose per-lane state is kept in registers (8 slots per lane).
constexpr i64 kMaxRegisterD = 8 * kWarp;

// ---------------------------------------------------------------- device helpers

// Sum over the warp. Every lane ends with the same bits: at each butterfly
// stage lane i computes x_i + x_{i^m} and its partner x_{i^m} + x_i, equal
// because floating-point addition is commutative.
template <class T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
    for (int m = kWarp / 2; m >= 1; m >>= 1) x += __shfl_xor_sync(kFullMask, x, m);
    return x;
}

#include "metarec/adapt_loss.h"

// A d-vector of one user, seen from one lane: slot r holds element
// k = lane + 32 r (only meaningful for k < d). R > 0: registers, R == 0: a
// lane-strided slice of global scratch (bind() before use).
template <class T, int R>
struct Slots {
    T x[R] = {};
    __device__ __forceinline__ void bind(T*) {}
    __device__ __forceinline__ T& operator[](int r) { return x[r]; }
};
template <class T>
struct Slots<T, 0> {
    T* p = nullptr;  // this lane's element of slot 0
    __device__ __forceinline__ void bind(T* lane_base) { p = lane_base; }
    __device__ __forceinline__ T& operator[](int r) { return p[static_cast<i64>(r) * kWarp]; }
};

// One item row h of H as seen by one lane: R > 0 loads its slots once
// (zeros past d), R == 0 reads global memory on each use (callers only ask
// for k < d).
template <class T, int R>
struct HRow {
    T x[R] = {};
    __device__ __forceinline__ void load(const T* h, int lane, i64 d) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const i64 k = lane + static_cast<i64>(r) * kWarp;
            x[r] = k < d ? h[k] : T(0);
        }
    }
    __device__ __forceinline__ T operator()(int r) const { return x[r]; }
};
template <class T>
struct HRow<T, 0> {
    const T* h = nullptr;
    __device__ __forceinline__ void load(const T* row, int lane, i64) { h = row + lane; }
    __device__ __forceinline__ T operator()(int r) const { return h[static_cast<i64>(r) * kWarp]; }
};

// Number of slots per lane: R, or ceil(d / 32) for the scratch variant.
template <int R>
__device__ __forceinline__ int slot_count(i64 d) {
    return R > 0 ? R : static_cast<int>((d + kWarp - 1) / kWarp);
}

// Number of d-vectors per warp in the scratch variant (R == 0).
constexpr int kForwardVectors = 2;   // cur, gp
constexpr int kBackwardVectors = 6;  // cur, v, w, hw, gp, ga

// ---------------------------------------------------------------- forward

template <class T, int R>
__global__ void __launch_bounds__(kBlock)
    forward_kernel(const LinearHeadBatch<T> bt, T* __restrict__ trajectory, T* __restrict__ query_pred,
                   T* __restrict__ scratch) {
    const int lane = static_cast<int>(threadIdx.x) & (kWarp - 1);
    const i64 warp = (static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
    const i64 n_warps = static_cast<i64>(gridDim.x) * blockDim.x / kWarp;
    const i64 d = bt.d, width = d + 1, stride = (static_cast<i64>(bt.steps) + 1) * width;
    const int ns = slot_count<R>(d);
    const T l2 = bt.l2;
    const T alpha0 = bt.alpha_p[0];
    const T* __restrict__ H = bt.H;

    Slots<T, R> cur, gp;
    if (R == 0) {
        const i64 dpad = static_cast<i64>(ns) * kWarp;
        T* base = scratch + warp * kForwardVectors * dpad + lane;
        cur.bind(base);
        gp.bind(base + dpad);
    }
    HRow<T, R> h;

    for (i64 u = warp; u < bt.n_users; u += n_warps) {  // warp-uniform
        T* traj = trajectory + u * stride;
        const i64 src = bt.per_user_theta0 ? u : 0;
        const T* p0 = bt.p0 + src * d;
#pragma unroll
        for (int r = 0; r < ns; ++r) {
            const i64 k = lane + static_cast<i64>(r) * kWarp;
            if (k < d) {
                cur[r] = p0[k];
                traj[k] = cur[r];
            }
        }
        T cur_b = bt.b0[src];
        if (lane == 0) traj[d] = cur_b;
        const i64 s0 = bt.support_indptr[u], s1 = bt.support_indptr[u + 1];
        const T inv_n = s1 > s0 ? T(1) / T(s1 - s0) : T(0);

        for (int t = 0; t < bt.steps; ++t) {
#pragma unroll
            for (int r = 0; r < ns; ++r) gp[r] = T(0);
            T gb = 0;
            for (i64 j = s0; j < s1; ++j) {
                const i64 item = bt.support_items[j];
                h.load(H + item * d, lane, d);
                T part = 0;
#pragma unroll
                for (int r = 0; r < ns; ++r) {
                    if (lane + static_cast<i64>(r) * kWarp < d) part += cur[r] * h(r);
                }
                const T f = warp_sum(part) + cur_b + bt.c[item];
                T d1, d2;
                loss_derivatives(bt.loss, f, bt.support_targets[j], d1, d2);
                const T lin = inv_n * d1;
#pragma unroll
                for (int r = 0; r < ns; ++r) {
                    if (lane + static_cast<i64>(r) * kWarp < d) gp[r] += lin * h(r);
                }
                gb += lin;
            }
            T* nxt = traj + (t + 1) * width;
#pragma unroll
            for (int r = 0; r < ns; ++r) {
                const i64 k = lane + static_cast<i64>(r) * kWarp;
                if (k < d) {
                    const T a = bt.alpha_per_parameter ? bt.alpha_p[k] : alpha0;
                    cur[r] = cur[r] - a * (gp[r] + l2 * cur[r]);
                    nxt[k] = cur[r];
                }
            }
            cur_b = cur_b - bt.alpha_b * gb;
            if (lane == 0) nxt[d] = cur_b;
        }

        for (i64 j = bt.query_indptr[u]; j < bt.query_indptr[u + 1]; ++j) {
            const i64 item = bt.query_items[j];
            h.load(H + item * d, lane, d);
            T part = 0;
#pragma unroll
            for (int r = 0; r < ns; ++r) {
                if (lane + static_cast<i64>(r) * kWarp < d) part += cur[r] * h(r);
            }
            const T f = warp_sum(part) + cur_b + bt.c[item];
            if (lane == 0) query_pred[j] = f;
        }
    }
}

// ---------------------------------------------------------------- backward, per user

// Where the per-user backward writes: the adjoint of theta_0 (v) as p rows
// (stride vp_stride) and b entries (stride vb_stride), the alpha
// contributions, the support entries' body gradients and each query entry's
// user.
template <class T>
struct UserOutputs {
    T* vp = nullptr;
    i64 vp_stride = 0;
    T* vb = nullptr;
    i64 vb_stride = 0;
    T* user_alpha = nullptr;  // [n_users, d + 1] when alpha_grad
    T* entry_h = nullptr;     // [nnz_support, d] when second
    T* entry_c = nullptr;     // [nnz_support] when second
    i64* q_user = nullptr;    // [nnz_query]
};

template <class T, int R>
__global__ void __launch_bounds__(kBlock)
    backward_users_kernel(const LinearHeadBatch<T> bt, const T* __restrict__ trajectory,
                          const T* __restrict__ grad_query_pred, bool second, bool alpha_grad,
                          UserOutputs<T> out, T* __restrict__ scratch) {
    const int lane = static_cast<int>(threadIdx.x) & (kWarp - 1);
    const i64 warp = (static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
    const i64 n_warps = static_cast<i64>(gridDim.x) * blockDim.x / kWarp;
    const i64 d = bt.d, width = d + 1, stride = (static_cast<i64>(bt.steps) + 1) * width;
    const int ns = slot_count<R>(d);
    const T l2 = bt.l2;
    const T alpha0 = bt.alpha_p[0];
    const T* __restrict__ H = bt.H;

    Slots<T, R> cur, v, w, hw, gp, ga;
    if (R == 0) {
        const i64 dpad = static_cast<i64>(ns) * kWarp;
        T* base = scratch + warp * kBackwardVectors * dpad + lane;
        cur.bind(base);
        v.bind(base + dpad);
        w.bind(base + 2 * dpad);
        hw.bind(base + 3 * dpad);
        gp.bind(base + 4 * dpad);
        ga.bind(base + 5 * dpad);
    }
    HRow<T, R> h;

    for (i64 u = warp; u < bt.n_users; u += n_warps) {  // warp-uniform
        const T* traj = trajectory + u * stride;
        // v = d(sum_q g_q f_q) / d theta_T.
#pragma unroll
        for (int r = 0; r < ns; ++r) {
            v[r] = T(0);
            ga[r] = T(0);
        }
        T vb = 0, gab = 0;
        const i64 q0 = bt.query_indptr[u], q1 = bt.query_indptr[u + 1];
        for (i64 j = q0; j < q1; ++j) {
            const T g = grad_query_pred[j];
            h.load(H + bt.query_items[j] * d, lane, d);
#pragma unroll
            for (int r = 0; r < ns; ++r) {
                if (lane + static_cast<i64>(r) * kWarp < d) v[r] += g * h(r);
            }
            vb += g;
        }
        for (i64 j = q0 + lane; j < q1; j += kWarp) out.q_user[j] = u;

        if (second || alpha_grad) {
            const i64 s0 = bt.support_indptr[u], s1 = bt.support_indptr[u + 1];
            const T inv_n = s1 > s0 ? T(1) / T(s1 - s0) : T(0);
            for (int t = bt.steps - 1; t >= 0; --t) {
                const T* cr = traj + t * width;
#pragma unroll
                for (int r = 0; r < ns; ++r) {
                    const i64 k = lane + static_cast<i64>(r) * kWarp;
                    if (k < d) cur[r] = cr[k];
                }
                const T cur_b = cr[d];
                T wb = 0;
                if (second) {
#pragma unroll
                    for (int r = 0; r < ns; ++r) {
                        const i64 k = lane + static_cast<i64>(r) * kWarp;
                        if (k < d) {
                            const T a = bt.alpha_per_parameter ? bt.alpha_p[k] : alpha0;
                            w[r] = a * v[r];
                            hw[r] = l2 * w[r];
                        }
                    }
                    wb = bt.alpha_b * vb;
                }
                if (alpha_grad) {
#pragma unroll
                    for (int r = 0; r < ns; ++r) {
                        if (lane + static_cast<i64>(r) * kWarp < d) gp[r] = l2 * cur[r];
                    }
                }
                const bool first = t == bt.steps - 1;
                T hwb = 0, gb = 0;
                for (i64 j = s0; j < s1; ++j) {
                    const i64 item = bt.support_items[j];
                    h.load(H + item * d, lane, d);
                    T pf = 0, ps = 0;
#pragma unroll
                    for (int r = 0; r < ns; ++r) {
                        if (lane + static_cast<i64>(r) * kWarp < d) {
                            pf += cur[r] * h(r);
                            if (second) ps += w[r] * h(r);
                        }
                    }
                    T f = warp_sum(pf);
                    const T s = second ? warp_sum(ps) : T(0);  // `second` is warp-uniform
                    f += cur_b + bt.c[item];
                    T d1, d2;
                    loss_derivatives(bt.loss, f, bt.support_targets[j], d1, d2);
                    const T lin = inv_n * d1;
                    gb += lin;
                    if (!second) {
#pragma unroll
                        for (int r = 0; r < ns; ++r) {
                            if (lane + static_cast<i64>(r) * kWarp < d) gp[r] += lin * h(r);
                        }
                        continue;
                    }
                    const T coef = inv_n * d2 * (s + wb);
                    T* eh = out.entry_h + j * d;
#pragma unroll
                    for (int r = 0; r < ns; ++r) {
                        const i64 k = lane + static_cast<i64>(r) * kWarp;
                        if (k < d) {
                            const T hk = h(r);
                            hw[r] += coef * hk;
                            if (alpha_grad) gp[r] += lin * hk;
                            const T e = coef * cur[r] + lin * w[r];
                            if (first) {
                                eh[k] = -e;
                            } else {
                                eh[k] -= e;
                            }
                        }
                    }
                    if (lane == 0) {
                        if (first) {
                            out.entry_c[j] = -coef;
                        } else {
                            out.entry_c[j] -= coef;
                        }
                    }
                    hwb += coef;
                }
                if (alpha_grad) {
                    // d theta_{t+1} / d alpha = -g(theta_t), with the adjoint of theta_{t+1}.
#pragma unroll
                    for (int r = 0; r < ns; ++r) {
                        if (lane + static_cast<i64>(r) * kWarp < d) ga[r] -= v[r] * gp[r];
                    }
                    gab -= vb * gb;
                }
                if (second) {
#pragma unroll
                    for (int r = 0; r < ns; ++r) {
                        if (lane + static_cast<i64>(r) * kWarp < d) v[r] -= hw[r];
                    }
                    vb -= hwb;
                }
            }
        }

        T* vp = out.vp + u * out.vp_stride;
#pragma unroll
        for (int r = 0; r < ns; ++r) {
            const i64 k = lane + static_cast<i64>(r) * kWarp;
            if (k < d) vp[k] = v[r];
        }
        if (lane == 0) out.vb[u * out.vb_stride] = vb;
        if (alpha_grad) {
            T* ua = out.user_alpha + u * width;
#pragma unroll
            for (int r = 0; r < ns; ++r) {
                const i64 k = lane + static_cast<i64>(r) * kWarp;
                if (k < d) ua[k] = ga[r];
            }
            if (lane == 0) ua[d] = gab;
        }
    }
}

// ---------------------------------------------------------------- reductions

// out[col] = sum_r in[r, col] in a fixed order: thread (x, y) of a 32 x 32
// block sums rows y, y + 32, ... of column 32 * blockIdx.x + x, then thread
// (x, 0) adds the 32 partial sums in order y = 0..31.
constexpr int kColTile = 32;
template <class T>
__global__ void __launch_bounds__(kColTile * kColTile)
    column_sums_kernel(const T* __restrict__ in, i64 n_rows, i64 width, T* __restrict__ out) {
    __shared__ T part[kColTile][kColTile + 1];
    const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
    const i64 col = static_cast<i64>(blockIdx.x) * kColTile + tx;
    T acc = 0;
    if (col < width) {
        for (i64 r = ty; r < n_rows; r += kColTile) acc += in[r * width + col];
    }
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && col < width) {
        T s = 0;
        for (int y = 0; y < kColTile; ++y) s += part[y][tx];
        out[col] = s;
    }
}

// Scatters the column sums into the gradient outputs (one block).
// theta_sum == nullptr: theta_0 is per user (already written); alpha_sum ==
// nullptr: no alpha gradient (zeros).
template <class T>
__global__ void finalize_kernel(const T* __restrict__ theta_sum, const T* __restrict__ alpha_sum, i64 d,
                                bool alpha_per_parameter, T* __restrict__ p0, T* __restrict__ b0,
                                T* __restrict__ alpha_p, T* __restrict__ alpha_b) {
    for (i64 k = threadIdx.x; k < d; k += blockDim.x) {
        if (theta_sum != nullptr) p0[k] = theta_sum[k];
        if (alpha_per_parameter) alpha_p[k] = alpha_sum != nullptr ? alpha_sum[k] : T(0);
    }
    if (threadIdx.x == 0) {
        if (theta_sum != nullptr) b0[0] = theta_sum[d];
        if (!alpha_per_parameter) {
            T s = 0;
            if (alpha_sum != nullptr) {
                for (i64 k = 0; k < d; ++k) s += alpha_sum[k];
            }
            alpha_p[0] = s;
        }
        alpha_b[0] = alpha_sum != nullptr ? alpha_sum[d] : T(0);
    }
}

__global__ void iota_kernel(i64* __restrict__ out, i64 n) {
    const i64 stride = static_cast<i64>(gridDim.x) * blockDim.x;
    for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = i;
}

// First position in sorted keys[0, n) whose key is >= x.
__device__ __forceinline__ i64 lower_bound(const u64* __restrict__ keys, i64 n, u64 x) {
    i64 lo = 0, hi = n;
    while (lo < hi) {
        const i64 mid = lo + (hi - lo) / 2;
        if (keys[mid] < x) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// One warp per item: H/c gradient rows as the sum of the item's entries in
// entry order (support entries j < n_support_entries: entry_h / entry_c;
// query entries: g_q * p_T of their user, and g_q). Writes every item's row,
// zeros for items without entries.
template <class T>
__global__ void __launch_bounds__(kBlock)
    item_grads_kernel(const u64* __restrict__ keys, const i64* __restrict__ order, i64 n_entries,
                      i64 n_support_entries, const T* __restrict__ entry_h, const T* __restrict__ entry_c,
                      const T* __restrict__ grad_query_pred, const i64* __restrict__ q_user,
                      const T* __restrict__ trajectory, i64 stride, i64 last_offset, i64 n_items, i64 d,
                      T* __restrict__ gH, T* __restrict__ gc) {
    const int lane = static_cast<int>(threadIdx.x) & (kWarp - 1);
    const i64 warp = (static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
    const i64 n_warps = static_cast<i64>(gridDim.x) * blockDim.x / kWarp;
    for (i64 i = warp; i < n_items; i += n_warps) {
        const i64 lo = lower_bound(keys, n_entries, static_cast<u64>(i));
        const i64 hi = lower_bound(keys, n_entries, static_cast<u64>(i) + 1);
        for (i64 k = lane; k < d; k += kWarp) {
            T acc = 0;
            for (i64 e = lo; e < hi; ++e) {
                const i64 idx = order[e];
                if (idx < n_support_entries) {
                    acc += entry_h[idx * d + k];
                } else {
                    const i64 q = idx - n_support_entries;
                    acc += grad_query_pred[q] * trajectory[q_user[q] * stride + last_offset + k];
                }
            }
            gH[i * d + k] = acc;
        }
        if (lane == 0) {
            T acc = 0;
            for (i64 e = lo; e < hi; ++e) {
                const i64 idx = order[e];
                acc += idx < n_support_entries ? entry_c[idx] : grad_query_pred[idx - n_support_entries];
            }
            gc[i] = acc;
        }
    }
}

// ---------------------------------------------------------------- validation

// Status slots of one CSR (u64, initialised to all ones, lowered by atomicMin):
enum CsrSlot { kStart = 0, kDecrease = 1, kEnd = 2, kBadItem = 3, kLast = 4, kCsrSlots = 5 };

__global__ void validate_csr_kernel(const i64* __restrict__ indptr, i64 n_rows,
                                    const i64* __restrict__ items, i64 nnz, i64 n_items,
                                    u64* __restrict__ status) {
    const i64 tid = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
    const i64 n_threads = static_cast<i64>(gridDim.x) * blockDim.x;
    if (tid == 0) {
        if (indptr[0] != 0) atomicMin(&status[kStart], 0ull);
        const i64 last = indptr[n_rows];
        status[kLast] = static_cast<u64>(last);
        if (last != nnz) atomicMin(&status[kEnd], 0ull);
    }
    for (i64 u = tid; u < n_rows; u += n_threads) {
        if (indptr[u + 1] < indptr[u]) atomicMin(&status[kDecrease], static_cast<u64>(u));
    }
    for (i64 j = tid; j < nnz; j += n_threads) {
        const i64 item = items[j];
        if (item < 0 || item >= n_items) atomicMin(&status[kBadItem], static_cast<u64>(j));
    }
}

constexpr u64 kNone = ~0ull;

int grid_for(i64 n, int block, i64 cap) {
    return static_cast<int>(std::max<i64>(1, std::min<i64>(ceil_div(std::max<i64>(n, 1), block), cap)));
}

int sm_count(int device) {
    int n = 0;
    check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    return std::max(n, 1);
}

// Carves aligned sub-buffers out of one allocation (one cudaMallocAsync per call).
class Carver {
public:
    template <class U>
    std::size_t reserve(i64 count) {
        const std::size_t offset = size_;
        size_ += round_up(static_cast<std::size_t>(std::max<i64>(count, 0)) * sizeof(U));
        return offset;
    }
    std::size_t reserve_bytes(std::size_t bytes) {
        const std::size_t offset = size_;
        size_ += round_up(bytes);
        return offset;
    }
    std::size_t size() const { return size_; }
    template <class U>
    static U* at(const DeviceBuffer& buf, std::size_t offset) {
        return reinterpret_cast<U*>(buf.as<char>() + offset);
    }

private:
    static std::size_t round_up(std::size_t b) { return (b + 255) / 256 * 256; }
    std::size_t size_ = 0;
};

// Host-side checks of the batch's sizes (the device arrays are checked by
// validate_on_device).
template <class T>
void check_sizes(const LinearHeadBatch<T>& bt, i64 nnz_s, i64 nnz_q) {
    if (bt.d < 1) throw std::invalid_argument("d must be >= 1, got " + std::to_string(bt.d));
    if (bt.n_items < 0 || bt.n_users < 0 || nnz_s < 0 || nnz_q < 0) {
        throw std::invalid_argument("negative sizes");
    }
    if (bt.steps < 0) throw std::invalid_argument("steps must be >= 0, got " + std::to_string(bt.steps));
}

void raise_csr_error(const u64* st, const char* name, const i64* items, i64 nnz, i64 n_items,
                     cudaStream_t stream) {
    const std::string side(name);
    if (st[kStart] != kNone) throw std::invalid_argument(side + " indptr must start at 0");
    if (st[kDecrease] != kNone) {
        throw std::invalid_argument(side + " indptr decreases at row " + std::to_string(st[kDecrease]));
    }
    if (st[kEnd] != kNone) {
        throw std::invalid_argument(side + " indptr ends at " +
                                    std::to_string(static_cast<i64>(st[kLast])) + " but there are " +
                                    std::to_string(nnz) + " " + side + " items");
    }
    if (st[kBadItem] != kNone) {
        i64 id = 0;
        check(cudaMemcpyAsync(&id, items + st[kBadItem], sizeof(id), cudaMemcpyDeviceToHost, stream),
              "cudaMemcpyAsync");
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        throw std::out_of_range(side + " items contains id " + std::to_string(id) + ", outside [0, " +
                                std::to_string(n_items) + ")");
    }
}

// Checks both CSRs on the device and throws like the CPU kernel's validate().
// `status` is 2 * kCsrSlots u64 of device scratch. Synchronises the stream.
template <class T>
void validate_on_device(const LinearHeadBatch<T>& bt, i64 nnz_s, i64 nnz_q, u64* status,
                        cudaStream_t stream) {
    check(cudaMemsetAsync(status, 0xff, 2 * kCsrSlots * sizeof(u64), stream), "cudaMemsetAsync");
    const i64 cap = 4096;
    METAREC_CUDA_LAUNCH(validate_csr_kernel, grid_for(std::max(bt.n_users, nnz_s), kBlock, cap),
                        kBlock, stream,
        bt.support_indptr, bt.n_users, bt.support_items, nnz_s, bt.n_items, status);
    check_launch("validate_csr_kernel");
    METAREC_CUDA_LAUNCH(validate_csr_kernel, grid_for(std::max(bt.n_users, nnz_q), kBlock, cap),
                        kBlock, stream,
        bt.query_indptr, bt.n_users, bt.query_items, nnz_q, bt.n_items, status + kCsrSlots);
    check_launch("validate_csr_kernel");
    u64 host[2 * kCsrSlots];
    check(cudaMemcpyAsync(host, status, sizeof(host), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    // Structure of both sides first, then ids (the CPU kernel's order).
    const u64* s = host;
    const u64* q = host + kCsrSlots;
    u64 structure_s[kCsrSlots], structure_q[kCsrSlots];
    std::copy(s, s + kCsrSlots, structure_s);
    std::copy(q, q + kCsrSlots, structure_q);
    structure_s[kBadItem] = structure_q[kBadItem] = kNone;
    raise_csr_error(structure_s, "support", bt.support_items, nnz_s, bt.n_items, stream);
    raise_csr_error(structure_q, "query", bt.query_items, nnz_q, bt.n_items, stream);
    raise_csr_error(s, "support", bt.support_items, nnz_s, bt.n_items, stream);
    raise_csr_error(q, "query", bt.query_items, nnz_q, bt.n_items, stream);
}

// ---------------------------------------------------------------- launchers

template <class T, int R>
void launch_forward(const LinearHeadBatch<T>& bt, i64 nnz_s, i64 nnz_q, T* trajectory, T* query_pred,
                    cudaStream_t stream, int device) {
    const int sms = sm_count(device);
    // Registers: enough warps to fill the GPU, the rest by grid stride.
    // Scratch (large d): fewer warps, each with its own slice.
    const i64 cap = R > 0 ? static_cast<i64>(sms) * 16 : static_cast<i64>(sms) * 4;
    const int grid = grid_for(bt.n_users, kWarpsPerBlock, cap);
    const i64 dpad = ceil_div(bt.d, kWarp) * kWarp;
    Carver carve;
    const std::size_t status_at = carve.reserve<u64>(2 * kCsrSlots);
    const std::size_t scratch_at =
        carve.reserve<T>(R > 0 ? 0 : static_cast<i64>(grid) * kWarpsPerBlock * kForwardVectors * dpad);
    DeviceBuffer buf(carve.size(), stream);
    validate_on_device(bt, nnz_s, nnz_q, Carver::at<u64>(buf, status_at), stream);
    if (bt.n_users == 0) return;
    METAREC_CUDA_LAUNCH((forward_kernel<T, R>), grid, kBlock, stream,
        bt, trajectory, query_pred, Carver::at<T>(buf, scratch_at));
    check_launch("linear_head forward_kernel");
}

template <class T, int R>
void launch_backward(const LinearHeadBatch<T>& bt, i64 nnz_s, i64 nnz_q, const T* trajectory,
                     const T* grad_query_pred, bool second, bool alpha_grad,
                     const LinearHeadGradBuffers<T>& out, cudaStream_t stream, int device) {
    const i64 d = bt.d, width = d + 1, stride = (static_cast<i64>(bt.steps) + 1) * width;
    const i64 n_users = bt.n_users, n_items = bt.n_items;
    const i64 n_theta = bt.per_user_theta0 ? n_users : 1;
    const i64 n_alpha = bt.alpha_per_parameter ? d : 1;
    const bool shared_theta = !bt.per_user_theta0;
    const i64 n_support_entries = second ? nnz_s : 0;
    const i64 n_entries = n_support_entries + nnz_q;

    const int sms = sm_count(device);
    const i64 cap = R > 0 ? static_cast<i64>(sms) * 16 : static_cast<i64>(sms) * 4;
    const int grid = grid_for(n_users, kWarpsPerBlock, cap);
    const i64 dpad = ceil_div(d, kWarp) * kWarp;

    // Radix sort over the item-id bits only.
    int end_bit = 1;
    while (end_bit < 64 && (1ull << end_bit) < static_cast<u64>(n_items)) ++end_bit;
    std::size_t sort_bytes = 0;
    if (n_entries > 0 && n_users > 0) {
        check(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const u64*>(nullptr),
                                              static_cast<u64*>(nullptr), static_cast<const i64*>(nullptr),
                                              static_cast<i64*>(nullptr), n_entries, 0, end_bit, stream),
              "cub::DeviceRadixSort::SortPairs (size query)");
    }

    Carver carve;
    const std::size_t status_at = carve.reserve<u64>(2 * kCsrSlots);
    const std::size_t user_theta_at = carve.reserve<T>(shared_theta ? n_users * width : 0);
    const std::size_t user_alpha_at = carve.reserve<T>(alpha_grad ? n_users * width : 0);
    const std::size_t theta_sum_at = carve.reserve<T>(width);
    const std::size_t alpha_sum_at = carve.reserve<T>(width);
    const std::size_t entry_h_at = carve.reserve<T>(n_support_entries * d);
    const std::size_t entry_c_at = carve.reserve<T>(n_support_entries);
    const std::size_t q_user_at = carve.reserve<i64>(nnz_q);
    const std::size_t keys_in_at = carve.reserve<u64>(n_entries);
    const std::size_t keys_out_at = carve.reserve<u64>(n_entries);
    const std::size_t vals_in_at = carve.reserve<i64>(n_entries);
    const std::size_t vals_out_at = carve.reserve<i64>(n_entries);
    const std::size_t sort_at = carve.reserve_bytes(sort_bytes);
    const std::size_t scratch_at =
        carve.reserve<T>(R > 0 ? 0 : static_cast<i64>(grid) * kWarpsPerBlock * kBackwardVectors * dpad);
    DeviceBuffer buf(carve.size(), stream);
    validate_on_device(bt, nnz_s, nnz_q, Carver::at<u64>(buf, status_at), stream);

    if (n_users == 0) {  // no users: every gradient is zero (and no query entries exist)
        const auto zero = [&](T* p, i64 n) {
            if (n > 0) check(cudaMemsetAsync(p, 0, static_cast<std::size_t>(n) * sizeof(T), stream), "cudaMemsetAsync");
        };
        zero(out.p0, n_theta * d);
        zero(out.b0, n_theta);
        zero(out.alpha_p, n_alpha);
        zero(out.alpha_b, 1);
        zero(out.H, n_items * d);
        zero(out.c, n_items);
        return;
    }

    T* user_theta = Carver::at<T>(buf, user_theta_at);
    T* user_alpha = Carver::at<T>(buf, user_alpha_at);
    UserOutputs<T> uo;
    if (shared_theta) {
        uo.vp = user_theta;
        uo.vp_stride = width;
        uo.vb = user_theta + d;
        uo.vb_stride = width;
    } else {
        uo.vp = out.p0;
        uo.vp_stride = d;
        uo.vb = out.b0;
        uo.vb_stride = 1;
    }
    uo.user_alpha = user_alpha;
    uo.entry_h = Carver::at<T>(buf, entry_h_at);
    uo.entry_c = Carver::at<T>(buf, entry_c_at);
    uo.q_user = Carver::at<i64>(buf, q_user_at);
    METAREC_CUDA_LAUNCH((backward_users_kernel<T, R>), grid, kBlock, stream,
        bt, trajectory, grad_query_pred, second, alpha_grad, uo, Carver::at<T>(buf, scratch_at));
    check_launch("linear_head backward_users_kernel");

    // theta_0 (shared) and alpha: sums over users in a fixed order.
    T* theta_sum = Carver::at<T>(buf, theta_sum_at);
    T* alpha_sum = Carver::at<T>(buf, alpha_sum_at);
    const dim3 col_block(kColTile, kColTile);
    const int col_grid = static_cast<int>(ceil_div(width, kColTile));
    if (shared_theta) {
        METAREC_CUDA_LAUNCH((column_sums_kernel<T>), col_grid, col_block, stream,
            user_theta, n_users, width, theta_sum);
        check_launch("linear_head column_sums_kernel");
    }
    if (alpha_grad) {
        METAREC_CUDA_LAUNCH((column_sums_kernel<T>), col_grid, col_block, stream,
            user_alpha, n_users, width, alpha_sum);
        check_launch("linear_head column_sums_kernel");
    }
    METAREC_CUDA_LAUNCH((finalize_kernel<T>), 1, kBlock, stream,
        shared_theta ? theta_sum : nullptr, alpha_grad ? alpha_sum : nullptr, d,
        bt.alpha_per_parameter, out.p0, out.b0, out.alpha_p, out.alpha_b);
    check_launch("linear_head finalize_kernel");

    // Body gradients.
    if (n_items == 0) return;
    if (n_entries == 0) {
        check(cudaMemsetAsync(out.H, 0, static_cast<std::size_t>(n_items * d) * sizeof(T), stream),
              "cudaMemsetAsync");
        check(cudaMemsetAsync(out.c, 0, static_cast<std::size_t>(n_items) * sizeof(T), stream),
              "cudaMemsetAsync");
        return;
    }
    u64* keys_in = Carver::at<u64>(buf, keys_in_at);
    u64* keys_out = Carver::at<u64>(buf, keys_out_at);
    i64* vals_in = Carver::at<i64>(buf, vals_in_at);
    i64* vals_out = Carver::at<i64>(buf, vals_out_at);
    // Keys: item ids (validated non-negative, so the bits are those of a u64).
    if (n_support_entries > 0) {
        check(cudaMemcpyAsync(keys_in, bt.support_items, static_cast<std::size_t>(n_support_entries) * sizeof(u64),
                              cudaMemcpyDeviceToDevice, stream),
              "cudaMemcpyAsync");
    }
    if (nnz_q > 0) {
        check(cudaMemcpyAsync(keys_in + n_support_entries, bt.query_items,
                              static_cast<std::size_t>(nnz_q) * sizeof(u64), cudaMemcpyDeviceToDevice, stream),
              "cudaMemcpyAsync");
    }
    METAREC_CUDA_LAUNCH(iota_kernel, grid_for(n_entries, kBlock, 4096), kBlock, stream,
        vals_in, n_entries);
    check_launch("linear_head iota_kernel");
    check(cub::DeviceRadixSort::SortPairs(Carver::at<void>(buf, sort_at), sort_bytes, keys_in, keys_out,
                                          vals_in, vals_out, n_entries, 0, end_bit, stream),
          "cub::DeviceRadixSort::SortPairs");
    const int item_grid = grid_for(n_items, kWarpsPerBlock, static_cast<i64>(sms) * 16);
    METAREC_CUDA_LAUNCH((item_grads_kernel<T>), item_grid, kBlock, stream,
        keys_out, vals_out, n_entries, n_support_entries, uo.entry_h, uo.entry_c, grad_query_pred,
        uo.q_user, trajectory, stride, static_cast<i64>(bt.steps) * width, n_items, d, out.H, out.c);
    check_launch("linear_head item_grads_kernel");
}

}  // namespace

template <class T>
void linear_head_forward(const LinearHeadBatch<T>& bt, std::int64_t nnz_support, std::int64_t nnz_query,
                         T* trajectory, T* query_pred, cudaStream_t stream, int device) {
    check_sizes(bt, nnz_support, nnz_query);
    DeviceGuard guard(device);
    const i64 d = bt.d;
    if (d <= 32) {
        launch_forward<T, 1>(bt, nnz_support, nnz_query, trajectory, query_pred, stream, device);
    } else if (d <= 64) {
        launch_forward<T, 2>(bt, nnz_support, nnz_query, trajectory, query_pred, stream, device);
    } else if (d <= 128) {
        launch_forward<T, 4>(bt, nnz_support, nnz_query, trajectory, query_pred, stream, device);
    } else if (d <= kMaxRegisterD) {
        launch_forward<T, 8>(bt, nnz_support, nnz_query, trajectory, query_pred, stream, device);
    } else {
        launch_forward<T, 0>(bt, nnz_support, nnz_query, trajectory, query_pred, stream, device);
    }
}

template <class T>
void linear_head_backward(const LinearHeadBatch<T>& bt, std::int64_t nnz_support, std::int64_t nnz_query,
                          const T* trajectory, const T* grad_query_pred, AdaptOrder order, bool alpha_grad,
                          const LinearHeadGradBuffers<T>& out, cudaStream_t stream, int device) {
    check_sizes(bt, nnz_support, nnz_query);
    DeviceGuard guard(device);
    const bool second = order == AdaptOrder::second && bt.steps > 0;
    const i64 d = bt.d;
    if (d <= 32) {
        launch_backward<T, 1>(bt, nnz_support, nnz_query, trajectory, grad_query_pred, second, alpha_grad, out,
                              stream, device);
    } else if (d <= 64) {
        launch_backward<T, 2>(bt, nnz_support, nnz_query, trajectory, grad_query_pred, second, alpha_grad, out,
                              stream, device);
    } else if (d <= 128) {
        launch_backward<T, 4>(bt, nnz_support, nnz_query, trajectory, grad_query_pred, second, alpha_grad, out,
                              stream, device);
    } else if (d <= kMaxRegisterD) {
        launch_backward<T, 8>(bt, nnz_support, nnz_query, trajectory, grad_query_pred, second, alpha_grad, out,
                              stream, device);
    } else {
        launch_backward<T, 0>(bt, nnz_support, nnz_query, trajectory, grad_query_pred, second, alpha_grad, out,
                              stream, device);
    }
}

template void linear_head_forward<float>(const LinearHeadBatch<float>&, std::int64_t, std::int64_t, float*,
                                         float*, cudaStream_t, int);
template void linear_head_forward<double>(const LinearHeadBatch<double>&, std::int64_t, std::int64_t, double*,
                                          double*, cudaStream_t, int);
template void linear_head_backward<float>(const LinearHeadBatch<float>&, std::int64_t, std::int64_t,
                                          const float*, const float*, AdaptOrder, bool,
                                          const LinearHeadGradBuffers<float>&, cudaStream_t, int);
template void linear_head_backward<double>(const LinearHeadBatch<double>&, std::int64_t, std::int64_t,
                                           const double*, const double*, AdaptOrder, bool,
                                           const LinearHeadGradBuffers<double>&, cudaStream_t, int);

}  // namespace cuda
}  // namespace metarec
