// Top-k with exclusions: explicit scores (threshold scan per row) and the
// fused queries . items^T variant (packed items, a per-ISA register-blocked
// micro-kernel, a scan that leaves registers only on a hit).
#include "metarec/topk.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "metarec/parallel.h"
#include "topk_kernel.h"

namespace metarec {

namespace {

using std::int64_t;

template <class T>
struct Entry {
    T s;
    int64_t id;
};

// Total order of the output: higher score first, then lower id.
template <class T>
inline bool better(const Entry<T>& a, const Entry<T>& b) {
    return a.s > b.s || (a.s == b.s && a.id < b.id);
}

// The k best (score, id) pairs of one row, where ids arrive in increasing
// order, so a newcomer only beats the current k-th with a strictly higher
// score (an equal score never displaces a lower id).
//  * k <= kSortedMax: a sorted array, best first; the threshold is exact.
//  * larger k: a reservoir of 2k entries (as faiss' ReservoirTopN): append
//    while above the threshold; when full, nth_element keeps the k best and
//    the threshold rises to the k-th. O(1) amortised per hit, few branches.
// full() says a threshold exists; then only scores > worst() may be pushed.
template <class T>
class Selection {
public:
    static constexpr int64_t kSortedMax = 16;
    static int64_t capacity(int64_t k) { return k <= kSortedMax ? k : 2 * k; }

    Selection() = default;
    Selection(Entry<T>* buf, int64_t k) : e_(buf), k_(k), cap_(capacity(k)), sorted_(k <= kSortedMax) {}

    bool full() const { return has_thr_; }
    T worst() const { return thr_; }

    // Adds (v, i); requires !full() or v > worst(), and i above every kept id.
    void push(T v, int64_t i) {
        if (sorted_) {
            int64_t pos = n_ == k_ ? k_ - 1 : n_++;
            while (pos > 0 && e_[pos - 1].s < v) {
                e_[pos] = e_[pos - 1];
                --pos;
            }
            e_[pos] = Entry<T>{v, i};
            if (n_ == k_) {
                has_thr_ = true;
                thr_ = e_[k_ - 1].s;
            }
            return;
        }
        e_[n_++] = Entry<T>{v, i};
        if (n_ == cap_) compact();
    }

    // Copies the selection, best first, to `out` (room for k); returns the count.
    int64_t take(Entry<T>* out) {
        sort();
        std::copy(e_, e_ + n_, out);
        return n_;
    }

    // Writes the selection best first and pads to `k_out` with (-1, -inf).
    void finish(int64_t* out_ids, float* out_scores, int64_t k_out) {
        sort();
        for (int64_t j = 0; j < n_; ++j) {
            out_ids[j] = e_[j].id;
            out_scores[j] = static_cast<float>(e_[j].s);
        }
        for (int64_t j = n_; j < k_out; ++j) {
            out_ids[j] = -1;
            out_scores[j] = -std::numeric_limits<float>::infinity();
        }
    }

private:
    void sort() {
        if (sorted_) return;
        if (n_ > k_) {
            std::nth_element(e_, e_ + (k_ - 1), e_ + n_, better<T>);
            n_ = k_;
        }
        std::sort(e_, e_ + n_, better<T>);
    }

    void compact() {
        std::nth_element(e_, e_ + (k_ - 1), e_ + n_, better<T>);
        n_ = k_;
        has_thr_ = true;
        thr_ = e_[k_ - 1].s;  // the k-th best: nothing before it is worse
    }

