"""Microbenchmarks: metarec_fast.metrics against vectorised numpy.

Run (not part of the test suite):

    python -m pytest benchmarks/bench_metrics.py --benchmark-columns=median,min,rounds

Thread count: METAREC_BENCH_THREADS (default 2).
Each benchmark first asserts that its result equals the numpy reference, then
times it. Issue 2's target (2 threads): metrics.ranking, 100,000 queries,
k=100, at least 20x faster than the numpy implementation below.

The numpy peer is what a careful user would write (RecBole's idea, vectorised):
a hit matrix from one searchsorted of (query, item) keys against the sorted
relevant keys, then cumulative sums along the rank axis for every cutoff.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from metarec_fast import metrics as M

THREADS = int(os.environ.get("METAREC_BENCH_THREADS", "2"))
N_QUERIES = 100_000
N_ITEMS = 50_000
K = 100


# ------------------------------------------------------------------ data


def make_ranking_case(n_queries=N_QUERIES, n_items=N_ITEMS, k=K, seed=0):
    """Top-k rows of distinct ids (as a real top-k returns) with a little -1
    padding, and relevant sets of 0..40 items, about half of them inside the
    row so that hits happen at every rank."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, n_items // k, size=(n_queries, k))
    top = (rng.integers(0, n_items, size=(n_queries, 1)) + np.cumsum(steps, axis=1)) % n_items
    top = rng.permuted(top, axis=1)
    top[:, -3:][rng.random((n_queries, 3)) < 0.05] = -1  # short rows, padded
    n_rel = rng.integers(0, 41, size=n_queries)
    n_in = rng.binomial(n_rel, 0.5)
    rows_in = np.repeat(np.arange(n_queries), n_in)
    pos_in = (rng.random(rows_in.size) * k).astype(np.int64)  # may repeat: summed below
    rows_out = np.repeat(np.arange(n_queries), n_rel - n_in)
    items_out = rng.integers(0, n_items, size=rows_out.size)
    rows = np.concatenate([rows_in, rows_out])
    items = np.concatenate([top[rows_in, pos_in], items_out])
    keep = items >= 0
    rel = sp.csr_matrix(
        (np.ones(int(keep.sum())), (rows[keep], items[keep])), shape=(n_queries, n_items)
    )
    rel.sum_duplicates()
    rel.data = rng.integers(0, 6, size=rel.nnz).astype(np.float64)  # graded relevance
    return top.astype(np.int64), rel


def numpy_ranking(top, rel, ks):
    """Vectorised numpy ranking metrics (binary relevance; k <= K)."""
    n_q, n_cols = top.shape
    n_items = rel.shape[1]
    max_k = max(ks)
    top = top[:, :max_k]
    indptr = rel.indptr.astype(np.int64)
    n_rel = np.diff(indptr)
    keys = np.repeat(np.arange(n_q, dtype=np.int64), n_rel) * n_items + rel.indices
    want = np.arange(n_q, dtype=np.int64)[:, None] * n_items + top
    pos = np.searchsorted(keys, want)
    hit = (keys[np.minimum(pos, keys.size - 1)] == want) & (top >= 0) if keys.size else top < -1
    ranks = np.arange(1, max_k + 1)
    disc = 1.0 / np.log2(ranks + 1.0)
    cum = np.cumsum(hit, axis=1)
    dcg = np.cumsum(hit * disc, axis=1)
    idcg = np.concatenate([[0.0], np.cumsum(disc)])
    ap = np.cumsum(np.where(hit, cum / ranks, 0.0), axis=1)
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.iinfo(np.int64).max)
    ev = n_rel > 0
    nrel = np.where(ev, n_rel, 1)
    out = {}
    for k in ks:
        h = cum[:, k - 1]
        cap = np.minimum(k, nrel)
        vals = {
            "precision": h / k,
            "recall": h / nrel,
            "recall_capped": h / cap,
            "ndcg": dcg[:, k - 1] / idcg[cap],
            "hr": (h > 0).astype(np.float64),
            "map": ap[:, k - 1] / cap,
            "mrr": np.where(first <= k, 1.0 / first, 0.0),
        }
        for name, v in vals.items():
            out[f"{name}@{k}"] = np.where(ev, v, np.nan)
    mean = {key: float(v[ev].mean()) for key, v in out.items()}
    return out, mean


def assert_same(res, ref):
    per_query, mean = ref
    for key, want in per_query.items():
        np.testing.assert_allclose(res.per_query[key], want, rtol=1e-12, atol=1e-14, err_msg=key)
        np.testing.assert_allclose(res.mean[key], mean[key], rtol=1e-10, err_msg=key)


@pytest.fixture(scope="module")
def ranking_case():
    return make_ranking_case()


# --------------------------------------------------------------- ranking

ALL_KS = (5, 10, 20, 50, 100)


@pytest.mark.benchmark(group="metrics.ranking 100k x k=100, ks=(5,10,20,50,100)")
def test_ranking_all_ks_metarec(benchmark, ranking_case):
    top, rel = ranking_case
    assert_same(M.ranking(top, rel, ks=ALL_KS, num_threads=THREADS), numpy_ranking(top, rel, ALL_KS))
    benchmark.pedantic(M.ranking, args=(top, rel, ALL_KS), kwargs={"num_threads": THREADS},
                       rounds=15, warmup_rounds=1)


@pytest.mark.benchmark(group="metrics.ranking 100k x k=100, ks=(5,10,20,50,100)")
def test_ranking_all_ks_metarec_graded(benchmark, ranking_case):
    top, rel = ranking_case
    assert_same(M.ranking(top, rel, ks=ALL_KS, gains="data", num_threads=THREADS),
                numpy_ranking(top, rel, ALL_KS))
    benchmark.pedantic(M.ranking, args=(top, rel, ALL_KS, "data"), kwargs={"num_threads": THREADS},
                       rounds=15, warmup_rounds=1)


