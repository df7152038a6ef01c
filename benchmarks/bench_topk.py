"""Top-k benchmarks: metarec_fast.ops.topk_dot / topk against their peers.

Run (not part of the test suite):

    python -m pytest benchmarks/bench_topk.py --benchmark-group-by=group
    python -m pytest benchmarks/bench_topk.py -k small      # quick run

Groups (one per shape; every peer in a group solves the same problem):

* ``topk_dot-<nq>x<ni>x<d>-k<k>-excl50``: top-k of queries @ items.T with 50
  excluded items per query. Peers: ours (fused, never builds the score
  matrix), torch (matmul + masked fill + topk), numpy (matmul + argpartition
  in 1,000-row blocks), faiss IndexFlatIP (search k + 50, then drop the
  excluded), implicit.cpu.topk.topk (filter_query_items), and a plain sgemm
  of the same shape (torch.mm, no selection: the speed limit).
* ``topk-<n>x<m>-k<k>``: top-k of an explicit score matrix (ours, torch.topk,
  numpy argpartition).

Each benchmark first checks its result against a float64 numpy reference on
a subset of rows (tolerance-aware: ids may differ only between scores equal
up to float32 rounding), then times. Thread count: METAREC_BENCH_THREADS
(default 2) for every peer.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import pytest
import scipy.sparse as sp

from metarec_fast import ops

THREADS = int(os.environ.get("METAREC_BENCH_THREADS", "2"))
N_EXCL = 50
CHECK_ROWS = 200

DOT_SHAPES = {
    "small": (1_000, 20_000, 64, 10),
    "target": (10_000, 50_000, 64, 10),
}
EXPLICIT_SHAPES = {
    "small": (500, 20_000, 10),
    "large": (2_000, 50_000, 10),
}


# ------------------------------------------------------------------ data


@lru_cache(maxsize=2)
def dot_problem(name):
    nq, ni, d, k = DOT_SHAPES[name]
    rng = np.random.default_rng(42)
    q = rng.standard_normal((nq, d), dtype=np.float32)
    it = rng.standard_normal((ni, d), dtype=np.float32)
    cols = np.sort(np.stack([rng.choice(ni, N_EXCL, replace=False) for _ in range(nq)]), axis=1)
    indptr = np.arange(0, nq * N_EXCL + 1, N_EXCL, dtype=np.int64)
    excl = sp.csr_matrix((np.ones(nq * N_EXCL, np.float32), cols.ravel(), indptr), shape=(nq, ni))
    exact = q[:CHECK_ROWS].astype(np.float64) @ it.astype(np.float64).T
    return q, it, k, excl, exact


@lru_cache(maxsize=1)
def explicit_problem(name):
    n, m, k = EXPLICIT_SHAPES[name]
    rng = np.random.default_rng(7)
    return rng.standard_normal((n, m), dtype=np.float32), k


def check_topk(ids, exact, k, excl=None, tol=None):
    """ids (first rows) form a top-k of `exact` up to float32 rounding, excluded items absent."""
    ids = np.asarray(ids)[: exact.shape[0]]
    if tol is None:
        tol = 1e-5 * (1.0 + np.abs(exact).max())
    for r in range(exact.shape[0]):
        row = exact[r].copy()
        if excl is not None:
            banned = excl.indices[excl.indptr[r] : excl.indptr[r + 1]]
            assert not np.isin(ids[r], banned).any(), f"row {r}: excluded id returned"
            row[banned] = -np.inf
        assert ids[r].shape == (k,) and len(set(ids[r].tolist())) == k, f"row {r}: bad ids"
        kth = np.partition(row, -k)[-k]
        got = row[ids[r]]
        assert got.min() >= kth - tol, f"row {r}: {got.min()} below k-th score {kth}"
        assert np.all(np.diff(got) <= tol), f"row {r}: not sorted"


def run_checked(benchmark, fn, check, rounds):
    check(fn())
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


# ------------------------------------------------------------------ fused top-k


def _rounds(name):
    return 3 if name == "target" else 5


def _dot_group(name):
    nq, ni, d, k = DOT_SHAPES[name]
    return f"topk_dot-{nq}x{ni}x{d}-k{k}-excl{N_EXCL}"


@pytest.mark.parametrize("name", list(DOT_SHAPES))
def test_topk_dot_ours(benchmark, name):
    benchmark.group = _dot_group(name)
    q, it, k, excl, exact = dot_problem(name)
    run_checked(
        benchmark,
        lambda: ops.topk_dot(q, it, k, exclude=excl, num_threads=THREADS)[0],
        lambda ids: check_topk(ids, exact, k, excl),
        _rounds(name),
    )


@pytest.mark.parametrize("name", list(DOT_SHAPES))
def test_topk_dot_torch(benchmark, name):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    benchmark.group = _dot_group(name)
    q, it, k, excl, exact = dot_problem(name)
    tq, ti = torch.from_numpy(q), torch.from_numpy(it)
    coo = excl.tocoo()
    rows = torch.from_numpy(coo.row.astype(np.int64))
    cols = torch.from_numpy(coo.col.astype(np.int64))

    def run():
        scores = tq @ ti.T
        scores.index_put_((rows, cols), torch.tensor(float("-inf")))  # masked fill
        return torch.topk(scores, k, dim=1).indices.numpy()

    run_checked(benchmark, run, lambda ids: check_topk(ids, exact, k, excl), _rounds(name))


@pytest.mark.parametrize("name", list(DOT_SHAPES))
def test_topk_dot_numpy(benchmark, name):
    benchmark.group = _dot_group(name)
    q, it, k, excl, exact = dot_problem(name)
    block = 1_000

    def run():
        out = np.empty((q.shape[0], k), np.int64)
        for start in range(0, q.shape[0], block):
            stop = min(start + block, q.shape[0])
            scores = q[start:stop] @ it.T
            sub = excl[start:stop].tocoo()
            scores[sub.row, sub.col] = -np.inf
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            vals = np.take_along_axis(scores, part, axis=1)
            order = np.lexsort((part, -vals), axis=1)
            out[start:stop] = np.take_along_axis(part, order, axis=1)
        return out

    run_checked(benchmark, run, lambda ids: check_topk(ids, exact, k, excl), _rounds(name))


@pytest.mark.parametrize("name", list(DOT_SHAPES))
def test_topk_dot_faiss(benchmark, name):
    faiss = pytest.importorskip("faiss")
    faiss.omp_set_num_threads(THREADS)
    benchmark.group = _dot_group(name)
    q, it, k, excl, exact = dot_problem(name)
    index = faiss.IndexFlatIP(q.shape[1])
    index.add(it)
    banned = excl.indices.reshape(q.shape[0], N_EXCL)

    def run():
        # No per-query filter in a flat index: ask for k + |excluded| and drop them.
        _, found = index.search(q, k + N_EXCL)
        keep = ~(found[:, :, None] == banned[:, None, :]).any(axis=2)
        pos = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(found, pos, axis=1)

    run_checked(benchmark, run, lambda ids: check_topk(ids, exact, k, excl), _rounds(name))


@pytest.mark.parametrize("name", list(DOT_SHAPES))
def test_topk_dot_implicit(benchmark, name):
    topk_mod = pytest.importorskip("implicit.cpu.topk")
    from threadpoolctl import threadpool_limits

    benchmark.group = _dot_group(name)
    q, it, k, excl, exact = dot_problem(name)
    filt = excl.astype(np.float32).tocsr()
    filt.indices = filt.indices.astype(np.int32)
    filt.indptr = filt.indptr.astype(np.int32)

    def run():
        # implicit's own advice: one BLAS thread, parallelism over query batches.
        with threadpool_limits(1, "blas"):
            ids, _ = topk_mod.topk(it, q, k, filter_query_items=filt, num_threads=THREADS)
        return ids

    run_checked(benchmark, run, lambda ids: check_topk(ids, exact, k, excl), _rounds(name))


@pytest.mark.parametrize("name", list(DOT_SHAPES))
def test_topk_dot_sgemm_only(benchmark, name):
    """The speed limit: the same GEMM with nothing selected (torch.mm, MKL/oneDNN)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    benchmark.group = _dot_group(name)
    q, it, k, excl, exact = dot_problem(name)
    tq, ti = torch.from_numpy(q), torch.from_numpy(it)

    def check(scores):
        np.testing.assert_allclose(scores[:CHECK_ROWS].numpy(), exact, rtol=0,
                                   atol=1e-4 * (1 + np.abs(exact).max()))

    run_checked(benchmark, lambda: torch.mm(tq, ti.T), check, _rounds(name))


