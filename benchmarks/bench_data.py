"""Data-layer benchmarks (pytest-benchmark; not collected by the test run).

    .venv/bin/python -m pytest benchmarks/bench_data.py --benchmark-group-by=group

Targets (2 cores): load MovieLens 100K < 1 s; a 1M-row ``::`` file < 3 s; split
1M interactions into tasks < 2 s; synthetic 10M interactions in a few seconds.
Every benchmark first checks its result against a reference, then times it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metarec_fast.data import (
    Interactions,
    batch_padded,
    cold_start_split,
    load_ml1m,
    load_ml100k,
    make_synthetic,
    sample_negatives,
)

ML100K = Path(os.environ.get("METAREC_TEST_ML100K",
                             Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"))
N_DAT = 1_000_000


@pytest.fixture(scope="module")
def dat_folder(tmp_path_factory):
    """A 1M-row ratings.dat in the ML-1M format (``::``, latin-1), with unique (user, item) pairs."""
    rng = np.random.default_rng(0)
    n_users, n_items = 6040, 3952
    keys = rng.choice(n_users * n_items, N_DAT, replace=False)
    users, items = keys // n_items + 1, keys % n_items + 1
    ratings = rng.integers(1, 6, N_DAT)
    ts = rng.integers(956_703_932, 1_046_454_590, N_DAT)
    folder = tmp_path_factory.mktemp("ml-1m-like")
    lines = np.char.add(np.char.add(np.char.add(np.char.add(users.astype(str), "::"), items.astype(str)), "::"),
                        np.char.add(np.char.add(ratings.astype(str), "::"), ts.astype(str)))
    (folder / "ratings.dat").write_text("\n".join(lines.tolist()) + "\n", encoding="latin-1")
    return folder, users, items, ratings


@pytest.mark.benchmark(group="load")
@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason="MovieLens 100K not found")
def test_load_ml100k(benchmark):
    d = benchmark(load_ml100k, ML100K)
    assert (d.n_users, d.n_items, len(d)) == (943, 1682, 100_000)


@pytest.mark.benchmark(group="load-1m-dat")
def test_load_1m_dat_pyarrow(benchmark, dat_folder):
    folder, users, items, ratings = dat_folder
    d = benchmark.pedantic(load_ml1m, args=(folder,), kwargs={"features": False}, rounds=3, iterations=1)
    assert len(d) == N_DAT
    np.testing.assert_array_equal(d.user_raw(d.users), users)
    np.testing.assert_array_equal(d.item_raw(d.items), items)
    np.testing.assert_array_equal(d.ratings, ratings)


@pytest.mark.benchmark(group="load-1m-dat")
def test_load_1m_dat_pandas_python_engine_peer(benchmark, dat_folder):
    pd = pytest.importorskip("pandas")
    folder, users, _, _ = dat_folder

    def peer():
        df = pd.read_csv(folder / "ratings.dat", sep="::", engine="python", header=None,
                         names=["user", "item", "rating", "timestamp"], encoding="latin-1")
        return Interactions.from_pandas(df)

    d = benchmark.pedantic(peer, rounds=1, iterations=1)
    assert len(d) == N_DAT


@pytest.fixture(scope="module")
def synthetic_1m():
    return make_synthetic(20_000, 5_000, 1_000_000, random_state=0)


@pytest.mark.benchmark(group="split")
def test_split_1m(benchmark, synthetic_1m):
    d = synthetic_1m
    split = benchmark.pedantic(cold_start_split, args=(d,), kwargs={"support": 10, "random_state": 0},
                               rounds=3, iterations=1)
    # reference: every row of an eligible user lands in support or query, support = first 10 by time
    act = d.user_activity()
    assert sum(t.support.n_interactions + t.query.n_interactions for t in split) == int(act[act >= 11].sum())
    u = int(split.test.users[0])
    rows = np.flatnonzero(d.users == u)
    first = rows[np.lexsort((d.items[rows], d.timestamps[rows]))[:10]]
    np.testing.assert_array_equal(split.test.support.items[:10], d.items[first])


@pytest.mark.benchmark(group="synthetic")
def test_synthetic_10m(benchmark):
    d = benchmark.pedantic(make_synthetic, args=(200_000, 20_000, 10_000_000), kwargs={"random_state": 0},
                           rounds=1, iterations=1)
    assert 9_000_000 < len(d) <= 10_100_000
    assert d.csr().nnz == len(d)


@pytest.mark.benchmark(group="batch")
def test_batch_padded_256_tasks(benchmark, synthetic_1m):
    train = cold_start_split(synthetic_1m, support=10, random_state=0).train
    idx = np.random.default_rng(0).choice(len(train), 256, replace=False)
    p = benchmark(batch_padded, train.query, idx)
    for row in (0, 100, 255):
        t = idx[row]
        ref = train.query.items[train.query.indptr[t]:train.query.indptr[t + 1]]
        np.testing.assert_array_equal(p.items[row, :len(ref)], ref)


@pytest.mark.benchmark(group="negatives")
def test_negatives_1m(benchmark, synthetic_1m):
    m = synthetic_1m.csr()
    neg = benchmark(sample_negatives, m, m.shape[1], 50, "popularity", synthetic_1m.item_popularity(), 0)
    rows = np.repeat(np.arange(m.shape[0]), 50)
    assert not np.asarray(m[rows[:200_000], neg.ravel()[:200_000]]).any()
