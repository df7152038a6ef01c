"""Micro-benchmark helpers, in one place: the best-of-N timer, the quick
kernel-vs-peer table behind ``metarec-fast bench`` (each result checked against
its peer before it is timed) and the memory-bandwidth probe the embedding
benchmarks compare with. Private: for the command line and ``benchmarks/``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import numpy as np

from . import _core
from ._config import resolve_num_threads


def time_calls(fn: Any, repeats: int, reduce: Any = min) -> float:
    """Seconds per call of ``fn``: ``reduce`` (``min``, ``np.median`` ...) of
    ``repeats`` timed calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(reduce(times))


def best_time(fn: Any, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    return time_calls(fn, repeats, min)


def bench_rows(repeats: int = 3, scale: float = 1.0) -> list[dict[str, Any]]:
    """Quick timings of the kernels against their torch / numpy peers (results checked first)."""
    import torch

    from . import metrics, ops

    rng = np.random.default_rng(0)
    rows = []

    def add(kernel: str, shape: str, ours: float, peer_name: str, peer: float) -> None:
        rows.append({"kernel": kernel, "shape": shape, "metarec_ms": ours * 1e3, "peer": peer_name,
                     "peer_ms": peer * 1e3, "speedup": peer / ours if ours > 0 else math.inf})

    # top-k of users @ items.T + bias
    nq, ni, d, k = max(1, int(256 * scale)), max(10, int(20000 * scale)), 64, 10
    q = rng.standard_normal((nq, d), dtype=np.float32)
    it = rng.standard_normal((ni, d), dtype=np.float32)
    bias = rng.standard_normal(ni, dtype=np.float32)
    tq, ti, tb = map(torch.from_numpy, (q, it, bias))
    ids, _ = ops.topk_dot(q, it, k, item_bias=bias)
    ref = torch.topk(tq @ ti.T + tb, k).indices.numpy()
    if (ids != ref).mean() > 0.01:
        raise RuntimeError("bench: topk_dot disagrees with torch")
    add("topk_dot", f"{nq}x{ni}xd{d} k{k}", best_time(lambda: ops.topk_dot(q, it, k, item_bias=bias), repeats),
        "torch matmul+topk", best_time(lambda: torch.topk(tq @ ti.T + tb, k), repeats))

    # embedding bags (sum)
    rows_, bags, bag = max(10, int(100000 * scale)), max(1, int(20000 * scale)), 20
    table = rng.standard_normal((rows_, 64), dtype=np.float32)
    idx = rng.integers(0, rows_, bags * bag)
    offsets = np.arange(bags, dtype=np.int64) * bag
    tt, tidx, toff = torch.from_numpy(table), torch.from_numpy(idx), torch.from_numpy(offsets)
    import torch.nn.functional as F

    ours = ops.embedding_bag(table, idx, offsets, mode="sum")
    if not np.allclose(ours, F.embedding_bag(tidx, tt, toff, mode="sum").numpy(), atol=1e-4):
        raise RuntimeError("bench: embedding_bag disagrees with torch")
    add("embedding_bag", f"{bags} bags x {bag} of {rows_}x64",
        best_time(lambda: ops.embedding_bag(table, idx, offsets, mode="sum"), repeats),
        "torch embedding_bag", best_time(lambda: F.embedding_bag(tidx, tt, toff, mode="sum"), repeats))

    # ranking metrics
    nu, nitems, kk = max(1, int(5000 * scale)), 2000, 20
    top = np.stack([rng.choice(nitems, kk, replace=False) for _ in range(nu)]).astype(np.int64)
    lens = rng.integers(1, 30, nu)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    rel = np.concatenate([rng.choice(nitems, n, replace=False) for n in lens]).astype(np.int64)

    def numpy_ndcg() -> float:
        disc = 1.0 / np.log2(np.arange(2, 12))
        total = 0.0
        for u in range(nu):
            r = rel[indptr[u]:indptr[u + 1]]
            hits = np.isin(top[u, :10], r)
            total += float((hits * disc).sum() / disc[:min(10, r.size)].sum())
        return total / nu

    got = metrics.ranking(top, (indptr, rel), ks=(10,)).mean["ndcg@10"]
    if abs(got - numpy_ndcg()) > 1e-9:
        raise RuntimeError("bench: metrics.ranking disagrees with numpy")
    add("metrics.ranking", f"{nu} users, top-{kk}, ndcg@10",
        best_time(lambda: metrics.ranking(top, (indptr, rel), ks=(10,)), repeats),
        "numpy per-user loop", best_time(numpy_ndcg, max(1, repeats // 2)))

    # inner loop + exact meta-gradient (second-order MAML)
    from .meta import MetaLearner, TaskBatch
    from .models import MetaMF

    nu2, n_items2, ns = max(1, int(256 * scale)), 2000, 20
    sup, qry = [], []
    for _ in range(nu2):
        items = rng.choice(n_items2, 2 * ns, replace=False)
        r = rng.integers(1, 6, 2 * ns).astype(float)
        sup.append((items[:ns].tolist(), r[:ns].tolist()))
        qry.append((items[ns:].tolist(), r[ns:].tolist()))
    batch = TaskBatch.from_lists(sup, qry, dtype=torch.float32)
    learners = {e: MetaLearner(MetaMF(n_items2, dim=32, random_state=0, global_bias=3.0), "maml", inner_steps=5,
                               inner_lr=0.05, engine=e) for e in ("cpp", "torch")}

    def grad(engine: str) -> Any:
        learner = learners[engine]
        learner.zero_grad(set_to_none=True)
        learner(batch).backward()
        return learner.model.item_embedding.grad

    if not torch.allclose(grad("cpp"), grad("torch"), atol=1e-4, rtol=1e-3):
        raise RuntimeError("bench: the cpp and torch engines disagree")
    add("adapt fwd+bwd (MAML)", f"{nu2} users x {ns}+{ns}, d32, T5", best_time(lambda: grad("cpp"), repeats),
        "torch.func engine", best_time(lambda: grad("torch"), repeats))
    return rows


def copy_bandwidth(nbytes: int = 1 << 28, repeats: int = 5, num_threads: Optional[int] = None) -> float:
    """Measured parallel memcpy bandwidth in GB/s (bytes read + written)."""
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    threads = resolve_num_threads(num_threads)
    _core._parallel_copy(src, dst, threads)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _core._parallel_copy(src, dst, threads)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9