# ------------------------------------------------------------------ explicit scores


def _explicit_group(name):
    n, m, k = EXPLICIT_SHAPES[name]
    return f"topk-{n}x{m}-k{k}"


def _explicit_ref(scores):
    return scores[:CHECK_ROWS].astype(np.float64)


@pytest.mark.parametrize("name", list(EXPLICIT_SHAPES))
def test_topk_ours(benchmark, name):
    benchmark.group = _explicit_group(name)
    scores, k = explicit_problem(name)
    exact = _explicit_ref(scores)
    run_checked(benchmark, lambda: ops.topk(scores, k, num_threads=THREADS)[0],
                lambda ids: check_topk(ids, exact, k, tol=0.0), 5)


@pytest.mark.parametrize("name", list(EXPLICIT_SHAPES))
def test_topk_torch(benchmark, name):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    benchmark.group = _explicit_group(name)
    scores, k = explicit_problem(name)
    exact = _explicit_ref(scores)
    ts = torch.from_numpy(scores)
    run_checked(benchmark, lambda: torch.topk(ts, k, dim=1).indices.numpy(),
                lambda ids: check_topk(ids, exact, k, tol=0.0), 5)


@pytest.mark.parametrize("name", list(EXPLICIT_SHAPES))
def test_topk_numpy(benchmark, name):
    benchmark.group = _explicit_group(name)
    scores, k = explicit_problem(name)
    exact = _explicit_ref(scores)

    def run():
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)
        return np.take_along_axis(part, order, axis=1)

    run_checked(benchmark, run, lambda ids: check_topk(ids, exact, k, tol=0.0), 5)
