"""Batching helpers, negative sampling and the synthetic generator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from fuzzing import examples

from metarec_fast.data import (
    TaskPart,
    batch_csr,
    batch_padded,
    cold_start_split,
    csr_to_padded,
    iter_batches,
    make_synthetic,
    sample_negatives,
)
from metarec_fast.data._ragged import factorize, gather_rows, sorted_unique
from metarec_fast.data.synthetic import _draw, _guide_table


@pytest.fixture(scope="module")
def tasks():
    data = make_synthetic(600, 400, 20_000, random_state=1)
    return cold_start_split(data, support=5, query="rest", random_state=0).train


def random_part(rng, n_tasks, max_len, n_items=50):
    lengths = rng.integers(0, max_len + 1, n_tasks)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(indptr[-1])
    return TaskPart(indptr, rng.integers(0, n_items, n).astype(np.int32), rng.random(n).astype(np.float32),
                    rng.integers(0, 1000, n).astype(np.int64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_csr_and_padded_match_a_loop(seed):
    rng = np.random.default_rng(seed)
    part = random_part(rng, 30, 7)
    idx = rng.choice(30, 12, replace=False)
    b = batch_csr(part, idx)
    p = batch_padded(part, idx, pad_item=-1)
    assert b.indptr[0] == 0 and b.indptr.dtype == np.int64 and b.items.dtype == np.int32
    assert p.items.dtype == np.int64 and p.ratings.dtype == np.float32 and p.mask.dtype == np.bool_
    width = max(int(part.lengths[idx].max()), 0)
    assert p.items.shape == (12, width)
    for row, t in enumerate(idx):
        lo, hi = part.indptr[t], part.indptr[t + 1]
        np.testing.assert_array_equal(b.items[b.indptr[row]:b.indptr[row + 1]], part.items[lo:hi])
        np.testing.assert_array_equal(b.ratings[b.indptr[row]:b.indptr[row + 1]], part.ratings[lo:hi])
        np.testing.assert_array_equal(b.timestamps[b.indptr[row]:b.indptr[row + 1]], part.timestamps[lo:hi])
        n = hi - lo
        np.testing.assert_array_equal(p.items[row, :n], part.items[lo:hi])
        np.testing.assert_array_equal(p.ratings[row, :n], part.ratings[lo:hi])
        assert p.mask[row, :n].all() and not p.mask[row, n:].any()
        assert (p.items[row, n:] == -1).all() and (p.ratings[row, n:] == 0).all()
    np.testing.assert_array_equal(p.lengths, part.lengths[idx])


def test_empty_batch_and_bad_indices():
    part = random_part(np.random.default_rng(0), 5, 3)
    b = batch_csr(part, [])
    assert b.indptr.tolist() == [0] and len(b.items) == 0
    assert batch_padded(part, []).items.shape == (0, 0)
    assert batch_csr(part, [-1]).items.tolist() == batch_csr(part, [4]).items.tolist()
    with pytest.raises(IndexError, match="task index 5"):
        batch_csr(part, [5])
    with pytest.raises(TypeError):
        batch_csr(part, [0.5])
    mask = np.zeros(5, bool)
    mask[[1, 3]] = True
    assert batch_csr(part, mask).indptr.shape == (3,)


def test_padded_max_len_and_truncate():
    part = TaskPart(np.array([0, 3, 4]), np.array([1, 2, 3, 4], np.int32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="more than max_len=2"):
        batch_padded(part, [0, 1], max_len=2)
    p = batch_padded(part, [0, 1], max_len=2, truncate=True)
    assert p.items.tolist() == [[1, 2], [4, 0]] and p.mask.tolist() == [[True, True], [True, False]]
    assert batch_padded(part, [0, 1], max_len=5).items.shape == (2, 5)


def test_make_batch_and_iteration(tasks):
    b = tasks.batch([2, 0])
    np.testing.assert_array_equal(b.users, tasks.users[[2, 0]])
    np.testing.assert_array_equal(b.user_features.categorical["occupation"],
                                  tasks.user_features.categorical["occupation"][[2, 0]])
    assert b.support.mask.sum() == tasks.support.lengths[[2, 0]].sum()
    c = tasks.batch([2, 0], padded=False)
    np.testing.assert_array_equal(csr_to_padded(c.query).items, b.query.items)
    seen = np.concatenate([bt.tasks for bt in iter_batches(tasks, 64, random_state=3)])
    assert sorted(seen.tolist()) == list(range(len(tasks)))
    again = np.concatenate([bt.tasks for bt in tasks.batches(64, random_state=3)])
    np.testing.assert_array_equal(seen, again)
    assert all(len(bt.tasks) == 64 for bt in iter_batches(tasks, 64, drop_last=True))
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(tasks, 0))


def test_to_torch(tasks):
    torch = pytest.importorskip("torch")
    items, ratings, mask = tasks.batch([0, 1]).support.to_torch()
    assert items.dtype == torch.int64 and ratings.dtype == torch.float32 and mask.dtype == torch.bool


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.integers(0, 6), max_size=12), st.data())
def test_gather_rows_property(lengths, data):
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.arange(int(indptr[-1]))
    rows = data.draw(st.lists(st.integers(-1, max(len(lengths) - 1, -1)), max_size=10))
    new_indptr, pos = gather_rows(indptr, np.array(rows, dtype=np.int64))
    expect = [values[indptr[r]:indptr[r + 1]] if r >= 0 else [] for r in rows]
    assert new_indptr.tolist() == np.concatenate([[0], np.cumsum([len(e) for e in expect])]).tolist()
    assert values[pos].tolist() == [int(v) for e in expect for v in e]


@settings(max_examples=examples(40), deadline=None)
@given(st.lists(st.integers(-5, 5), max_size=30))
def test_factorize_and_sorted_unique(xs):
    a = np.array(xs, dtype=np.int64)
    u, codes = factorize(a)
    ref_u, ref_codes = np.unique(a, return_inverse=True)
    assert u.tolist() == ref_u.tolist() and codes.tolist() == ref_codes.reshape(-1).tolist()
    assert sorted_unique(a).tolist() == ref_u.tolist()


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("method", ["uniform", "popularity"])
@pytest.mark.parametrize("seed", [0, 1])
def test_negatives_are_never_positives(tasks, method, seed):
    neg = tasks.sample_negatives(20, method=method, random_state=seed)
    assert neg.shape == (len(tasks), 20) and neg.dtype == np.int32
    indptr, items = tasks.positives()
    pos = set(zip(np.repeat(np.arange(len(tasks)), np.diff(indptr)).tolist(), items.tolist()))
    assert not any((r, int(i)) in pos for r in range(len(tasks)) for i in neg[r])
    np.testing.assert_array_equal(neg, tasks.sample_negatives(20, method=method, random_state=seed))
    assert (neg >= 0).all() and (neg < tasks.n_items).all()


def test_negatives_for_nearly_full_rows():
    n_items = 10
    indptr = np.array([0, 9, 10])
    items = np.array([0, 1, 2, 3, 4, 5, 6, 8, 9, 3])  # row 0 misses only item 7
    for method in ("uniform", "popularity"):
        neg = sample_negatives((indptr, items), n_items, 50, method, random_state=0, max_rounds=1)
        assert (neg[0] == 7).all() and (neg[1] != 3).all()
    with pytest.raises(ValueError, match="every one of the 3 items"):
        sample_negatives((np.array([0, 3]), np.array([0, 1, 2])), 3, 1)
    with pytest.raises(ValueError, match="method"):
        sample_negatives((indptr, items), n_items, 1, "hard")
    with pytest.raises(IndexError):
        sample_negatives((indptr, items), 5, 1)


def test_popularity_sampling_prefers_popular_items():
    pop = np.zeros(100)
    pop[:5] = 1000
    neg = sample_negatives((np.array([0, 0]), np.array([], np.int64)), 100, 5000, "popularity", pop,
                           random_state=0)
    assert np.isin(neg, np.arange(5)).mean() > 0.9
    uni = sample_negatives((np.array([0, 0]), np.array([], np.int64)), 100, 5000, random_state=0)
    assert np.isin(uni, np.arange(5)).mean() < 0.1


# ----------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_structured():
    a = make_synthetic(3000, 500, 90_000, random_state=11)
    b = make_synthetic(3000, 500, 90_000, random_state=11)
    c = make_synthetic(3000, 500, 90_000, random_state=12)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.ratings, b.ratings)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert not np.array_equal(a.items[:1000], c.items[:1000])
    assert 0.85 * 90_000 < len(a) <= 1.01 * 90_000  # repeated draws are kept once
    assert a.summary()["duplicates_dropped"] == 0
    assert set(np.unique(a.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    shares = np.bincount(a.ratings.astype(int), minlength=6)[1:] / len(a)
    np.testing.assert_allclose(shares, [0.06, 0.11, 0.27, 0.34, 0.22], atol=0.01)
    # features correlate with the latent clusters
    cluster = a.info["user_cluster"]
    assert (a.user_features.categorical["occupation"] == cluster).mean() > 0.7
    assert np.corrcoef(a.user_features.numeric["age"], cluster)[0, 1] > 0.5
    # power-law popularity, widely varying activity
    pop = np.sort(a.item_popularity())[::-1]
    assert pop[: len(pop) // 10].sum() > 0.3 * pop.sum()
    act = a.user_activity()
    assert act.max() > 8 * np.median(act) and act.min() >= 1 and (act >= 5).mean() > 0.99
    # users of one cluster share tastes: their item distributions are closer than across clusters
    m = a.csr()
    prof = np.stack([np.asarray(m[cluster == k].sum(axis=0)).ravel() for k in range(8)])
    prof /= np.linalg.norm(prof, axis=1, keepdims=True)
    sim = prof @ prof.T
    assert np.diag(sim).mean() > sim[~np.eye(8, dtype=bool)].mean() + 0.05
    # CSR view agrees with the rows, and the data split works
    assert m.nnz == len(a) and m.has_sorted_indices
    assert len(cold_start_split(a, support=5, random_state=0).test) > 0


def test_synthetic_implicit_and_validation():
    d = make_synthetic(100, 50, implicit=True, random_state=0, features=False)
    assert d.implicit and (d.ratings == 1).all() and d.user_features is None
    with pytest.raises(ValueError, match="n_users"):
        make_synthetic(0, 10)


def test_guide_table_draw_equals_searchsorted():
    rng = np.random.default_rng(0)
    p = rng.random((3, 50)) ** 4
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    clusters = rng.integers(0, 3, 20_000)
    got = _draw(cdf, _guide_table(cdf), clusters, np.random.default_rng(5))
    u = np.random.default_rng(5).random(20_000)
    ref = np.array([np.searchsorted(cdf[c], x, side="right") for c, x in zip(clusters, u)])
    np.testing.assert_array_equal(got, ref)