    Entry<T>* e_ = nullptr;
    int64_t k_ = 0;
    int64_t cap_ = 0;
    int64_t n_ = 0;
    T thr_ = T(0);
    bool has_thr_ = false;
    bool sorted_ = true;
};

void pad_all(int64_t n_rows, int64_t k, int64_t* out_ids, float* out_scores) {
    std::fill(out_ids, out_ids + n_rows * k, int64_t{-1});
    std::fill(out_scores, out_scores + n_rows * k, -std::numeric_limits<float>::infinity());
}

void check_common(int64_t n_rows, int64_t n_cols, int64_t k) {
    if (n_rows < 0 || n_cols < 0) throw std::invalid_argument("topk: negative shape");
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
}

// Scans row[a, b) into `sel`: fill phase, then a chunked threshold test
// that the compiler vectorises; only chunks with a hit are looked at again.
// NaN never enters the selection; it sets `saw_nan` (the caller raises).
template <class T>
void scan_segment(const T* row, int64_t a, int64_t b, Selection<T>& sel, bool& saw_nan) {
    int64_t j = a;
    for (; j < b && !sel.full(); ++j) {
        if (row[j] != row[j]) {
            saw_nan = true;
            continue;
        }
        sel.push(row[j], j);
    }
    if (j >= b) return;
    T thr = sel.worst();
    constexpr int64_t C = 32;
    for (; j + C <= b; j += C) {
        int any = 0;
        for (int64_t t = 0; t < C; ++t) any |= static_cast<int>(!(row[j + t] <= thr));
        if (!any) continue;
        for (int64_t t = 0; t < C; ++t) {
            const T v = row[j + t];
            if (v > thr) {
                sel.push(v, j + t);
                thr = sel.worst();
            } else if (v != v) {
                saw_nan = true;
            }
        }
    }
    for (; j < b; ++j) {
        const T v = row[j];
        if (v > thr) {
            sel.push(v, j);
            thr = sel.worst();
        } else if (v != v) {
            saw_nan = true;
        }
    }
}

// Uninitialised, 64-byte aligned scratch (no zero fill: every byte used is
// written first, and a fresh large buffer is not touched twice).
template <class T>
struct AlignedBuffer {
    explicit AlignedBuffer(std::size_t n) : raw(new T[n + 64 / sizeof(T)]) {
        auto addr = reinterpret_cast<std::uintptr_t>(raw.get());
        const std::uintptr_t aligned = (addr + 63) & ~std::uintptr_t{63};
        ptr = reinterpret_cast<T*>(aligned);
    }
    std::unique_ptr<T[]> raw;
    T* ptr;
};

template <class T>
const topk_detail::DotKernel<T>& pick_kernel(simd::Level level) {
    simd::checked(level);
    const topk_detail::DotKernels* k = nullptr;
    if (level == simd::Level::avx512) k = topk_detail::kernels_avx512();
    if (k == nullptr && static_cast<int>(level) >= static_cast<int>(simd::Level::avx2)) {
        k = topk_detail::kernels_avx2();
    }
    if (k == nullptr) k = topk_detail::kernels_generic();
    if constexpr (sizeof(T) == 4) {
        return k->f32;
    } else {
        return k->f64;
    }
}

// Packs item panels [p_begin, p_end) into dst [panel - p_begin][d][nr] and
// their bias into dst_bias [panel - p_begin][nr]; lanes past ni are 0.
// Returns false when an item holds NaN or +-inf (x * 0 is then NaN), which
// saves the caller a separate validation pass over the whole catalogue.
template <class T>
bool pack_panels(const T* items, int64_t ni, int64_t d, const T* bias, int nr, int64_t p_begin,
                 int64_t p_end, T* dst_items, T* dst_bias) {
    T probe = T(0);
    for (int64_t p = p_begin; p < p_end; ++p) {
        T* dst = dst_items + (p - p_begin) * d * nr;
        T* db = dst_bias + (p - p_begin) * nr;
        for (int j = 0; j < nr; ++j) {
            const int64_t item = p * nr + j;
            if (item < ni) {
                const T* src = items + item * d;
                for (int64_t kk = 0; kk < d; ++kk) {
                    dst[kk * nr + j] = src[kk];
                    probe += src[kk] * T(0);
                }
                db[j] = bias ? bias[item] : T(0);
            } else {
                for (int64_t kk = 0; kk < d; ++kk) dst[kk * nr + j] = T(0);
                db[j] = T(0);
            }
        }
    }
    return probe == T(0);
}

// Throws std::invalid_argument naming the first non-finite entry of a matrix.
template <class T>
[[noreturn]] void throw_non_finite(const char* name, const T* a, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows * cols; ++i) {
        if (!std::isfinite(a[i])) {
            throw std::invalid_argument(std::string(name) + " contains NaN or inf at index (" +
                                        std::to_string(i / cols) + ", " + std::to_string(i % cols) +
                                        ") (value " + std::to_string(a[i]) + ")");
        }
    }
    throw std::invalid_argument(std::string(name) + " contains NaN or inf");
}

// State the hit callback needs for one group of MR query rows.
template <class T>
struct GroupCtx {
    Selection<T>* sel = nullptr;   // per row
    T* thr = nullptr;              // per row
    int64_t* excl_pos = nullptr;   // per row cursor into excl indices
    int64_t* excl_end = nullptr;   // per row
    const int64_t* excl = nullptr;
    int64_t ni = 0;
    int64_t panel0 = 0;            // panel index of the kernel's panel 0
    int nr = 0;
    // dot_scores only:
    T* out = nullptr;
    int64_t row0 = 0;
    int rows_valid = 0;
};

template <class T>
void on_hit_select(void* vctx, int r, int64_t panel, const T* scores, std::uint32_t mask) {
    auto& c = *static_cast<GroupCtx<T>*>(vctx);
    Selection<T>& sel = c.sel[r];
    const int64_t base = (c.panel0 + panel) * c.nr;
    int64_t& pos = c.excl_pos[r];
    const int64_t end = c.excl_end[r];
    while (mask) {
        const int lane = __builtin_ctz(mask);
        mask &= mask - 1;
        const int64_t id = base + lane;
        if (id >= c.ni) break;
        const T v = scores[lane];
        if (v != v) continue;  // only if the products overflowed (inf - inf)
        if (sel.full() && !(v > sel.worst())) continue;
        while (pos < end && c.excl[pos] < id) ++pos;
        if (pos < end && c.excl[pos] == id) continue;
        sel.push(v, id);
    }
    c.thr[r] = sel.full() ? sel.worst() : std::numeric_limits<T>::quiet_NaN();
}

template <class T>
void on_hit_store(void* vctx, int r, int64_t panel, const T* scores, std::uint32_t) {
    auto& c = *static_cast<GroupCtx<T>*>(vctx);
    if (r >= c.rows_valid) return;
    const int64_t base = (c.panel0 + panel) * c.nr;
    T* dst = c.out + (c.row0 + r) * c.ni;
    for (int j = 0; j < c.nr && base + j < c.ni; ++j) dst[base + j] = scores[j];
}

// The fused scan. Work units are (chunk of query groups) x (slice of the
// item panels). Many queries: one slice, items packed once up front and
// streamed from L2 block by block. Few queries: items are packed block by
// block on the fly (read once, no packed copy), and the catalogue is split
// into slices so every thread has work; each slice keeps its own top-k and
// the slices are merged per query. Top-k under the total order
// (score desc, id asc) is unique and every score is computed by the same
// arithmetic whatever the split, so the result never depends on it.
template <class T, bool Store>
void dot_driver(const T* queries, int64_t nq, const T* items, int64_t ni, int64_t d, const T* bias,
                int64_t k, const Exclusion& excl, int num_threads, simd::Level level,
                int64_t* out_ids, float* out_scores, T* out_dense) {
    const auto& K = pick_kernel<T>(level);
    const int threads = resolve_num_threads(num_threads);
    const int MR = K.mr;
    const int NR = K.nr;
    const int64_t kk = std::min(k, ni);
    const int64_t n_panels = (ni + NR - 1) / NR;
    const int64_t panel_bytes = std::max<int64_t>(1, d * NR * int64_t(sizeof(T)));
    // Item blocks of ~256 KiB of packed data stay in L2 while every query
    // group of a chunk streams over them.
    const int64_t block_panels = std::max<int64_t>(1, (256 * 1024) / panel_bytes);
    const int64_t n_groups = (nq + MR - 1) / MR;
    // A chunk of query groups reads the whole catalogue once. When that is
    // large (beyond cache) keep chunks big, to read it few times; otherwise
    // favour balance. Item slices then give every thread enough work.
    const int64_t items_bytes = ni * d * int64_t(sizeof(T));
    const int64_t groups_per_chunk =
        items_bytes > (int64_t(32) << 20)
            ? std::min<int64_t>(n_groups, 32)
            : std::clamp<int64_t>(n_groups / (8 * int64_t(threads)), 1, 32);
    const int64_t n_chunks = (n_groups + groups_per_chunk - 1) / groups_per_chunk;
    int64_t n_slices = 1;
    if (!Store && n_chunks < 4 * int64_t(threads)) {
        const int64_t want = (4 * int64_t(threads) + n_chunks - 1) / n_chunks;
        const int64_t by_blocks = n_panels / (2 * block_panels);
        const int64_t by_memory =
            (int64_t(256) << 20) / std::max<int64_t>(1, nq * kk * int64_t(sizeof(Entry<T>)));
        n_slices = std::clamp<int64_t>(std::min({want, by_blocks, by_memory}), 1, 64);
    }
    const int64_t slice_panels = (n_panels + n_slices - 1) / n_slices;
    n_slices = (n_panels + slice_panels - 1) / slice_panels;
    const bool pack_once = n_chunks > 2;

    std::unique_ptr<AlignedBuffer<T>> packed_items, packed_bias;
    if (pack_once) {
        packed_items = std::make_unique<AlignedBuffer<T>>(static_cast<std::size_t>(n_panels * NR * d));
        packed_bias = std::make_unique<AlignedBuffer<T>>(static_cast<std::size_t>(n_panels * NR));
        T* ip = packed_items->ptr;
        T* bp = packed_bias->ptr;
        parallel_for(n_panels, threads, 64, [&](int64_t p0, int64_t p1) {
            if (!pack_panels(items, ni, d, bias, NR, p0, p1, ip + p0 * d * NR, bp + p0 * NR)) {
                throw_non_finite("items", items, ni, d);
            }
        });
    }
    // Per-slice partial results when the catalogue is split.
    std::vector<Entry<T>> partial(n_slices > 1 ? static_cast<std::size_t>(n_slices * nq * kk) : 0);
    std::vector<int64_t> partial_n(n_slices > 1 ? static_cast<std::size_t>(n_slices * nq) : 0);

    const T nan = std::numeric_limits<T>::quiet_NaN();
    const T inf = std::numeric_limits<T>::infinity();

    parallel_for(n_chunks * n_slices, threads, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t chunk = u / n_slices;
            const int64_t slice = u % n_slices;
            const int64_t g0 = chunk * groups_per_chunk;
            const int64_t ng = std::min(groups_per_chunk, n_groups - g0);
            const int64_t rows = ng * MR;
            const int64_t q0 = g0 * MR;
            const int64_t sp0 = slice * slice_panels;
            const int64_t sp1 = std::min(n_panels, sp0 + slice_panels);
            AlignedBuffer<T> qpack(static_cast<std::size_t>(ng * d * MR));
            for (int64_t g = 0; g < ng; ++g) {
                T* dst = qpack.ptr + g * d * MR;
                for (int r = 0; r < MR; ++r) {
                    const int64_t q = q0 + g * MR + r;
                    if (q < nq) {
                        const T* src = queries + q * d;
                        for (int64_t t = 0; t < d; ++t) dst[t * MR + r] = src[t];
                    } else {
                        for (int64_t t = 0; t < d; ++t) dst[t * MR + r] = T(0);
                    }
                }
            }
            const int64_t cap = Selection<T>::capacity(kk);
            std::vector<Entry<T>> sel_buf(Store ? 0 : static_cast<std::size_t>(rows * cap));
            std::vector<Selection<T>> sel(static_cast<std::size_t>(rows));
            std::vector<T> thr(static_cast<std::size_t>(rows));
            std::vector<int64_t> excl_pos(static_cast<std::size_t>(rows), 0);
            std::vector<int64_t> excl_end(static_cast<std::size_t>(rows), 0);
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t q = q0 + r;
                const bool valid = q < nq;
                thr[r] = valid ? nan : inf;
                if (!Store) sel[r] = Selection<T>(sel_buf.data() + r * cap, kk);
                if (valid && excl.indptr) {
                    excl_pos[r] = excl.indptr[q];
                    excl_end[r] = excl.indptr[q + 1];
                }
            }
            std::vector<GroupCtx<T>> ctx(static_cast<std::size_t>(ng));
            for (int64_t g = 0; g < ng; ++g) {
                GroupCtx<T>& c = ctx[g];
                c.sel = sel.data() + g * MR;
                c.thr = thr.data() + g * MR;
                c.excl_pos = excl_pos.data() + g * MR;
                c.excl_end = excl_end.data() + g * MR;
                c.excl = excl.indices;
                c.ni = ni;
                c.nr = NR;
                c.out = out_dense;
                c.row0 = q0 + g * MR;
                c.rows_valid = static_cast<int>(std::min<int64_t>(MR, nq - c.row0));
            }
            const topk_detail::HitFn<T> fn = Store ? &on_hit_store<T> : &on_hit_select<T>;
            std::unique_ptr<AlignedBuffer<T>> block_items, block_bias;
            if (!pack_once) {
                block_items = std::make_unique<AlignedBuffer<T>>(static_cast<std::size_t>(block_panels * NR * d));
                block_bias = std::make_unique<AlignedBuffer<T>>(static_cast<std::size_t>(block_panels * NR));
            }
            for (int64_t pb = sp0; pb < sp1; pb += block_panels) {
                const int64_t pe = std::min(sp1, pb + block_panels);
                const T* ip;
                const T* bp;
                int64_t first, last, panel0;
                if (pack_once) {
                    ip = packed_items->ptr;
                    bp = packed_bias->ptr;
                    first = pb;
                    last = pe;
                    panel0 = 0;
                } else {
                    if (!pack_panels(items, ni, d, bias, NR, pb, pe, block_items->ptr, block_bias->ptr)) {
                        throw_non_finite("items", items, ni, d);
                    }
                    ip = block_items->ptr;
                    bp = block_bias->ptr;
                    first = 0;
                    last = pe - pb;
                    panel0 = pb;
                }
                for (int64_t g = 0; g < ng; ++g) {
                    ctx[g].panel0 = panel0;
                    K.scan(qpack.ptr + g * d * MR, ip, bp, d, first, last, thr.data() + g * MR, fn, &ctx[g]);
                }
            }
            if (Store) continue;
            for (int64_t r = 0; r < rows && q0 + r < nq; ++r) {
                const int64_t q = q0 + r;
                if (n_slices == 1) {
                    sel[r].finish(out_ids + q * k, out_scores + q * k, k);
                } else {
                    const int64_t at = slice * nq + q;
                    partial_n[at] = sel[r].take(partial.data() + at * kk);
                }
            }
        }
    });
    if (n_slices == 1) return;
    parallel_for(nq, threads, 64, [&](int64_t r0, int64_t r1) {
        std::vector<Entry<T>> all;
        for (int64_t q = r0; q < r1; ++q) {
            all.clear();
            for (int64_t sl = 0; sl < n_slices; ++sl) {
                const int64_t at = sl * nq + q;
                all.insert(all.end(), partial.data() + at * kk, partial.data() + at * kk + partial_n[at]);
            }
            const int64_t n = std::min<int64_t>(kk, static_cast<int64_t>(all.size()));
            std::partial_sort(all.begin(), all.begin() + n, all.end(), better<T>);
            for (int64_t j = 0; j < n; ++j) {
                out_ids[q * k + j] = all[j].id;
                out_scores[q * k + j] = static_cast<float>(all[j].s);
            }
            for (int64_t j = n; j < k; ++j) {
                out_ids[q * k + j] = -1;
                out_scores[q * k + j] = -std::numeric_limits<float>::infinity();
            }
        }
    });
}

}  // namespace

