"""cold_start_split and the MeLU preset: each scenario's invariants, seeds, filters, counts, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from fuzzing import examples

from metarec_fast.data import Interactions, TaskSet, cold_start_split, make_synthetic, melu_split


def pairs(ts: TaskSet, part: str = "both") -> set[tuple[int, int]]:
    out = set()
    for name in (("support", "query") if part == "both" else (part,)):
        p = getattr(ts, name)
        users = np.repeat(ts.users, p.lengths)
        out |= set(zip(users.tolist(), p.items.tolist()))
    return out


def task_items(ts: TaskSet) -> np.ndarray:
    return np.concatenate([ts.support.items, ts.query.items])


def check_disjoint_support_query(ts: TaskSet) -> None:
    s = np.repeat(ts.users.astype(np.int64), ts.support.lengths) * ts.n_items + ts.support.items
    q = np.repeat(ts.users.astype(np.int64), ts.query.lengths) * ts.n_items + ts.query.items
    assert len(np.intersect1d(s, q)) == 0
    assert np.all(ts.support.lengths > 0) and np.all(ts.query.lengths > 0)


def check_time_order(ts: TaskSet) -> None:
    """Within each task, support timestamps <= query timestamps, and each part is time-sorted."""
    s_last = np.maximum.reduceat(ts.support.timestamps, ts.support.indptr[:-1])
    q_first = np.minimum.reduceat(ts.query.timestamps, ts.query.indptr[:-1])
    assert np.all(s_last <= q_first)
    for part in (ts.support, ts.query):
        same_task = np.repeat(np.arange(len(part)), part.lengths)
        d = np.diff(part.timestamps)
        assert np.all(d[same_task[1:] == same_task[:-1]] >= 0)


@pytest.fixture(scope="module")
def small():
    return make_synthetic(400, 300, 12_000, random_state=5)


# ---------------------------------------------------------------- scenarios


def test_user_scenario_on_ml100k(ml100k):
    train, val, test = cold_start_split(ml100k, "user", by="time", support=10, query="rest",
                                        val_fraction=0.1, test_fraction=0.2, random_state=0)
    assert len(np.intersect1d(train.users, test.users)) == 0
    assert len(np.intersect1d(train.users, val.users)) == 0
    assert len(np.intersect1d(val.users, test.users)) == 0
    assert len(train) + len(val) + len(test) == 943  # every ML-100K user has >= 20 ratings
    assert len(test) == round(0.2 * 943) and len(val) == round(0.1 * 943)
    act = ml100k.user_activity()
    for ts in (train, val, test):
        check_disjoint_support_query(ts)
        check_time_order(ts)
        assert np.all(ts.support.lengths == 10)
        np.testing.assert_array_equal(ts.support.lengths + ts.query.lengths, act[ts.users])
        assert ts.fingerprint == ml100k.fingerprint and ts.n_items == 1682
        assert ts.user_features.n == len(ts) and ts.item_features is ml100k.item_features
        assert ts.report["rows_accounted"] and ts.report["scenario"] == "user"
    total = sum(t.support.n_interactions + t.query.n_interactions for t in (train, val, test))
    assert total == 100_000
    # the support really is each user's first 10 ratings by time
    u = int(test.users[0])
    rows = np.flatnonzero(ml100k.users == u)
    order = np.lexsort((ml100k.items[rows], ml100k.timestamps[rows]))
    np.testing.assert_array_equal(test.support.items[:10], ml100k.items[rows[order[:10]]])


def test_item_scenario_no_cold_item_in_train(ml100k):
    train, val, test = cold_start_split(ml100k, "item", support=5, query="rest", random_state=1)
    assert test.report["item_split_key"] == "release_date"
    train_items = np.unique(task_items(train))
    for ts in (val, test):
        assert len(ts.cold_items) > 0
        assert len(np.intersect1d(ts.cold_items, train_items)) == 0
        assert np.isin(task_items(ts), ts.cold_items).all()
        check_disjoint_support_query(ts)
        check_time_order(ts)
    assert len(np.intersect1d(val.cold_items, test.cold_items)) == 0
    # by release date: the test items are the newest known releases
    rd = ml100k.item_features.numeric["release_date"]
    known_train = rd[np.setdiff1d(np.arange(1682), np.concatenate([val.cold_items, test.cold_items]))]
    assert np.nanmax(known_train) <= np.nanmin(rd[val.cold_items]) <= np.nanmin(rd[test.cold_items])
    # users are shared (existing users, new items)
    assert len(np.intersect1d(train.users, test.users)) > 0


def test_both_scenario(ml100k):
    train, val, test = cold_start_split(ml100k, "both", support=5, query=5, random_state=2)
    assert len(np.intersect1d(train.users, test.users)) == 0
    assert len(np.intersect1d(task_items(train), test.cold_items)) == 0
    assert np.isin(task_items(test), test.cold_items).all()
    assert test.report["rows_cross_state"] > 0
    assert np.all(test.query.lengths == 5)
    for ts in (train, val, test):
        check_disjoint_support_query(ts)


def test_warm_scenario(ml100k):
    train, val, test = cold_start_split(ml100k, "warm", support=10, query=5, random_state=0)
    assert np.isin(test.users, train.users).all() and np.isin(val.users, train.users).all()
    assert len(np.intersect1d(val.users, test.users)) == 0
    train_pairs = pairs(train)
    assert not (pairs(test, "query") & train_pairs)  # the held-out query is never trained on
    assert pairs(test, "support") <= train_pairs        # the support is known history
    assert np.all(test.query.lengths == 5) and np.all(test.support.lengths == 10)
    for ts in (train, val, test):
        check_disjoint_support_query(ts)
        check_time_order(ts)


def test_random_order_and_seeds(ml100k):
    a = cold_start_split(ml100k, by="random", support=5, query=10, random_state=7)
    b = cold_start_split(ml100k, by="random", support=5, query=10, random_state=7)
    c = cold_start_split(ml100k, by="random", support=5, query=10, random_state=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.users, y.users)
        np.testing.assert_array_equal(x.support.items, y.support.items)
        np.testing.assert_array_equal(x.query.items, y.query.items)
    assert not np.array_equal(a.test.users, c.test.users)
    assert a.test.report["rows_beyond_query"] > 0 and np.all(a.test.query.lengths == 10)
    for ts in a:
        check_disjoint_support_query(ts)
    # a generator is accepted as the seed
    g = cold_start_split(ml100k, by="random", random_state=np.random.default_rng(7))
    assert g.test.report["random_state"] == "Generator"


@pytest.mark.parametrize("scenario", ["user", "item", "both"])
def test_time_partition_is_deterministic(small, scenario):
    a = cold_start_split(small, scenario, support=3, query=2, user_split="time", random_state=0)
    b = cold_start_split(small, scenario, support=3, query=2, user_split="time", random_state=0)
    np.testing.assert_array_equal(a.test.users, b.test.users)
    np.testing.assert_array_equal(a.test.query.items, b.test.query.items)
    if scenario != "item":  # test users joined last
        first = np.full(small.n_users, np.iinfo(np.int64).max)
        np.minimum.at(first, small.users, small.timestamps)
        if scenario == "user":
            assert first[a.train.users].max() <= first[a.test.users].min()


def test_all_but_query_takes_the_latest_as_query(ml100k):
    train, val, test = cold_start_split(ml100k, support="all_but_query", query=10, random_state=0)
    act = ml100k.user_activity()
    assert np.all(test.query.lengths == 10)
    np.testing.assert_array_equal(test.support.lengths, act[test.users] - 10)
    check_time_order(test)


def test_filters_drop_and_count_users(small):
    act = small.user_activity()
    train, val, test = cold_start_split(small, support=5, query=5, min_interactions=20, max_interactions=60,
                                        random_state=0)
    kept = np.concatenate([train.users, val.users, test.users])
    assert np.all((act[kept] >= 20) & (act[kept] <= 60))
    d = train.report["users_dropped_before_grouping"]
    assert d["too_few_interactions"] == int(((act > 0) & (act < 20)).sum())
    assert d["too_many_interactions"] == int((act > 60).sum())
    assert train.report["rows_of_users_dropped_before_grouping"] == int(act[(act < 20) | (act > 60)].sum())
    assert train.report["min_interactions"] == 20
    # support + query need 10: a lower min_interactions is raised to 10
    t2 = cold_start_split(small, support=5, query=5, min_interactions=2, random_state=0)
    assert t2.train.report["min_interactions"] == 10


def test_item_scenario_counts_users_dropped_per_set(ml100k):
    train, val, test = cold_start_split(ml100k, "item", support=10, query=10, random_state=0)
    d = test.report["users_dropped"]
    assert d["too_few_interactions"] > 0
    assert test.report["rows_of_dropped_users"] > 0
    assert all(ts.report["rows_accounted"] for ts in (train, val, test))


def test_task_set_subset_and_summary(ml100k):
    test = cold_start_split(ml100k, random_state=0).test
    sub = test.subset([3, 1])
    np.testing.assert_array_equal(sub.users, test.users[[3, 1]])
    np.testing.assert_array_equal(sub.query.items[:sub.query.lengths[0]],
                                  test.query.items[test.query.indptr[3]:test.query.indptr[4]])
    assert sub.summary()["n_tasks"] == 2
    m = test.support.to_csr(test.n_items)
    assert m.shape == (len(test), 1682) and m.nnz == test.support.n_interactions
    assert "TaskSet('test'" in repr(test)


# --------------------------------------------------------------------- MeLU


def test_melu_preset(ml100k):
    states = melu_split(ml100k, random_state=0)
    assert set(states) == {"train", "warm", "user_cold", "item_cold", "user_item_cold"}
    for name, ts in states.items():
        assert len(ts) > 0, name
        n = ts.support.lengths + ts.query.lengths
        assert np.all(ts.query.lengths == 10), name
        if name != "warm":
            assert np.all((n >= 13) & (n <= 100)), name
        check_disjoint_support_query(ts)
        assert ts.report["preset"] == "melu"
    train_items = np.unique(task_items(states["train"]))
    assert len(np.intersect1d(states["user_cold"].users, states["train"].users)) == 0
    assert len(np.intersect1d(states["user_item_cold"].users, states["train"].users)) == 0
    assert len(np.intersect1d(task_items(states["item_cold"]), train_items)) == 0
    assert len(np.intersect1d(task_items(states["user_item_cold"]), train_items)) == 0
    assert np.isin(states["warm"].users, states["train"].users).all()
    assert not (pairs(states["warm"], "query") & pairs(states["train"]))
    again = melu_split(ml100k, random_state=0)
    np.testing.assert_array_equal(again["item_cold"].query.items, states["item_cold"].query.items)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("kwargs, match", [
    ({"scenario": "cold"}, "scenario must be one of"),
    ({"by": "popularity"}, "by must be"),
    ({"support": 0}, "support must be a positive int"),
    ({"support": "all"}, "support must be"),
    ({"query": -1}, "query must be"),
    ({"support": "all_but_query", "query": "rest"}, "needs an integer query"),
    ({"scenario": "warm", "query": "rest"}, "warm"),
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
    ({"test_fraction": 0.0}, "test_fraction must be > 0"),
    ({"min_interactions": -1}, "min_interactions"),
    ({"max_interactions": 5}, "below the 11 interactions"),
    ({"user_split": "alphabet"}, "user_split"),
    ({"scenario": "item", "item_split": "nope"}, "item_split"),
])
def test_bad_parameters(small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cold_start_split(small, **kwargs)


def test_filter_that_removes_every_user_is_an_error(small):
    with pytest.raises(ValueError, match="no user has"):
        cold_start_split(small, support=5, query=5, min_interactions=10_000)
    with pytest.raises(ValueError, match="has no task"):
        cold_start_split(small, "item", support=200, query=5, random_state=0)


def test_users_with_too_few_interactions_are_dropped_and_counted():
    d = Interactions.from_arrays(np.repeat([1, 2, 3, 4, 5, 6], [3, 8, 8, 8, 8, 8]), np.r_[0:3, 0:8, 0:8, 0:8, 0:8, 0:8],
                                 timestamps=np.arange(43))
    train, val, test = cold_start_split(d, support=4, query=3, val_fraction=0.0, test_fraction=0.2,
                                        random_state=0)
    assert train.report["users_dropped_before_grouping"]["too_few_interactions"] == 1
    assert train.report["rows_of_users_dropped_before_grouping"] == 3
    assert len(val) == 0 and len(train) + len(test) == 5
    assert train.report["rows_beyond_query"] + test.report["rows_beyond_query"] == 5


def test_time_needs_timestamps_and_data_type():
    d = Interactions.from_arrays([1, 2], [1, 2])
    with pytest.raises(ValueError, match="timestamps"):
        cold_start_split(d, by="time")
    with pytest.raises(TypeError, match="Interactions"):
        cold_start_split("not data")
    with pytest.raises(TypeError, match="random_state"):
        cold_start_split(d, by="random", random_state="seed")


@pytest.mark.parametrize("scenario", ["user", "item", "both", "warm"])
def test_every_row_is_accounted_for_and_report_is_json(small, scenario):
    import json

    train, val, test = cold_start_split(small, scenario, support=4, query=3, random_state=1)
    r = train.report
    placed = sum(t.report["support_rows"] + t.report["query_rows"] + t.report["rows_beyond_query"]
                 + t.report["rows_of_dropped_users"] for t in (train, val, test))
    placed += r["rows_of_users_dropped_before_grouping"] + r["rows_cross_state"]
    placed -= r.get("rows_shared_with_train", 0)
    assert placed == len(small) == r["rows_total"]
    for t in (train, val, test):
        json.dumps(t.report)
        assert t.report["set"] == t.name


@settings(max_examples=examples(25), deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scenario=st.sampled_from(["user", "item", "both", "warm"]),
    by=st.sampled_from(["time", "random"]),
    support=st.sampled_from([1, 3, "all_but_query"]),
    query=st.sampled_from([1, 2, "rest"]),
)
def test_split_invariants_property(seed, scenario, by, support, query):
    rng = np.random.default_rng(seed)
    n = 3000
    d = Interactions.from_arrays(rng.integers(0, 120, n), rng.integers(0, 200, n), rng.integers(1, 6, n),
                                 rng.integers(0, 50, n))  # many equal timestamps on purpose
    if (support == "all_but_query" and query == "rest") or (scenario == "warm" and query == "rest"):
        with pytest.raises(ValueError):
            cold_start_split(d, scenario, by=by, support=support, query=query, random_state=seed)
        return
    try:
        split = cold_start_split(d, scenario, by=by, support=support, query=query, random_state=seed)
    except ValueError as exc:  # tiny random data: a set may end up empty, which must be said clearly
        assert "no task" in str(exc) or "no user" in str(exc)
        return
    for ts in split:
        check_disjoint_support_query(ts)
        if by == "time":
            check_time_order(ts)
        if isinstance(support, int):
            assert np.all(ts.support.lengths == support) or (scenario == "warm" and ts.name == "train")
        if isinstance(query, int) and not (scenario == "warm" and ts.name == "train"):
            assert np.all(ts.query.lengths == query)
    if scenario in ("user", "both"):
        assert len(np.intersect1d(split.train.users, split.test.users)) == 0
    if scenario in ("item", "both"):
        assert len(np.intersect1d(task_items(split.train), split.test.cold_items)) == 0
    if scenario == "warm":
        assert not (pairs(split.test, "query") & pairs(split.train))


def test_task_set_matrix(ml100k):
    train, val, test = cold_start_split(ml100k, random_state=0)
    m = train.matrix()
    assert m.shape == (943, 1682) and m.dtype == np.float32
    assert m.nnz == train.support.n_interactions + train.query.n_interactions
    full = ml100k.csr()
    u = int(train.users[5])
    np.testing.assert_array_equal(m[u].toarray(), full[u].toarray())
    assert m[test.users].nnz == 0
    assert train.matrix("support").nnz == train.support.n_interactions
    with pytest.raises(ValueError, match="part"):
        train.matrix("all")


def test_item_split_key_fallbacks(tmp_path):
    from metarec_fast.data import Features

    rng = np.random.default_rng(0)
    n = 4000
    users, items = rng.integers(0, 100, n), rng.integers(0, 60, n)
    year = Features(60, numeric={"year": np.arange(1940, 2000, dtype=np.float32)}, ids=np.arange(60))
    d = Interactions.from_arrays(users, items, timestamps=rng.integers(0, 10**6, n), item_features=year)
    test = cold_start_split(d, "item", support=2, query=2, random_state=0).test
    assert test.report["item_split_key"] == "year"
    assert d.item_raw(test.cold_items).min() >= 48  # the newest 20% of the 60 releases
    plain = Interactions.from_arrays(users, items, timestamps=rng.integers(0, 10**6, n))
    assert cold_start_split(plain, "item", support=2, query=2, random_state=0).test.report[
        "item_split_key"] == "first_appearance"
    no_time = Interactions.from_arrays(users, items)
    with pytest.raises(ValueError, match="item_split='random'"):
        cold_start_split(no_time, "item", by="random", support=2, query=2)
    r = cold_start_split(no_time, "item", by="random", item_split="random", support=2, query=2, random_state=0)
    assert r.test.report["item_split_key"] == "random"
