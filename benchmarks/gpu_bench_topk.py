"""GPU benchmark: fused top-k (ops.topk_dot, device CUDA) against torch's
matmul + topk (chunked over queries) and the cuBLAS GEMM of the same shape
(torch.matmul alone, same chunks), plus top-k over explicit scores against
torch.topk. Run by benchmarks/gpu_check.sh on a GPU machine.

Every case first checks its result (against the CPU twin, bit for bit where the
arithmetic is the same, and against float64 torch scores); a mismatch exits
non-zero. Times are CUDA-event medians after a warm-up.

    python benchmarks/gpu_bench_topk.py --json out.json [--quick]

Target (issue 7): 100,000 queries x 1,000,000 items x d=64, k=100 at least 2x
faster than torch matmul + topk and within 1.5x of the GEMM time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from gpu_timing import cuda_median_ms




def chunk_rows(n_cols: int, budget_bytes: int = 8 << 30) -> int:
    return max(1, min(1 << 16, budget_bytes // (4 * max(1, n_cols))))


def torch_topk_dot(q, it, k, bias=None, excl=None):
    """torch's way: scores chunk by chunk, excluded items set to -inf, torch.topk."""
    import torch

    nq = q.shape[0]
    step = chunk_rows(it.shape[0])
    ids = torch.empty((nq, k), dtype=torch.int64, device=q.device)
    vals = torch.empty((nq, k), dtype=torch.float32, device=q.device)
    for a in range(0, nq, step):
        s = q[a:a + step] @ it.T
        if bias is not None:
            s += bias
        if excl is not None:
            rows, cols = excl
            sel = (rows >= a) & (rows < a + step)
            s[rows[sel] - a, cols[sel]] = -torch.inf
        v, i = torch.topk(s, k, dim=1)
        ids[a:a + step] = i
        vals[a:a + step] = v
    return ids, vals


def torch_gemm(q, it):
    """The GEMM alone, in the same chunks (what the fused kernel competes with)."""
    step = chunk_rows(it.shape[0])
    last = None
    for a in range(0, q.shape[0], step):
        last = q[a:a + step] @ it.T
    return last


def check_against_torch(ids, vals, q, it, k, bias, n_check: int, excl_sets=None) -> str | None:
    """Rows [0, n_check): ids agree with float64 torch top-k (up to near-ties)."""
    import torch

    qs = q[:n_check].double()
    exact = qs @ it.double().T
    if bias is not None:
        exact += bias.double()
    if excl_sets is not None:
        for r, cols in enumerate(excl_sets[:n_check]):
            if len(cols):
                exact[r, torch.as_tensor(cols, device=exact.device)] = -torch.inf
    ref_vals, ref_ids = torch.topk(exact, k, dim=1)
    got_vals = vals[:n_check].double()
    if not torch.allclose(got_vals, ref_vals, rtol=1e-5, atol=1e-4):
        worst = (got_vals - ref_vals).abs().max().item()
        return f"scores differ from float64 torch by up to {worst}"
    same = (ids[:n_check] == ref_ids).double().mean().item()
    if same < 0.995:
        return f"only {same:.4f} of ids agree with float64 torch"
    # the scores of the returned ids really are those scores
    recomputed = exact.gather(1, ids[:n_check].clamp(min=0))
    if not torch.allclose(recomputed, got_vals, rtol=1e-5, atol=1e-4):
        return "returned scores do not belong to the returned ids"
    return None