void check_exclusion(const Exclusion& excl, int64_t n_rows, int64_t n_cols) {
    if (excl.indptr == nullptr) return;
    if (excl.indptr[0] != 0) {
        throw std::invalid_argument("exclude.indptr must start at 0, got " + std::to_string(excl.indptr[0]));
    }
    if (excl.indptr[n_rows] != excl.nnz) {
        throw std::invalid_argument("exclude.indptr ends at " + std::to_string(excl.indptr[n_rows]) +
                                    " but exclude.indices has " + std::to_string(excl.nnz) + " entries");
    }
    for (int64_t r = 0; r < n_rows; ++r) {
        const int64_t a = excl.indptr[r];
        const int64_t b = excl.indptr[r + 1];
        if (b < a || b > excl.nnz) {
            throw std::invalid_argument("exclude.indptr decreases at row " + std::to_string(r));
        }
        for (int64_t p = a; p < b; ++p) {
            const int64_t c = excl.indices[p];
            if (c < 0 || c >= n_cols) {
                throw std::out_of_range("exclude contains column " + std::to_string(c) + ", outside [0, " +
                                        std::to_string(n_cols) + ")");
            }
            if (p > a && c < excl.indices[p - 1]) {
                throw std::invalid_argument("exclude indices must be sorted within each row (row " +
                                            std::to_string(r) + ")");
            }
        }
    }
}

