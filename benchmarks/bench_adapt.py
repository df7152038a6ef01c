"""Fast adaptation benchmarks: the C++ inner loop against the torch engines.

Run (not part of the test suite):

    python -m pytest benchmarks/bench_adapt.py --benchmark-group-by=group
    python benchmarks/adapt_memory.py        # peak memory, T = 5 and 50

Groups:

* ``adapt-fwd+bwd-1024x20xd64-T5``: one meta-gradient (second-order MAML) for
  1,024 users with 20 support and 20 query items each, d=64, T=5. Peers:
  ``engine="cpp"`` (one autograd Function around the C++ kernel), ``engine="torch"``
  (torch.func vmap over users), and a per-user autograd loop written the way
  learn2learn users write it (clone, ``autograd.grad(create_graph=True)``).
* ``serve-adapt+recommend-<items>``: one new user with 10 ratings, adapt then
  top-10 (numpy + C++ only), for 1,682 and 100,000 items; and a batch of 1,000
  new users.

Every peer is checked against the C++ result before timing. Thread count:
METAREC_BENCH_THREADS (default 2) for every peer.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metarec_fast.meta import MetaLearner, TaskBatch  # noqa: E402
from metarec_fast.models import MetaMF  # noqa: E402
from metarec_fast.serving import Recommender  # noqa: E402

THREADS = int(os.environ.get("METAREC_BENCH_THREADS", "2"))
torch.set_num_threads(THREADS)
N_USERS, N_SUPPORT, N_QUERY, DIM, STEPS, N_ITEMS = 1024, 20, 20, 64, 5, 10_000


@lru_cache(maxsize=1)
def problem():
    rng = np.random.default_rng(0)
    sup, qry = [], []
    for _ in range(N_USERS):
        items = rng.choice(N_ITEMS, N_SUPPORT + N_QUERY, replace=False)
        r = rng.integers(1, 6, N_SUPPORT + N_QUERY).astype(float)
        sup.append((items[:N_SUPPORT].tolist(), r[:N_SUPPORT].tolist()))
        qry.append((items[N_SUPPORT:].tolist(), r[N_SUPPORT:].tolist()))
    return TaskBatch.from_lists(sup, qry, dtype=torch.float32)


def make_learner(engine):
    model = MetaMF(N_ITEMS, dim=DIM, random_state=0, global_bias=3.0)
    return MetaLearner(model, "maml", inner_steps=STEPS, inner_lr=0.05, engine=engine)


def meta_gradient(learner, batch):
    learner.zero_grad(set_to_none=True)
    learner(batch).backward()
    return learner.model.item_embedding.grad


def per_user_loop(learner, batch):
    """The learn2learn way: one user at a time, create_graph=True."""
    model = learner.model
    model.zero_grad(set_to_none=True)
    total = 0.0
    for u in range(batch.n_tasks):
        p, b = model.head_p, model.head_b
        it, y = batch.support_items[u], batch.support_ratings[u]
        h, c = model.item_embedding[it], model.item_bias[it] + model.global_bias
        for _ in range(STEPS):
            loss = ((h @ p + b + c - y) ** 2).mean()
            gp, gb = torch.autograd.grad(loss, (p, b), create_graph=True)
            p, b = p - 0.05 * gp, b - 0.05 * gb
        qi = batch.query_items[u]
        pred = model.item_embedding[qi] @ p + b + model.item_bias[qi] + model.global_bias
        total = total + ((pred - batch.query_ratings[u]) ** 2).mean()
    (total / batch.n_tasks).backward()
    return model.item_embedding.grad


@lru_cache(maxsize=1)
def reference_gradient():
    return meta_gradient(make_learner("cpp"), problem()).clone()


GROUP = f"adapt-fwd+bwd-{N_USERS}x{N_SUPPORT}xd{DIM}-T{STEPS}"


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["cpp", "torch"])
def test_meta_gradient(benchmark, engine):
    learner, batch = make_learner(engine), problem()
    torch.testing.assert_close(meta_gradient(learner, batch), reference_gradient(), rtol=1e-3, atol=1e-6)
    benchmark(meta_gradient, learner, batch)


@pytest.mark.benchmark(group=GROUP)
def test_meta_gradient_per_user_autograd_loop(benchmark):
    learner, batch = make_learner("torch"), problem()
    torch.testing.assert_close(per_user_loop(learner, batch), reference_gradient(), rtol=1e-3, atol=1e-6)
    benchmark.pedantic(per_user_loop, args=(learner, batch), rounds=3, iterations=1)


@lru_cache(maxsize=2)
def recommender(n_items):
    rng = np.random.default_rng(1)
    return Recommender(rng.standard_normal((n_items, DIM), dtype=np.float32) * 0.1,
                       rng.standard_normal(n_items, dtype=np.float32) * 0.1 + 3.5,
                       np.zeros(DIM, np.float32), 0.0, alpha=0.05, steps=STEPS)


def serve(rec, support, k=10):
    return rec.recommend(rec.adapt(support, num_threads=THREADS), k=k, num_threads=THREADS)


@pytest.mark.parametrize("n_items", [1_682, 100_000])
def test_serve_one_user(benchmark, n_items):
    benchmark.group = f"serve-adapt+recommend-1user-{n_items}items"
    rec = recommender(n_items)
    rng = np.random.default_rng(2)
    support = (rng.choice(n_items, 10, replace=False), rng.integers(1, 6, 10).astype(float))
    ids, scores = serve(rec, support)
    full = rec.score(rec.adapt(support), np.arange(n_items))[0]
    full[support[0]] = -np.inf
    assert set(ids[0].tolist()) == set(np.argsort(-full, kind="stable")[:10].tolist())
    benchmark(serve, rec, support)


@pytest.mark.parametrize("n_items", [1_682, 100_000])
def test_serve_batch_of_1000_users(benchmark, n_items):
    benchmark.group = f"serve-adapt+recommend-1000users-{n_items}items"
    rec = recommender(n_items)
    rng = np.random.default_rng(3)
    support = [(rng.choice(n_items, 10, replace=False), rng.integers(1, 6, 10).astype(float))
               for _ in range(1000)]
    ids, _ = serve(rec, support)
    assert ids.shape == (1000, 10) and (ids >= 0).all()
    benchmark(serve, rec, support)
