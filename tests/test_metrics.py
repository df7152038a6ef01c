"""metarec_fast.metrics against direct per-query pure-Python references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fuzzing import examples

from metarec_fast import metrics as M

NAN = float("nan")


# ------------------------------------------------------------- references


def disc(r: int) -> float:
    """Discount of 0-based rank r."""
    return 1.0 / math.log2(r + 2)


def ref_ranking(top, rel_rows, ks, gain_rows=None):
    """Per-query, per-cutoff metrics straight from the definitions.

    top: list of lists of ids (-1 = padding); rel_rows: list of lists of
    relevant ids; gain_rows: list of lists of g aligned with rel_rows.
    Returns {"name@k": np.array per query}.
    """
    names = list(M.RANKING_METRICS) + (["ndcg_graded"] if gain_rows is not None else [])
    out = {f"{m}@{k}": [] for m in names for k in ks}
    for q, row in enumerate(top):
        rel = list(rel_rows[q])
        g = dict(zip(rel, gain_rows[q])) if gain_rows is not None else None
        if not rel:
            for key in out:
                out[key].append(NAN)
            continue
        seen, hit_ranks = set(), []  # 0-based ranks of first occurrences of relevant ids
        for r, i in enumerate(row):
            if i in rel and i not in seen:
                seen.add(i)
                hit_ranks.append(r)
        for k in ks:
            h = [r for r in hit_ranks if r < k]
            cap = min(k, len(rel))
            out[f"precision@{k}"].append(len(h) / k)
            out[f"recall@{k}"].append(len(h) / len(rel))
            out[f"recall_capped@{k}"].append(len(h) / cap)
            out[f"ndcg@{k}"].append(sum(disc(r) for r in h) / sum(disc(r) for r in range(cap)))
            out[f"hr@{k}"].append(1.0 if h else 0.0)
            out[f"map@{k}"].append(sum((n + 1) / (r + 1) for n, r in enumerate(h)) / cap)
            out[f"mrr@{k}"].append(1.0 / (h[0] + 1) if h else 0.0)
            if g is not None:
                dcg = sum((2.0 ** g[row[r]] - 1) * disc(r) for r in h)
                ideal = sorted((2.0 ** v - 1 for v in g.values()), reverse=True)[:cap]
                idcg = sum(v * disc(r) for r, v in enumerate(ideal))
                out[f"ndcg_graded@{k}"].append(dcg / idcg if idcg > 0 else 0.0)
    return {k: np.array(v, dtype=np.float64) for k, v in out.items()}


def ref_query_ndcg(pred, true, indptr, ks):
    out = {f"ndcg@{k}": [] for k in ks}
    for u in range(len(indptr) - 1):
        p = list(pred[indptr[u] : indptr[u + 1]])
        t = list(true[indptr[u] : indptr[u + 1]])
        ideal = sorted((2.0 ** v - 1 for v in t), reverse=True)
        order = sorted(range(len(p)), key=lambda i: (-p[i], i))
        for k in ks:
            idcg = sum(v * disc(r) for r, v in enumerate(ideal[:k]))
            if idcg <= 0:
                out[f"ndcg@{k}"].append(NAN)
                continue
            dcg = sum((2.0 ** t[i] - 1) * disc(r) for r, i in enumerate(order[:k]))
            out[f"ndcg@{k}"].append(dcg / idcg)
    return {k: np.array(v, dtype=np.float64) for k, v in out.items()}


def rows_of(csr):
    return [list(csr.indices[csr.indptr[q] : csr.indptr[q + 1]]) for q in range(csr.shape[0])]


def data_rows_of(csr):
    return [list(csr.data[csr.indptr[q] : csr.indptr[q + 1]]) for q in range(csr.shape[0])]


def assert_matches(res, ref, n_queries):
    assert set(res.per_query) == set(ref)
    for key, want in ref.items():
        got = res.per_query[key]
        assert got.dtype == np.float64 and got.shape == (n_queries,)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=key)
        ev = ~np.isnan(want)
        mean = float(np.mean(want[ev])) if ev.any() else NAN
        np.testing.assert_allclose(res.mean[key], mean, rtol=1e-12, atol=1e-14, err_msg=key)
    n_eval = int((~np.isnan(next(iter(ref.values())))).sum()) if ref else 0
    assert res.n_evaluated == n_eval
    assert res.n_skipped == n_queries - n_eval


def random_case(rng, n_queries, n_items, K, max_rel, pad_frac=0.1, dup_frac=0.05):
    """A random top-k matrix (with padding and duplicates) and relevant CSR with gains."""
    top = rng.integers(0, n_items, size=(n_queries, K))
    top[rng.random(top.shape) < pad_frac] = -1
    dup = rng.random(top.shape) < dup_frac
    if K > 1:
        top[:, 1:][dup[:, 1:]] = top[:, :-1][dup[:, 1:]]
    rows, cols = [], []
    for q in range(n_queries):
        n = int(rng.integers(0, max_rel + 1))
        # bias relevant items towards the top-k row so hits happen
        pool = np.unique(np.concatenate([top[q][top[q] >= 0], rng.integers(0, n_items, size=n)]))
        c = rng.choice(pool, size=min(n, pool.size), replace=False) if pool.size else np.array([], int)
        rows += [q] * len(c)
        cols += list(c)
    data = rng.integers(0, 6, size=len(rows)).astype(np.float64)
    rel = sp.csr_matrix((data, (rows, cols)), shape=(n_queries, n_items))
    rel.sort_indices()
    return top, rel


# ---------------------------------------------------------- hand-computed


def test_hand_computed_single_query():
    # relevant {3, 4, 8}; hits at ranks 2 (id 3) and 5 (id 4)
    top = np.array([[7, 3, 9, 1, 4]])
    gains = {3: 2.0, 4: 1.0, 8: 3.0}
    rel = sp.csr_matrix(
        (list(gains.values()), ([0, 0, 0], list(gains.keys()))), shape=(1, 10)
    )
    res = M.ranking(top, rel, ks=(1, 2, 5), gains="data")
    l3, l6 = math.log2(3), math.log2(6)
    assert res.per_query["precision@5"][0] == pytest.approx(2 / 5)
    assert res.per_query["recall@5"][0] == pytest.approx(2 / 3)
    assert res.per_query["recall@2"][0] == pytest.approx(1 / 3)
    assert res.per_query["recall_capped@2"][0] == pytest.approx(1 / 2)
    assert res.per_query["ndcg@5"][0] == pytest.approx((1 / l3 + 1 / l6) / (1 + 1 / l3 + 1 / 2))
    assert res.per_query["ndcg@2"][0] == pytest.approx((1 / l3) / (1 + 1 / l3))
    assert res.per_query["ndcg@1"][0] == 0.0
    assert res.per_query["hr@1"][0] == 0.0 and res.per_query["hr@2"][0] == 1.0
    assert res.per_query["map@5"][0] == pytest.approx((1 / 2 + 2 / 5) / 3)
    assert res.per_query["map@2"][0] == pytest.approx((1 / 2) / 2)
    assert res.per_query["mrr@1"][0] == 0.0 and res.per_query["mrr@5"][0] == pytest.approx(0.5)
    # graded: gains 2^g - 1 = {3: 3, 4: 1, 8: 7}; ideal order 7, 3, 1
    dcg = 3 / l3 + 1 / l6
    idcg = 7 + 3 / l3 + 1 / 2
    assert res.per_query["ndcg_graded@5"][0] == pytest.approx(dcg / idcg)
    assert res.per_query["ndcg_graded@2"][0] == pytest.approx((3 / l3) / (7 + 3 / l3))
    assert res["ndcg@5"] == res.mean["ndcg@5"] == res.per_query["ndcg@5"][0]
    assert res.n_evaluated == 1 and res.n_skipped == 0
    assert list(res.n_relevant) == [3]
    assert res.ks == (1, 2, 5)


def test_perfect_ranking_scores_one():
    top = np.array([[4, 2, 7, 1, 0]])
    rel = (np.array([0, 3]), np.array([2, 4, 7]))
    res = M.ranking(top, rel, ks=(1, 3, 5), n_items=8)
    for k in (1, 3, 5):
        for m in ("ndcg", "recall_capped", "hr", "map", "mrr"):
            assert res.per_query[f"{m}@{k}"][0] == pytest.approx(1.0), (m, k)
    assert res.per_query["precision@5"][0] == pytest.approx(3 / 5)
    assert res.per_query["recall@1"][0] == pytest.approx(1 / 3)


def test_duplicate_id_in_row_counts_once():
    top = np.array([[5, 5, 5, 2]])
    rel = (np.array([0, 2]), np.array([2, 5]))
    res = M.ranking(top, rel, ks=(3, 4))
    assert res.per_query["precision@3"][0] == pytest.approx(1 / 3)
    assert res.per_query["recall@4"][0] == pytest.approx(1.0)
    assert res.per_query["map@4"][0] == pytest.approx((1 + 2 / 4) / 2)


def test_padding_and_cutoff_beyond_row():
    top = np.array([[-1, 3, -1], [1, -1, -1]])
    rel = (np.array([0, 1, 2]), np.array([3, 1]))
    short = M.ranking(top, rel, ks=(1, 2, 10))
    padded = M.ranking(np.hstack([top, -np.ones((2, 7), np.int64)]), rel, ks=(1, 2, 10))
    for key in short.per_query:
        np.testing.assert_array_equal(short.per_query[key], padded.per_query[key])
    assert short.per_query["precision@10"][0] == pytest.approx(0.1)
    assert short.per_query["precision@1"][0] == 0.0
    assert short.per_query["mrr@10"][0] == pytest.approx(0.5)
    assert short.per_query["ndcg@1"][1] == pytest.approx(1.0)


def test_queries_without_relevant_items_are_skipped_and_counted():
    top = np.array([[1, 2], [1, 2], [3, 4], [0, 1]])
    rel = (np.array([0, 2, 2, 3, 3]), np.array([2, 3, 9]))
    res = M.ranking(top, rel, ks=2, n_items=10)
    assert res.n_evaluated == 2 and res.n_skipped == 2
    assert np.isnan(res.per_query["ndcg@2"][[1, 3]]).all()
    np.testing.assert_array_equal(res.evaluated, [True, False, True, False])
    assert res.mean["hr@2"] == pytest.approx(0.5)
    assert res.mean["precision@2"] == pytest.approx((0.5 + 0.0) / 2)
    d = res.to_dict()
    assert d["n_skipped"] == 2 and d["hr@2"] == res.mean["hr@2"]
    assert "per_query" not in d
    assert len(res.to_dict(per_query=True)["per_query"]["hr@2"]) == 4


def test_graded_all_zero_gains_give_zero():
    top = np.array([[1, 2, 3]])
    rel = (np.array([0, 2]), np.array([1, 2]), np.array([0.0, 0.0]))
    res = M.ranking(top, rel, ks=3, gains="data")
    assert res.per_query["ndcg_graded@3"][0] == 0.0
    assert res.per_query["ndcg@3"][0] == pytest.approx(1.0)


def test_ks_sorted_and_deduplicated():
    top = np.array([[1, 2, 3]])
    res = M.ranking(top, (np.array([0, 1]), np.array([2])), ks=[3, 1, 3, np.int64(2)])
    assert res.ks == (1, 2, 3)
    assert list(res.per_query)[:3] == ["precision@1", "precision@2", "precision@3"]


# ---------------------------------------------------- against the reference


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "n_queries,n_items,K,max_rel,ks",
    [(50, 30, 10, 6, (1, 3, 5, 10)), (300, 200, 20, 25, (5, 10, 20, 50)), (7, 5, 3, 5, (2, 8))],
)
def test_random_against_reference(seed, n_queries, n_items, K, max_rel, ks):
    rng = np.random.default_rng(seed)
    top, rel = random_case(rng, n_queries, n_items, K, max_rel)
    ref = ref_ranking(top.tolist(), rows_of(rel), ks, data_rows_of(rel))
    res = M.ranking(top, rel, ks=ks, gains="data", num_threads=1)
    assert_matches(res, ref, n_queries)
    ref_bin = {k: v for k, v in ref.items() if not k.startswith("ndcg_graded")}
    assert_matches(M.ranking(top, rel, ks=ks), ref_bin, n_queries)


def test_fractional_and_large_gains_against_reference():
    rng = np.random.default_rng(9)
    top, rel = random_case(rng, 120, 50, 15, 12)
    g = rng.random(rel.nnz) * 6
    g[::7] = rng.integers(0, 80, size=g[::7].size)  # integers, some past 2^63
    ks = (1, 4, 15, 30)
    res = M.ranking(top, rel, ks=ks, gains=g, num_threads=2)
    gain_rows = [list(g[rel.indptr[q] : rel.indptr[q + 1]]) for q in range(120)]
    assert_matches(res, ref_ranking(top.tolist(), rows_of(rel), ks, gain_rows), 120)


@pytest.mark.parametrize("top_dtype", [np.int32, np.int64, np.int16, np.uint16])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64, np.uint8])
def test_dtypes_and_forms_agree(top_dtype, idx_dtype):
    rng = np.random.default_rng(5)
    top, rel = random_case(rng, 40, 60, 12, 8, pad_frac=0.0 if top_dtype == np.uint16 else 0.1)
    ks = (1, 5, 12)
    base = M.ranking(top, rel, ks=ks, gains="data")
    tup = (rel.indptr.astype(np.int64), rel.indices.astype(idx_dtype), rel.data.astype(np.int32))
    for res in (
        M.ranking(top.astype(top_dtype), tup, ks=ks, gains="data"),
        M.ranking(top.astype(top_dtype), tup, ks=ks, gains=rel.data, n_items=60),
        M.ranking(top, sp.csr_array(rel), ks=ks, gains=rel.data.astype(np.float32)),
        M.ranking(np.asfortranarray(top), rel, ks=ks, gains="data"),  # non-contiguous: one copy
    ):
        for key in base.per_query:
            np.testing.assert_array_equal(res.per_query[key], base.per_query[key], err_msg=key)
            assert res.mean[key] == base.mean[key] or (np.isnan(res.mean[key]) and np.isnan(base.mean[key]))


def test_unsorted_relevant_rows_and_gains_stay_aligned():
    rng = np.random.default_rng(3)
    top, rel = random_case(rng, 60, 40, 10, 8)
    base = M.ranking(top, rel, ks=(3, 10), gains="data")
    indptr, indices, data = rel.indptr.copy(), rel.indices.copy(), rel.data.copy()
    for q in range(60):
        lo, hi = indptr[q], indptr[q + 1]
        perm = rng.permutation(hi - lo) + lo
        indices[lo:hi], data[lo:hi] = indices[perm], data[perm]
    res = M.ranking(top, (indptr, indices), ks=(3, 10), gains=data, n_items=40)
    for key in base.per_query:
        np.testing.assert_array_equal(res.per_query[key], base.per_query[key])


def test_threads_give_identical_results():
    rng = np.random.default_rng(11)
    top, rel = random_case(rng, 3000, 500, 30, 40)  # many chunks of 256 queries
    r1 = M.ranking(top, rel, ks=(1, 5, 10, 30), gains="data", num_threads=1)
    for t in (2, 3, -1, None):
        r2 = M.ranking(top, rel, ks=(1, 5, 10, 30), gains="data", num_threads=t)
        for key in r1.per_query:
            np.testing.assert_array_equal(r1.per_query[key], r2.per_query[key])
            assert r1.mean[key] == r2.mean[key]  # bit-identical means
        assert r1.n_evaluated == r2.n_evaluated


def test_torch_inputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    top, rel = random_case(rng, 20, 30, 6, 5)
    base = M.ranking(top, rel, ks=(2, 6))
    res = M.ranking(torch.from_numpy(top), (torch.from_numpy(rel.indptr.astype(np.int64)),
                                            torch.from_numpy(rel.indices)), ks=(2, 6), n_items=30)
    for key in base.per_query:
        np.testing.assert_array_equal(res.per_query[key], base.per_query[key])


# ------------------------------------------------------------------ edges


def test_empty_inputs():
    res = M.ranking(np.zeros((0, 5), np.int64), sp.csr_matrix((0, 10)), ks=(1, 5))
    assert res.n_evaluated == 0 and res.n_skipped == 0
    assert all(v.shape == (0,) for v in res.per_query.values())
    assert all(np.isnan(v) for v in res.mean.values())
    # K = 0: nothing ranked, every evaluated query scores 0
    res = M.ranking(np.zeros((2, 0), np.int64), (np.array([0, 1, 1]), np.array([3])), ks=(1, 4))
    assert res.n_evaluated == 1 and res.per_query["ndcg@4"][0] == 0.0
    assert np.isnan(res.per_query["ndcg@4"][1])
    # nothing relevant anywhere
    res = M.ranking(np.array([[1, 2]]), sp.csr_matrix((1, 3)), ks=2)
    assert res.n_skipped == 1 and np.isnan(res.mean["recall@2"])


# ------------------------------------------------------------- properties


@st.composite
def ranking_cases(draw):
    n_items = draw(st.integers(1, 12))
    n_queries = draw(st.integers(0, 6))
    K = draw(st.integers(0, 8))
    top = draw(
        st.lists(st.lists(st.integers(-1, n_items - 1), min_size=K, max_size=K),
                 min_size=n_queries, max_size=n_queries)
    )
    rel = draw(st.lists(st.sets(st.integers(0, n_items - 1), max_size=n_items),
                        min_size=n_queries, max_size=n_queries))
    rel = [list(draw(st.permutations(sorted(r)))) for r in rel]  # any order within a row
    gains = [[draw(st.integers(0, 5)) for _ in r] for r in rel]
    ks = draw(st.lists(st.integers(1, 10), min_size=1, max_size=4))
    return n_items, top, rel, gains, ks


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranking_cases())
def test_property_against_reference(case):
    n_items, top, rel, gains, ks = case
    n_queries = len(top)
    K = len(top[0]) if top else 0
    top_arr = np.array(top, dtype=np.int64).reshape(n_queries, K)
    indptr = np.cumsum([0] + [len(r) for r in rel])
    indices = np.array([i for r in rel for i in r], dtype=np.int64)
    g = np.array([x for r in gains for x in r], dtype=np.float64)
    ks_sorted = sorted(set(ks))
    res = M.ranking(top_arr, (indptr, indices), ks=ks, gains=g, n_items=n_items,
                    num_threads=int(n_queries % 2 + 1))
    ref = ref_ranking(top, rel, ks_sorted, gains)
    assert_matches(res, ref, n_queries)
    ev = res.evaluated
    for k in ks_sorted:
        for m in M.RANKING_METRICS + ("ndcg_graded",):
            v = res.per_query[f"{m}@{k}"][ev]
            assert ((v >= 0) & (v <= 1 + 1e-12)).all(), (m, k)
        assert (res.per_query[f"recall_capped@{k}"][ev] >= res.per_query[f"recall@{k}"][ev]).all()
        assert (res.per_query[f"hr@{k}"][ev] >= res.per_query[f"precision@{k}"][ev]).all()
        assert (res.per_query[f"mrr@{k}"][ev] <= res.per_query[f"hr@{k}"][ev]).all()
    for a, b in zip(ks_sorted, ks_sorted[1:]):  # monotone in k
        for m in ("recall", "hr", "mrr"):
            assert (res.per_query[f"{m}@{b}"][ev] >= res.per_query[f"{m}@{a}"][ev]).all()


@settings(max_examples=examples(50), deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 30))
def test_property_padding_extension_is_neutral(seed, extra):
    rng = np.random.default_rng(seed)
    top, rel = random_case(rng, 8, 15, int(rng.integers(0, 6)), 6)
    ks = (1, 3, 10)
    a = M.ranking(top, rel, ks=ks, gains="data")
    b = M.ranking(np.hstack([top, -np.ones((8, extra), np.int64)]), rel, ks=ks, gains="data")
    for key in a.per_query:
        np.testing.assert_array_equal(a.per_query[key], b.per_query[key])


# ------------------------------------------------------------ bad inputs


def _ok_rel():
    return sp.csr_matrix(([1.0, 1.0], ([0, 1], [1, 2])), shape=(2, 5))


def test_ranking_bad_types():
    rel = _ok_rel()
    with pytest.raises(TypeError, match="topk_ids must have an integer dtype, got float64"):
        M.ranking(np.zeros((2, 3)), rel)
    with pytest.raises(TypeError, match="integer dtype, got bool"):
        M.ranking(np.zeros((2, 3), bool), rel)
    with pytest.raises(TypeError, match="CSR"):
        M.ranking(np.zeros((2, 3), np.int64), rel.tocoo())
    with pytest.raises(TypeError, match="relevant must be"):
        M.ranking(np.zeros((2, 3), np.int64), [[1], [2]])
    with pytest.raises(TypeError, match="relevant.indices must have an integer dtype"):
        M.ranking(np.zeros((2, 3), np.int64), (np.array([0, 1, 2]), np.array([1.0, 2.0])))
    with pytest.raises(TypeError, match="gains must have dtype float32 or float64, got bool"):
        M.ranking(np.zeros((2, 3), np.int64), rel, gains=np.array([True, False]))
    with pytest.raises(TypeError, match="n_items must be an int"):
        M.ranking(np.zeros((2, 3), np.int64), (rel.indptr, rel.indices), n_items=5.0)
    with pytest.raises(TypeError, match="num_threads"):
        M.ranking(np.zeros((2, 3), np.int64), rel, num_threads=1.5)


def test_ranking_bad_values():
    rel = _ok_rel()
    top = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match=r"topk_ids must be 2-d, got shape \(3,\)"):
        M.ranking(np.zeros(3, np.int64), rel)
    with pytest.raises(ValueError, match="relevant must have 3 rows"):
        M.ranking(np.zeros((3, 3), np.int64), rel)
    with pytest.raises(ValueError, match="relevant.indptr must have 3 entries"):
        M.ranking(top, (np.array([0, 1]), np.array([1])))
    with pytest.raises(ValueError, match="relevant.indptr must start at 0, got 1"):
        M.ranking(top, (np.array([1, 1, 2]), np.array([1, 2])))
    with pytest.raises(ValueError, match=r"relevant.indptr decreases at row 1 \(2 -> 1\)"):
        M.ranking(top, (np.array([0, 2, 1]), np.array([1])))
    with pytest.raises(ValueError, match="relevant.indptr ends at 2 but there are 3 entries"):
        M.ranking(top, (np.array([0, 1, 2]), np.array([1, 2, 3])))
    with pytest.raises(ValueError, match="relevant lists item 4 twice in row 1"):
        M.ranking(top, (np.array([0, 1, 3]), np.array([1, 4, 4])))
    with pytest.raises(ValueError, match="n_items=7 disagrees"):
        M.ranking(top, rel, n_items=7)
    with pytest.raises(ValueError, match="n_items must be >= 0"):
        M.ranking(top, (rel.indptr, rel.indices), n_items=-1)
    with pytest.raises(ValueError, match="num_threads"):
        M.ranking(top, rel, num_threads=0)


@pytest.mark.parametrize("ks", [0, -3, (5, 0), (2.5,), (True,), [], "5", 5.0, None, ("a",), 2**70])
def test_ranking_bad_ks(ks):
    with pytest.raises(ValueError, match="ks must"):
        M.ranking(np.zeros((2, 3), np.int64), _ok_rel(), ks=ks)


def test_ranking_bad_gains():
    rel = _ok_rel()
    top = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match="gains must be None, 'data' or an array"):
        M.ranking(top, rel, gains="weights")
    with pytest.raises(ValueError, match="needs relevant data"):
        M.ranking(top, (rel.indptr, rel.indices), gains="data")
    with pytest.raises(ValueError, match="gains has 3 entries but relevant has 2"):
        M.ranking(top, rel, gains=np.ones(3))
    with pytest.raises(ValueError, match="gains contains NaN or inf at index 1"):
        M.ranking(top, rel, gains=np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match=r"relevant.data must lie in \[0, 512\].*-1.0 at index 0"):
        M.ranking(top, sp.csr_matrix(([-1.0, 1.0], ([0, 1], [1, 2])), shape=(2, 5)), gains="data")
    with pytest.raises(ValueError, match="must lie in"):
        M.ranking(top, rel, gains=np.array([2000.0, 1.0]))
    with pytest.raises(ValueError, match="gains must be 1-d"):
        M.ranking(top, rel, gains=np.ones((2, 1)))


def test_ranking_ids_out_of_range():
    rel = _ok_rel()
    with pytest.raises(IndexError, match=r"topk_ids contains id 5 \(row 1, position 2\), outside \[-1, 5\)"):
        M.ranking(np.array([[0, 1, 2], [0, 1, 5]]), rel)
    with pytest.raises(IndexError, match="topk_ids contains id -2"):
        M.ranking(np.array([[0, 1, -2], [0, 1, 2]]), rel)
    with pytest.raises(IndexError, match="id 9"):  # beyond the last cutoff: still checked
        M.ranking(np.array([[0, 1, 2, 9], [0, 1, 2, 3]]), rel, ks=1)
    with pytest.raises(IndexError, match=r"relevant contains column 6.*outside \[0, 6\)"):
        M.ranking(np.zeros((2, 3), np.int64), (np.array([0, 1, 2]), np.array([1, 6])), n_items=6)
    with pytest.raises(IndexError, match="relevant contains column -1"):
        M.ranking(np.zeros((2, 3), np.int64), (np.array([0, 1, 2]), np.array([1, -1])))
    with pytest.raises(IndexError, match="outside the int64 range"):
        M.ranking(np.array([[2**63]], dtype=np.uint64), (np.array([0, 0]), np.array([], np.int64)))


def test_first_bad_id_is_reported_for_any_thread_count():
    rng = np.random.default_rng(0)
    top = rng.integers(0, 100, size=(5000, 10))
    top[4000, 3] = 777
    top[700, 5] = 555  # the first in query order, in a later-scheduled chunk than 0
    top[4999, 0] = 999
    rel = sp.random(5000, 100, density=0.05, format="csr", random_state=0)
    for t in (1, 2, 3):
        for _ in range(3):
            with pytest.raises(IndexError, match=r"id 555 \(row 700, position 5\)"):
                M.ranking(top, rel, ks=(5, 10), num_threads=t)


# ------------------------------------------------------------------ rating


def ref_rating(p, t):
    d = np.asarray(p, np.float64) - np.asarray(t, np.float64)
    return float(np.mean(np.abs(d))), float(np.sqrt(np.mean(d * d)))


@pytest.mark.parametrize("pdt", [np.float32, np.float64])
@pytest.mark.parametrize("tdt", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("n", [1, 17, 50_000])
def test_rating_against_reference(pdt, tdt, n):
    rng = np.random.default_rng(n)
    p = (rng.random(n) * 5).astype(pdt)
    t = rng.integers(1, 6, size=n).astype(tdt)
    out = M.rating(p, t)
    mae, rmse = ref_rating(p, t)
    assert out["n"] == n
    assert out["mae"] == pytest.approx(mae, rel=1e-12)
    assert out["rmse"] == pytest.approx(rmse, rel=1e-12)
    assert set(out) == {"mae", "rmse", "n"}


def test_rating_per_user():
    rng = np.random.default_rng(1)
    sizes = [3, 0, 1, 7, 0, 12]
    indptr = np.cumsum([0] + sizes)
    p = rng.random(indptr[-1])
    t = rng.integers(1, 6, size=indptr[-1]).astype(np.float32)
    out = M.rating(p, t, indptr=indptr)
    flat = M.rating(p, t)
    assert out["mae"] == flat["mae"] and out["rmse"] == flat["rmse"]  # row-weighted, identical
    for u, n in enumerate(sizes):
        if n == 0:
            assert np.isnan(out["user_mae"][u]) and np.isnan(out["user_rmse"][u])
            continue
        mae, rmse = ref_rating(p[indptr[u] : indptr[u + 1]], t[indptr[u] : indptr[u + 1]])
        assert out["user_mae"][u] == pytest.approx(mae, rel=1e-12)
        assert out["user_rmse"][u] == pytest.approx(rmse, rel=1e-12)
    np.testing.assert_array_equal(out["user_n"], sizes)
    has = np.array(sizes) > 0
    assert out["mean_user_mae"] == pytest.approx(np.mean(out["user_mae"][has]))
    assert out["mean_user_rmse"] == pytest.approx(np.mean(out["user_rmse"][has]))
    assert out["n_users"] == 4 and out["n_users_skipped"] == 2


def test_rating_threads_identical_and_2d():
    rng = np.random.default_rng(4)
    p, t = rng.random(100_003), rng.random(100_003)
    a = M.rating(p, t, num_threads=1)
    b = M.rating(p, t, num_threads=2)
    assert a == b
    c = M.rating(p.reshape(-1, 1), t.reshape(-1, 1))
    assert c == a
    indptr = np.linspace(0, 100_003, 1001).astype(np.int64)
    u1 = M.rating(p, t, indptr=indptr, num_threads=1)
    u2 = M.rating(p, t, indptr=indptr, num_threads=2)
    np.testing.assert_array_equal(u1["user_mae"], u2["user_mae"])
    assert u1["mean_user_rmse"] == u2["mean_user_rmse"]


def test_rating_empty():
    out = M.rating(np.zeros(0), np.zeros(0))
    assert out["n"] == 0 and np.isnan(out["mae"]) and np.isnan(out["rmse"])
    out = M.rating(np.zeros(0), np.zeros(0), indptr=[0])
    assert out["user_mae"].shape == (0,) and out["n_users"] == 0 and np.isnan(out["mean_user_mae"])
    out = M.rating(np.zeros(0), np.zeros(0), indptr=[0, 0])
    assert out["n_users_skipped"] == 1


def test_rating_bad_inputs():
    with pytest.raises(TypeError, match="pred must have dtype float32 or float64, got int64"):
        M.rating(np.array([1, 2]), np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="true must have dtype float32 or float64, got bool"):
        M.rating(np.array([1.0, 2.0]), np.array([True, False]))
    with pytest.raises(ValueError, match=r"pred has shape \(2,\) but true has shape \(3,\)"):
        M.rating(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="pred contains NaN or inf at index 1"):
        M.rating(np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(ValueError, match="true contains NaN or inf"):
        M.rating(np.zeros(2), np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="indptr must start at 0"):
        M.rating(np.zeros(3), np.zeros(3), indptr=[1, 3])
    with pytest.raises(ValueError, match=r"indptr decreases at row 1 \(2 -> 1\)"):
        M.rating(np.zeros(3), np.zeros(3), indptr=[0, 2, 1, 3])
    with pytest.raises(ValueError, match="indptr ends at 2 but there are 3 entries"):
        M.rating(np.zeros(3), np.zeros(3), indptr=[0, 2])
    with pytest.raises(ValueError, match="at least one entry"):
        M.rating(np.zeros(3), np.zeros(3), indptr=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="1-d with indptr"):
        M.rating(np.zeros((3, 1)), np.zeros((3, 1)), indptr=[0, 3])
    with pytest.raises(TypeError, match="indptr must have an integer dtype"):
        M.rating(np.zeros(3), np.zeros(3), indptr=np.array([0.0, 3.0]))


# -------------------------------------------------------------- query nDCG


def test_query_ndcg_hand_computed():
    # user 0: pred order -> rows 1, 2, 0 with true 1, 3, 5; user 1: all true 0 -> skipped
    res = M.query_ndcg(np.array([0.1, 0.9, 0.5, 0.3, 0.2]), np.array([5, 1, 3, 0, 0]),
                       [0, 3, 5], ks=(1, 2, 5))
    l3 = math.log2(3)
    assert res.per_query["ndcg@1"][0] == pytest.approx(1 / 31)
    assert res.per_query["ndcg@2"][0] == pytest.approx((1 + 7 / l3) / (31 + 7 / l3))
    assert res.per_query["ndcg@5"][0] == pytest.approx((1 + 7 / l3 + 31 / 2) / (31 + 7 / l3 + 1 / 2))
    assert np.isnan(res.per_query["ndcg@1"][1])
    assert res.n_evaluated == 1 and res.n_skipped == 1
    assert res.mean["ndcg@5"] == res.per_query["ndcg@5"][0]


def test_query_ndcg_ties_keep_row_order():
    # equal predictions: order is by position, so the low rating first
    res = M.query_ndcg(np.zeros(3, np.float32), np.array([1.0, 2.0, 0.0]), [0, 3], ks=(1,))
    assert res.per_query["ndcg@1"][0] == pytest.approx(1 / 3)
    res = M.query_ndcg(np.zeros(3), np.array([2.0, 1.0, 0.0]), [0, 3], ks=(1, 3))
    assert res.per_query["ndcg@1"][0] == 1.0 and res.per_query["ndcg@3"][0] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pdt", [np.float32, np.float64])
@pytest.mark.parametrize("tdt", [np.float32, np.float64, np.int32])
def test_query_ndcg_against_reference(seed, pdt, tdt):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 15, size=600)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    # coarse predictions: many ties
    p = (rng.integers(0, 4, size=indptr[-1]) / 4).astype(pdt)
    t = rng.integers(0, 6, size=indptr[-1]).astype(tdt)
    t[indptr[3] : indptr[4]] = 0  # an all-zero user
    ks = (1, 3, 5, 10, 20)
    res = M.query_ndcg(p, t, indptr, ks=ks, num_threads=2)
    ref = ref_query_ndcg(p.tolist(), t.tolist(), indptr, ks)
    assert_matches(res, ref, 600)
    r1 = M.query_ndcg(p, t, indptr, ks=ks, num_threads=1)
    for key in ref:
        np.testing.assert_array_equal(res.per_query[key], r1.per_query[key])
        assert res.mean[key] == r1.mean[key]


def test_query_ndcg_fractional_ratings():
    rng = np.random.default_rng(4)
    sizes = rng.integers(0, 30, size=300)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    p = rng.standard_normal(indptr[-1])
    t = rng.random(indptr[-1]) * 5
    t[::11] = 0.0
    ks = (1, 2, 10, 40)
    res = M.query_ndcg(p, t, indptr, ks=ks)
    assert_matches(res, ref_query_ndcg(p.tolist(), t.tolist(), indptr, ks), 300)


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 4)), max_size=8), max_size=6),
       st.lists(st.integers(1, 10), min_size=1, max_size=3))
def test_query_ndcg_property(users, ks):
    indptr = np.cumsum([0] + [len(u) for u in users])
    p = np.array([x for u in users for x, _ in u], dtype=np.float64)
    t = np.array([y for u in users for _, y in u], dtype=np.float64)
    res = M.query_ndcg(p, t, indptr, ks=ks)
    ref = ref_query_ndcg(p.tolist(), t.tolist(), indptr, sorted(set(ks)))
    assert_matches(res, ref, len(users))
    for v in res.per_query.values():
        v = v[~np.isnan(v)]
        assert ((v >= 0) & (v <= 1 + 1e-12)).all()


def test_query_ndcg_empty_and_bad_inputs():
    res = M.query_ndcg(np.zeros(0), np.zeros(0), [0])
    assert res.n_evaluated == 0 and all(v.shape == (0,) for v in res.per_query.values())
    assert all(np.isnan(v) for v in res.mean.values())
    with pytest.raises(ValueError, match=r"true must lie in \[0, 512\].*-1.0 at index 1"):
        M.query_ndcg(np.zeros(2), np.array([1.0, -1.0]), [0, 2])
    with pytest.raises(ValueError, match="pred contains NaN"):
        M.query_ndcg(np.array([np.nan, 1.0]), np.zeros(2), [0, 2])
    with pytest.raises(ValueError, match="pred has shape"):
        M.query_ndcg(np.zeros(2), np.zeros(3), [0, 2])
    with pytest.raises(ValueError, match="indptr ends at 1 but there are 2 entries"):
        M.query_ndcg(np.zeros(2), np.zeros(2), [0, 1])
    with pytest.raises(ValueError, match="ks must"):
        M.query_ndcg(np.zeros(2), np.zeros(2), [0, 2], ks=(0,))
    with pytest.raises(TypeError, match="pred must have dtype"):
        M.query_ndcg(np.zeros(2, np.int64), np.zeros(2), [0, 2])


def test_threadpoolctl_limit_gives_same_results():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(12)
    top, rel = random_case(rng, 1000, 80, 10, 10)
    free = M.ranking(top, rel, ks=(1, 10))
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        limited = M.ranking(top, rel, ks=(1, 10))
    for key in free.per_query:
        np.testing.assert_array_equal(free.per_query[key], limited.per_query[key])
        assert free.mean[key] == limited.mean[key]
