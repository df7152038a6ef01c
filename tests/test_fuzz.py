"""Fuzzing the public API: random shapes, dtypes, layouts, ids and values.

Every call either returns an output of the documented shape or raises one of
the documented exceptions (TypeError, ValueError, IndexError). A crash would
take the test process down with it. METAREC_FUZZ_SCALE multiplies the number
of examples for a long session.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import examples
from metarec_fast import metrics, ops
from metarec_fast.ops.adapt import linear_head_adapt
from metarec_fast.serving import Recommender

DOCUMENTED = (TypeError, ValueError, IndexError)
DTYPES = [np.float32, np.float64, np.int64, np.int32, np.bool_, np.float16]
FUZZ = settings(max_examples=examples(60), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def arrays(draw, ndim=None, max_side=6, kind="float"):
    nd = draw(st.sampled_from([1, 2])) if ndim is None else ndim
    shape = tuple(draw(st.integers(0, max_side)) for _ in range(nd))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "ids":
        a = rng.integers(-3, 12, size=shape).astype(dtype) if dtype != np.bool_ else rng.integers(0, 2, shape).astype(bool)
    else:
        a = rng.normal(size=shape).astype(dtype) if dtype != np.bool_ else rng.integers(0, 2, shape).astype(bool)
        if a.size and draw(st.booleans()) and np.issubdtype(a.dtype, np.floating):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    layout = draw(st.sampled_from(["c", "f", "strided", "readonly"]))
    if layout == "f":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim and a.shape[0] > 1:
        a = a[::2]
    elif layout == "readonly":
        a.setflags(write=False)
    return a


def call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except DOCUMENTED:
        return None


@FUZZ
@given(scores=arrays(ndim=2), k=st.integers(-2, 12), data=st.data())
def test_topk(scores, k, data):
    exclude = None
    if data.draw(st.booleans()) and scores.ndim == 2:
        n = scores.shape[0]
        lengths = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = np.asarray(data.draw(st.lists(st.integers(-2, 10), min_size=int(indptr[-1]),
                                                max_size=int(indptr[-1]))), dtype=np.int64)
        exclude = (indptr, indices)
    out = call(ops.topk, scores, k, exclude=exclude)
    if out is not None:
        ids, vals = out
        assert ids.shape == vals.shape == (scores.shape[0], k)


@FUZZ
@given(queries=arrays(ndim=2), items=arrays(ndim=2), k=st.integers(-1, 9))
def test_topk_dot(queries, items, k):
    out = call(ops.topk_dot, queries, items, k)
    if out is not None:
        assert out[0].shape == (queries.shape[0], k)


@FUZZ
@given(table=arrays(ndim=2), ids=arrays(kind="ids"), offsets=arrays(ndim=1, kind="ids"),
       mode=st.sampled_from(["sum", "mean", "max"]))
def test_embedding(table, ids, offsets, mode):
    out = call(ops.gather, table, ids)
    if out is not None:
        assert out.shape == ids.shape + (table.shape[1],)
    out = call(ops.embedding_bag, table, ids, offsets, mode=mode)
    if out is not None:
        assert out.shape == (offsets.shape[0], table.shape[1])


@FUZZ
@given(top=arrays(ndim=2, kind="ids"), data=st.data())
def test_ranking_metrics(top, data):
    n = top.shape[0] if top.ndim == 2 else 0
    lengths = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.asarray(data.draw(st.lists(st.integers(-1, 11), min_size=int(indptr[-1]),
                                            max_size=int(indptr[-1]))), dtype=np.int64)
    ks = data.draw(st.sampled_from([(1,), (3, 5), (0,), (2, 2)]))
    out = call(metrics.ranking, top, (indptr, indices), ks=ks, n_items=12)
    if out is not None:
        assert all(v.shape == (n,) for v in out.per_query.values())


@FUZZ
@given(H=arrays(ndim=2), data=st.data())
def test_linear_head_adapt(H, data):
    n_items = H.shape[0]
    n_users = data.draw(st.integers(0, 4))
    lengths = data.draw(st.lists(st.integers(0, 4), min_size=n_users, max_size=n_users))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.asarray(data.draw(st.lists(st.integers(-1, n_items + 1), min_size=int(indptr[-1]),
                                          max_size=int(indptr[-1]))), dtype=np.int64)
    ratings = data.draw(st.sampled_from([np.ones(len(items)), np.full(len(items), np.nan)]))
    d = H.shape[1] if H.ndim == 2 else 1
    out = call(linear_head_adapt, H, np.zeros(n_items), (indptr, items, ratings), np.zeros(d), 0.0,
               steps=data.draw(st.integers(-1, 3)))
    if out is not None:
        assert out.p.shape == (n_users, d) and out.b.shape == (n_users,)


@pytest.fixture(scope="module")
def recommender():
    rng = np.random.default_rng(0)
    return Recommender(rng.normal(size=(20, 4)), np.zeros(20), np.zeros(4), 0.0, steps=2)


@FUZZ
@given(items=st.lists(st.integers(-3, 25), max_size=6), ratings=st.lists(
    st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=6), k=st.integers(-1, 30))
def test_serving(recommender, items, ratings, k):
    state = call(recommender.adapt, (items, ratings))
    if state is None:
        return
    assert len(state) == 1
    out = call(recommender.recommend, state, k=k)
    if out is not None:
        assert out[0].shape == (1, k)