template <class T>
void topk(const T* scores, int64_t n_rows, int64_t n_cols, int64_t k, const Exclusion& excl,
          int num_threads, int64_t* out_ids, float* out_scores) {
    check_common(n_rows, n_cols, k);
    check_exclusion(excl, n_rows, n_cols);
    if (n_rows == 0) return;
    if (n_cols == 0) return pad_all(n_rows, k, out_ids, out_scores);
    const int threads = resolve_num_threads(num_threads);
    const int64_t kk = std::min(k, n_cols);
    const int64_t chunk = std::max<int64_t>(1, 65536 / n_cols);
    std::vector<unsigned char> nan_rows(static_cast<std::size_t>(n_rows), 0);
    parallel_for(n_rows, threads, chunk, [&](int64_t r0, int64_t r1) {
        std::vector<Entry<T>> buf(static_cast<std::size_t>(Selection<T>::capacity(kk)));
        for (int64_t r = r0; r < r1; ++r) {
            Selection<T> sel(buf.data(), kk);
            const T* row = scores + r * n_cols;
            bool saw_nan = false;
            int64_t start = 0;
            if (excl.indptr) {
                for (int64_t p = excl.indptr[r]; p < excl.indptr[r + 1]; ++p) {
                    const int64_t e = excl.indices[p];
                    if (row[e] != row[e]) saw_nan = true;  // NaN is an error even where excluded
                    if (e < start) continue;  // duplicate
                    scan_segment(row, start, e, sel, saw_nan);
                    start = e + 1;
                }
            }
            scan_segment(row, start, n_cols, sel, saw_nan);
            sel.finish(out_ids + r * k, out_scores + r * k, k);
            if (saw_nan) nan_rows[r] = 1;
        }
    });
    // The NaN check rides on the scan; report the first one deterministically.
    for (int64_t r = 0; r < n_rows; ++r) {
        if (!nan_rows[r]) continue;
        const T* row = scores + r * n_cols;
        int64_t c = 0;
        while (c < n_cols && row[c] == row[c]) ++c;
        throw std::invalid_argument("scores contains NaN at index (" + std::to_string(r) + ", " +
                                    std::to_string(c) + ")");
    }
}

