// The register-blocked scoring + threshold-scan micro-kernel, written once
// over a vector traits class `Tr`:
//   T, V, W (lanes), NV (vectors per row, NR = W * NV), MR (rows),
//   load(p), bcast(p), fma(a, b, c) = a * b + c, store(p, v),
//   hit(v, t) -> bitmask of lanes with !(v <= t).
// Included by each per-ISA translation unit inside an anonymous namespace.
#pragma once

template <class Tr>
void scan_group(const typename Tr::T* qpack, const typename Tr::T* ipack,
                const typename Tr::T* bpack, std::int64_t d, std::int64_t panel_begin,
                std::int64_t panel_end, const typename Tr::T* thr,
                ::metarec::topk_detail::HitFn<typename Tr::T> hit, void* ctx) {
    using T = typename Tr::T;
    using V = typename Tr::V;
    constexpr int MR = Tr::MR;
    constexpr int NV = Tr::NV;
    constexpr int W = Tr::W;
    constexpr int NR = W * NV;
    for (std::int64_t p = panel_begin; p < panel_end; ++p) {
        const T* B = ipack + p * d * NR;
        const T* A = qpack;
        V acc[MR][NV];
        {
            V b0[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) b0[v] = Tr::load(bpack + p * NR + v * W);
#pragma GCC unroll 16
            for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) acc[r][v] = b0[v];
            }
        }
#pragma GCC unroll 4
        for (std::int64_t kk = 0; kk < d; ++kk, A += MR, B += NR) {
            V bv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) bv[v] = Tr::load(B + v * W);
#pragma GCC unroll 16
            for (int r = 0; r < MR; ++r) {
                const V a = Tr::bcast(A + r);
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) acc[r][v] = Tr::fma(a, bv[v], acc[r][v]);
            }
        }
        // Scan: compare every row with its threshold; leave the registers
        // only when something beats it (rare once the k-th score settles).
        std::uint32_t masks[MR];
        std::uint32_t any = 0;
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            const V t = Tr::bcast(thr + r);
            std::uint32_t m = 0;
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) m |= Tr::hit(acc[r][v], t) << (v * W);
            masks[r] = m;
            any |= m;
        }
        if (any) {
            alignas(64) T buf[MR][NR];
#pragma GCC unroll 16
            for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) Tr::store(&buf[r][v * W], acc[r][v]);
            }
            for (int r = 0; r < MR; ++r) {
                if (masks[r]) hit(ctx, r, p, buf[r], masks[r]);
            }
        }
    }
}