def check_against_cpu(ids, vals, q, it, k, bias, n_check: int, excl=None) -> str | None:
    """Rows [0, n_check) equal the CPU topk_dot (bit for bit at an FMA SIMD level)."""
    from metarec_fast import _core, ops
    from metarec_fast.ops.topk import _topk_dot_simd

    levels = ["generic", "avx2", "avx512"]
    detected = levels.index(_core.simd_detected())
    fma = next((lv for lv in ("avx512", "avx2") if levels.index(lv) <= detected), None)
    qn = q[:n_check].cpu().numpy()
    itn = it.cpu().numpy()
    bn = None if bias is None else bias.cpu().numpy()
    ex = None if excl is None else (excl[0][: n_check + 1], excl[1][: excl[0][n_check]])
    if fma is None:
        return None  # no bit-exact twin on this CPU; the torch check covers it
    rids, rvals = _topk_dot_simd(qn, itn, k, fma, item_bias=bn, exclude=ex, num_threads=-1)
    gids = ids[:n_check].cpu().numpy()
    gvals = vals[:n_check].cpu().numpy()
    if not np.array_equal(gids, rids) or not np.array_equal(gvals, rvals):
        bad = int((gids != rids).any(axis=1).sum())
        return f"{bad} of {n_check} rows differ from the CPU topk_dot ({fma})"
    del ops
    return None


def bench_topk_dot(nq, ni, d, k, dtype, repeats, with_excl, n_check, seed=0):
    import torch

    from metarec_fast import ops

    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(nq, d, device="cuda", generator=g, dtype=dtype)
    it = torch.randn(ni, d, device="cuda", generator=g, dtype=dtype)
    bias = torch.randn(ni, device="cuda", generator=g, dtype=dtype)
    excl = excl_dev = excl_sets = None
    if with_excl:
        rng = np.random.default_rng(seed)
        per = 50
        cols = np.sort(rng.integers(0, ni, (nq, per)), axis=1).astype(np.int64)
        indptr = np.arange(0, nq * per + 1, per, dtype=np.int64)
        excl = (indptr, cols.reshape(-1))
        rows_t = torch.arange(nq, device="cuda").repeat_interleave(per)
        excl_dev = (rows_t, torch.from_numpy(cols.reshape(-1)).cuda())
        excl_sets = [cols[r] for r in range(min(nq, n_check))]
    name = f"topk_dot {str(dtype).replace('torch.', '')}" + (" +excl" if with_excl else "")
    shape = f"{nq}x{ni}x{d} k={k}"
    ours = lambda: ops.topk_dot(q, it, k, item_bias=bias, exclude=excl)  # noqa: E731
    ids, vals = ours()
    torch.cuda.synchronize()
    problem = check_against_cpu(ids, vals, q, it, k, bias, n_check, excl)
    problem = problem or check_against_torch(ids, vals, q, it, k, bias, n_check, excl_sets)
    rec = {"case": name, "shape": shape, "ok": problem is None, "problem": problem}
    if problem is not None:
        return rec
    t_ours = cuda_median_ms(ours, repeats, warmup=1)
    # The same kernel compiled for one block per SM (no register spills):
    # which of the two is faster is for this measurement to say.
    os.environ["METAREC_CUDA_TOPK_MIN_BLOCKS"] = "1"
    try:
        ids1, vals1 = ours()
        if not (torch.equal(ids1, ids) and torch.equal(vals1, vals)):
            rec.update(ok=False, problem="the one-block-per-SM variant gives other results")
            return rec
        rec["ours_1block_ms"] = cuda_median_ms(ours, repeats, warmup=1)
    finally:
        del os.environ["METAREC_CUDA_TOPK_MIN_BLOCKS"]
    t_torch = cuda_median_ms(lambda: torch_topk_dot(q, it, k, bias, excl_dev), repeats, warmup=1)
    t_gemm = cuda_median_ms(lambda: torch_gemm(q, it), repeats, warmup=1)
    flops = 2.0 * nq * ni * d
    rec.update(ours_ms=t_ours, torch_ms=t_torch, gemm_ms=t_gemm,
               speedup_vs_torch=t_torch / t_ours, ours_over_gemm=t_ours / t_gemm,
               ours_tflops=flops / t_ours / 1e9, gemm_tflops=flops / t_gemm / 1e9)
    return rec