template <class T>
void topk_dot(const T* queries, int64_t nq, const T* items, int64_t ni, int64_t d, const T* bias,
              int64_t k, const Exclusion& excl, int num_threads, simd::Level level,
              int64_t* out_ids, float* out_scores) {
    check_common(nq, ni, k);
    if (d < 0) throw std::invalid_argument("topk_dot: negative d");
    check_exclusion(excl, nq, ni);
    if (nq == 0) return;
    if (ni == 0) return pad_all(nq, k, out_ids, out_scores);
    dot_driver<T, false>(queries, nq, items, ni, d, bias, k, excl, num_threads, level, out_ids,
                         out_scores, nullptr);
}

template <class T>
void dot_scores(const T* queries, int64_t nq, const T* items, int64_t ni, int64_t d, const T* bias,
                int num_threads, simd::Level level, T* out) {
    if (nq < 0 || ni < 0 || d < 0) throw std::invalid_argument("dot_scores: negative shape");
    if (nq == 0 || ni == 0) return;
    dot_driver<T, true>(queries, nq, items, ni, d, bias, 1, Exclusion{}, num_threads, level, nullptr,
                        nullptr, out);
}

#define METAREC_TOPK_INSTANTIATE(T)                                                               \
    template void topk<T>(const T*, int64_t, int64_t, int64_t, const Exclusion&, int, int64_t*,   \
                          float*);                                                                \
    template void topk_dot<T>(const T*, int64_t, const T*, int64_t, int64_t, const T*, int64_t,   \
                              const Exclusion&, int, simd::Level, int64_t*, float*);              \
    template void dot_scores<T>(const T*, int64_t, const T*, int64_t, int64_t, const T*, int,     \
                                simd::Level, T*);
METAREC_TOPK_INSTANTIATE(float)
METAREC_TOPK_INSTANTIATE(double)
#undef METAREC_TOPK_INSTANTIATE

}  // namespace metarec