@pytest.mark.benchmark(group="metrics.ranking 100k x k=100, ks=(5,10,20,50,100)")
def test_ranking_all_ks_numpy(benchmark, ranking_case):
    top, rel = ranking_case
    benchmark.pedantic(numpy_ranking, args=(top, rel, ALL_KS), rounds=3, warmup_rounds=0)


@pytest.mark.benchmark(group="metrics.ranking 100k x k=100, ks=(100,)")
def test_ranking_k100_metarec(benchmark, ranking_case):
    top, rel = ranking_case
    assert_same(M.ranking(top, rel, ks=100, num_threads=THREADS), numpy_ranking(top, rel, (100,)))
    benchmark.pedantic(M.ranking, args=(top, rel, 100), kwargs={"num_threads": THREADS},
                       rounds=15, warmup_rounds=1)


@pytest.mark.benchmark(group="metrics.ranking 100k x k=100, ks=(100,)")
def test_ranking_k100_numpy(benchmark, ranking_case):
    top, rel = ranking_case
    benchmark.pedantic(numpy_ranking, args=(top, rel, (100,)), rounds=3, warmup_rounds=0)


# ---------------------------------------------------------------- rating

N_RATINGS = 2_000_000


@pytest.fixture(scope="module")
def rating_case():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 60, size=N_RATINGS // 30)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    n = int(indptr[-1])
    return (rng.random(n) * 5).astype(np.float32), rng.integers(1, 6, size=n).astype(np.float32), indptr


def numpy_rating(pred, true, indptr):
    d = pred.astype(np.float64) - true
    a, s = np.abs(d), d * d
    starts = indptr[:-1]
    n = np.diff(indptr)
    user_mae = np.add.reduceat(a, starts) / n
    user_rmse = np.sqrt(np.add.reduceat(s, starts) / n)
    return {"mae": a.mean(), "rmse": np.sqrt(s.mean()), "user_mae": user_mae, "user_rmse": user_rmse}


@pytest.mark.benchmark(group="metrics.rating 2M rows, per user")
def test_rating_metarec(benchmark, rating_case):
    pred, true, indptr = rating_case
    got, ref = M.rating(pred, true, indptr, num_threads=THREADS), numpy_rating(pred, true, indptr)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-9)
    benchmark.pedantic(M.rating, args=(pred, true, indptr), kwargs={"num_threads": THREADS},
                       rounds=15, warmup_rounds=1)


@pytest.mark.benchmark(group="metrics.rating 2M rows, per user")
def test_rating_numpy(benchmark, rating_case):
    pred, true, indptr = rating_case
    benchmark.pedantic(numpy_rating, args=(pred, true, indptr), rounds=5, warmup_rounds=1)


# ------------------------------------------------------------ query nDCG

QUERY_KS = (1, 3, 5, 10)


def numpy_query_ndcg(pred, true, indptr, ks):
    """Vectorised within-query nDCG: lexsort by (user, -pred, position), ranks
    within each user, scatter gains into a dense [n_users, max_k] grid."""
    n_users = indptr.shape[0] - 1
    sizes = np.diff(indptr)
    user = np.repeat(np.arange(n_users), sizes)
    rank = np.arange(pred.shape[0]) - np.repeat(indptr[:-1], sizes)
    max_k = max(ks)
    gain = np.exp2(true.astype(np.float64)) - 1.0
    disc = 1.0 / np.log2(np.arange(2, max_k + 2))

    def dcg_grid(order):
        g = np.zeros((n_users, max_k))
        keep = rank < max_k
        g[user[keep], rank[keep]] = gain[order][keep]
        return np.cumsum(g * disc, axis=1)

    by_pred = np.lexsort((np.arange(pred.shape[0]), -pred.astype(np.float64), user))
    by_true = np.lexsort((-gain, user))
    dcg, idcg = dcg_grid(by_pred), dcg_grid(by_true)
    out = {}
    ev = idcg[:, 0] > 0
    for k in ks:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"ndcg@{k}"] = np.where(ev, dcg[:, k - 1] / idcg[:, k - 1], np.nan)
    return out, {key: float(v[ev].mean()) for key, v in out.items()}


@pytest.fixture(scope="module")
def query_case():
    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 40, size=50_000)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    n = int(indptr[-1])
    pred = (rng.integers(0, 50, size=n) / 10).astype(np.float32)  # ties happen
    true = rng.integers(1, 6, size=n).astype(np.float32)
    return pred, true, indptr


@pytest.mark.benchmark(group="metrics.query_ndcg 50k users x 1..39 items")
def test_query_ndcg_metarec(benchmark, query_case):
    pred, true, indptr = query_case
    assert_same(M.query_ndcg(pred, true, indptr, QUERY_KS, num_threads=THREADS),
                numpy_query_ndcg(pred, true, indptr, QUERY_KS))
    benchmark.pedantic(M.query_ndcg, args=(pred, true, indptr, QUERY_KS),
                       kwargs={"num_threads": THREADS}, rounds=15, warmup_rounds=1)


@pytest.mark.benchmark(group="metrics.query_ndcg 50k users x 1..39 items")
def test_query_ndcg_numpy(benchmark, query_case):
    pred, true, indptr = query_case
    benchmark.pedantic(numpy_query_ndcg, args=(pred, true, indptr, QUERY_KS), rounds=5,
                       warmup_rounds=1)