def bench_topk(n_rows, n_cols, k, repeats, seed=0):
    import torch

    from metarec_fast import ops

    g = torch.Generator(device="cuda").manual_seed(seed)
    s = torch.randn(n_rows, n_cols, device="cuda", generator=g)
    name = "topk (explicit scores) float32"
    shape = f"{n_rows}x{n_cols} k={k}"
    ids, vals = ops.topk(s, k)
    n_check = min(n_rows, 64)
    rids, rvals = ops.topk(s[:n_check].cpu().numpy(), k, num_threads=-1)
    problem = None
    if not (np.array_equal(ids[:n_check].cpu().numpy(), rids)
            and np.array_equal(vals[:n_check].cpu().numpy(), rvals)):
        problem = "differs from the CPU topk"
    rec = {"case": name, "shape": shape, "ok": problem is None, "problem": problem}
    if problem is None:
        t_ours = cuda_median_ms(lambda: ops.topk(s, k), repeats, warmup=1)
        t_torch = cuda_median_ms(lambda: torch.topk(s, k, dim=1), repeats, warmup=1)
        rec.update(ours_ms=t_ours, torch_ms=t_torch, speedup_vs_torch=t_torch / t_ours)
    return rec


def fmt(x, spec=".1f"):
    return "—" if x is None else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import torch

    from metarec_fast import _gpu

    if not _gpu.cuda_available():
        print("gpu_bench_topk: no CUDA build or device; nothing to do", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # the FP32 GEMM, like our kernel
    dev_name = torch.cuda.get_device_name()
    if args.quick:
        cases = [("dot", 10_000, 100_000, 64, 100, torch.float32, False),
                 ("dot", 2_000, 100_000, 64, 100, torch.float64, False),
                 ("dot", 10_000, 100_000, 64, 100, torch.float32, True),
                 ("rows", 2_000, 100_000, 100)]
    else:
        cases = [("dot", 100_000, 1_000_000, 64, 100, torch.float32, False),
                 ("dot", 100_000, 1_000_000, 64, 100, torch.float32, True),
                 ("dot", 10_000, 1_000_000, 64, 100, torch.float64, False),
                 ("dot", 1_000, 1_000_000, 64, 1000, torch.float32, False),
                 ("dot", 16, 1_000_000, 64, 100, torch.float32, False),
                 ("rows", 10_000, 100_000, 100)]
    results = []
    failed = False
    for case in cases:
        t0 = time.perf_counter()
        try:
            if case[0] == "dot":
                _, nq, ni, d, k, dtype, excl = case
                rec = bench_topk_dot(nq, ni, d, k, dtype, args.repeats, excl, n_check=256)
            else:
                _, n, m, k = case
                rec = bench_topk(n, m, k, args.repeats)
        except Exception as exc:  # report and go on with the other cases
            rec = {"case": str(case[:1]), "shape": str(case[1:]), "ok": False,
                   "problem": f"{type(exc).__name__}: {exc}"}
        rec["wall_s"] = time.perf_counter() - t0
        rec["device"] = dev_name
        results.append(rec)
        failed |= not rec["ok"]
        print(json.dumps(rec), file=sys.stderr, flush=True)
        torch.cuda.empty_cache()

    print(f"\n### top-k on {dev_name}\n")
    print("| case | shape | ours ms | ours ms (1 block/SM) | torch ms | GEMM ms | vs torch | "
          "ours/GEMM | ours TFLOP/s | ok |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['case']} | {r['shape']} | {fmt(r.get('ours_ms'))} | "
              f"{fmt(r.get('ours_1block_ms'))} | {fmt(r.get('torch_ms'))} | "
              f"{fmt(r.get('gemm_ms'))} | {fmt(r.get('speedup_vs_torch'), '.2f')}x | "
              f"{fmt(r.get('ours_over_gemm'), '.2f')} | {fmt(r.get('ours_tflops'))} | "
              f"{'yes' if r['ok'] else 'NO: ' + str(r['problem'])} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"benchmark": "topk", "device": dev_name, "results": results}, fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
