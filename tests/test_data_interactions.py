"""Interactions and Features: construction, id maps, duplicates, CSR view, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from metarec_fast.data import Features, Interactions


def test_from_arrays_dense_ids_follow_sorted_raw_ids():
    d = Interactions.from_arrays([30, 10, 30, 20], [7, 5, 5, 9], [1, 2, 3, 4], [4, 3, 2, 1])
    assert d.n_users == 3 and d.n_items == 3 and len(d) == 4
    assert d.users.dtype == np.int32 and d.items.dtype == np.int32
    assert d.ratings.dtype == np.float32 and d.timestamps.dtype == np.int64
    np.testing.assert_array_equal(d.user_raw_ids, [10, 20, 30])
    np.testing.assert_array_equal(d.users, [2, 0, 2, 1])
    np.testing.assert_array_equal(d.items, [1, 0, 0, 2])
    assert not d.implicit


@pytest.mark.parametrize("raw", [
    np.array([5, 1_000_000_000_000, 7, 5]),  # large ids: the sort path
    np.array([5, 3, 7, 5]),                  # small ids: the lookup-table path
    np.array(["b", "a", "c", "b"]),          # strings
    np.array(["b", "a", "c", "b"], dtype=object),
])
def test_raw_id_round_trip(raw):
    items = raw[[1, 2, 3, 0]].copy()
    d = Interactions.from_arrays(raw, items)
    np.testing.assert_array_equal(d.user_raw(d.users), raw)
    np.testing.assert_array_equal(d.user_index(raw), d.users)
    np.testing.assert_array_equal(d.item_raw(d.items), items)
    np.testing.assert_array_equal(d.item_index(items), d.items)
    assert d.user_index(raw[0]) == d.users[0]
    with pytest.raises(KeyError, match="unknown raw user id"):
        d.user_index(np.array([raw[0], "zzz" if raw.dtype.kind in "OU" else 999], dtype=raw.dtype))


def test_implicit_when_no_ratings():
    d = Interactions.from_arrays([1, 2], [3, 4])
    assert d.implicit
    np.testing.assert_array_equal(d.ratings, [1.0, 1.0])
    assert d.timestamps is None


def test_duplicates_keep_latest_timestamp_and_are_counted():
    users = [1, 1, 1, 2, 1]
    items = [5, 5, 6, 5, 5]
    ratings = [1, 2, 3, 4, 5]
    ts = [10, 30, 5, 1, 20]  # for (1, 5) the latest is the second row (rating 2)
    d = Interactions.from_arrays(users, items, ratings, ts)
    assert len(d) == 3
    assert d.summary()["duplicates_dropped"] == 2
    assert d.summary()["rows_read"] == 5
    m = d.csr().toarray()
    assert m[d.user_index(1), d.item_index(5)] == 2
    assert m[d.user_index(1), d.item_index(6)] == 3
    assert m[d.user_index(2), d.item_index(5)] == 4


def test_duplicates_without_timestamps_keep_the_last_row():
    d = Interactions.from_arrays([1, 1, 1], [5, 5, 5], [1, 2, 3])
    assert len(d) == 1 and d.ratings[0] == 3
    # equal timestamps: the last row wins too
    d = Interactions.from_arrays([1, 1, 1], [5, 5, 5], [1, 2, 3], [7, 7, 7])
    assert d.ratings[0] == 3


def test_csr_is_cached_sorted_and_matches_reference():
    rng = np.random.default_rng(0)
    u = rng.integers(0, 50, 2000)
    i = rng.integers(0, 80, 2000)
    r = rng.integers(1, 6, 2000)
    t = rng.permutation(2000)
    d = Interactions.from_arrays(u, i, r, t)
    m = d.csr()
    assert m is d.csr()
    assert isinstance(m, sp.csr_matrix) and m.dtype == np.float32 and m.has_sorted_indices
    ref = np.zeros((d.n_users, d.n_items), np.float32)
    latest = {}
    for uu, ii, rr, tt in zip(u, i, r, t):
        if (uu, ii) not in latest or tt >= latest[uu, ii][0]:
            latest[uu, ii] = (tt, rr)
    for (uu, ii), (_, rr) in latest.items():
        ref[d.user_index(uu), d.item_index(ii)] = rr
    np.testing.assert_array_equal(m.toarray(), ref)
    assert d.summary()["duplicates_dropped"] == 2000 - len(latest)
    assert np.all(np.diff(m.indices[m.indptr[0]:m.indptr[1]]) > 0)


def test_summary_counts():
    d = Interactions.from_arrays([1, 1, 2], [1, 2, 1], [1, 5, 3], [1, 2, 3])
    s = d.summary()
    assert (s["n_users"], s["n_items"], s["n_interactions"]) == (2, 2, 3)
    assert s["rating_min"] == 1 and s["rating_max"] == 5
    assert s["interactions_per_user"]["max"] == 2
    assert "Interactions(3 explicit rows" in repr(d)


@pytest.mark.parametrize("ratings, match", [
    ([1.0, np.nan, 2.0], "rating at row 1"),
    ([1.0, 2.0, np.inf], "rating at row 2"),
    (np.array(["1", "x", "2"], dtype=object), "rating 'x' at row 1 is not a number"),
    (np.array([1, None, 2], dtype=object), "row 1"),
])
def test_bad_ratings_name_the_row(ratings, match):
    with pytest.raises(ValueError, match=match):
        Interactions.from_arrays([1, 2, 3], [1, 2, 3], ratings)


@pytest.mark.parametrize("users, match", [
    ([1, -4, 3], "negative user id -4 at row 1"),
    ([1.0, np.nan, 3.0], "missing user id at row 1"),
    (np.array(["a", None, "c"], dtype=object), "missing user id at row 1"),
    (np.array(["a", "b", ""]), "missing user id at row 2"),
    ([1.0, 2.5, 3.0], "user id 2.5 at row 1 is not an integer"),
])
def test_bad_ids_name_the_row(users, match):
    with pytest.raises(ValueError, match=match):
        Interactions.from_arrays(users, [1, 2, 3], [1, 2, 3])


def test_bad_item_ids_and_timestamps():
    with pytest.raises(ValueError, match="negative item id -1 at row 2"):
        Interactions.from_arrays([1, 2, 3], [1, 2, -1])
    with pytest.raises(ValueError, match="timestamp at row 0"):
        Interactions.from_arrays([1, 2], [1, 2], [1, 2], [np.nan, 3.0])
    with pytest.raises(ValueError, match="same length|shape"):
        Interactions.from_arrays([1, 2], [1, 2, 3])


def test_from_pandas_and_from_arrow_agree():
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    df = pd.DataFrame({"u": ["x", "y", "x"], "i": [3, 1, 1], "r": [4.0, 5.0, 1.0], "t": [3, 2, 1]})
    a = Interactions.from_pandas(df, user="u", item="i", rating="r", timestamp="t")
    b = Interactions.from_arrow(pa.Table.from_pandas(df), user="u", item="i", rating="r", timestamp="t")
    for x in (a, b):
        np.testing.assert_array_equal(x.user_raw_ids, ["x", "y"])
        np.testing.assert_array_equal(x.csr().toarray(), [[1, 4], [5, 0]])
    with pytest.raises(ValueError, match="columns"):
        Interactions.from_pandas(df, user="nope", item="i")
    t = pa.table({"user": [1, None, 3], "item": [1, 2, 3]})
    with pytest.raises(ValueError, match="missing user id at row 1"):
        Interactions.from_arrow(t)
    t = pa.table({"user": ["a", "b", None], "item": [1, 2, 3]})
    with pytest.raises(ValueError, match="missing user id at row 2"):
        Interactions.from_arrow(t)
    t = pa.table({"user": ["a", "b"], "item": [1, 2], "rating": pa.array([1, None], pa.int32())})
    with pytest.raises(ValueError, match="rating at row 1"):
        Interactions.from_arrow(t)
    df2 = df.assign(r=[1.0, None, 2.0])
    with pytest.raises(ValueError, match="rating at row 1"):
        Interactions.from_pandas(df2, user="u", item="i", rating="r", timestamp="t")


def test_features_align_take_and_missing_rows():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"id": [20, 10, 30], "occ": ["b", "a", None], "g": ["x|y", "", "y"], "age": [1.0, 2.0, None]})
    f = Features.from_pandas(df, id_column="id", categorical=["occ"], multi={"g": "|"}, numeric=["age"])
    assert f.cardinality("occ") == 2 and list(f.vocab["g"]) == ["x", "y"]
    np.testing.assert_array_equal(f.categorical["occ"], [1, 0, -1])
    d = Interactions.from_arrays([10, 20, 40], [1, 1, 1], user_features=f)
    uf = d.user_features
    assert d.summary()["users_without_features"] == 1
    np.testing.assert_array_equal(uf.categorical["occ"], [0, 1, -1])  # users 10, 20, 40
    indptr, codes = uf.multi["g"]
    np.testing.assert_array_equal(indptr, [0, 0, 2, 2])
    np.testing.assert_array_equal(codes, [0, 1])
    np.testing.assert_array_equal(uf.numeric["age"], np.array([2.0, 1.0, np.nan], np.float32))
    t = uf.take([2, 1])
    np.testing.assert_array_equal(t.multi["g"][0], [0, 0, 2])
    with pytest.raises(ValueError, match="rows"):
        Interactions.from_arrays([1, 2], [1, 1], user_features=Features(3, numeric={"a": np.zeros(3)}))


def test_features_validation():
    with pytest.raises(ValueError, match="vocabulary"):
        Features(2, categorical={"a": np.array([0, 1])})
    with pytest.raises(ValueError, match="codes outside"):
        Features(2, categorical={"a": np.array([0, 5])}, vocab={"a": ["x", "y"]})
    with pytest.raises(ValueError, match="indptr"):
        Features(2, multi={"g": (np.array([0, 1]), np.array([0]))}, vocab={"g": ["x"]})
    with pytest.raises(ValueError, match="unique"):
        Features(2, numeric={"a": np.zeros(2)}, ids=[1, 1])


def test_data_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, metarec_fast, metarec_fast.data, metarec_fast.datasets; "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'pooch', 'torch', 'platformdirs') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
