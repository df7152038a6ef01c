"""Recommender: adapt + recommend without torch, save/load, online updates."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from metarec_fast.serving import Recommender, UserStates


def make_recommender(seed=0, n_items=50, d=6, dtype=np.float64, **kw):
    rng = np.random.default_rng(seed)
    return Recommender(rng.normal(size=(n_items, d)).astype(dtype), rng.normal(size=n_items).astype(dtype),
                       rng.normal(size=d).astype(dtype) * 0.1, 0.2, alpha=0.05, steps=4, l2=0.01, **kw)


def reference_adapt(rec, items, ratings, p, b, steps):
    for _ in range(steps):
        f = rec.item_vectors[items] @ p + b + rec.item_offsets[items]
        d1 = 2 * (f - ratings)
        n = max(len(items), 1)  # an empty support set: only the L2 term moves p
        gp = (d1[:, None] * rec.item_vectors[items]).sum(0) / n + rec.l2 * p
        gb = d1.sum() / n
        p, b = p - rec.alpha[0] * gp, b - rec.alpha_b * gb
    return p, b


def test_adapt_matches_reference_and_recommend_excludes_seen():
    rec = make_recommender()
    support = [([3, 7, 9], [5.0, 1.0, 4.0]), ([0], [2.0]), ([], [])]
    states = rec.adapt(support)
    for u, (items, ratings) in enumerate(support):
        p, b = reference_adapt(rec, np.array(items, dtype=int), np.array(ratings), rec.p0.copy(), rec.b0, 4)
        np.testing.assert_allclose(states.p[u], p, rtol=1e-12)
        np.testing.assert_allclose(states.b[u], b, rtol=1e-12)
    ids, scores = rec.recommend(states, k=rec.n_items)
    full = rec.score(states, np.arange(rec.n_items))
    for u, (items, _) in enumerate(support):
        valid = ids[u][ids[u] >= 0]
        assert not set(items) & set(valid.tolist())
        assert len(valid) == rec.n_items - len(items)
        expected = [i for i in np.lexsort((np.arange(rec.n_items), -full[u])) if i not in items]
        assert valid.tolist() == expected
        np.testing.assert_allclose(scores[u][: len(valid)], full[u][valid], rtol=1e-5)
        assert np.all(ids[u][len(valid):] == -1) and np.all(np.isneginf(scores[u][len(valid):]))


def test_filter_items_and_include_seen():
    rec = make_recommender(1)
    states = rec.adapt([([1, 2], [5.0, 5.0])])
    ids, _ = rec.recommend(states, k=rec.n_items, exclude_seen=False, filter_items=[4, 5])
    assert {1, 2} <= set(ids[0].tolist()) and not {4, 5} & set(ids[0].tolist())


def test_online_update_continues_from_state():
    rec = make_recommender(2)
    first = rec.adapt(([1, 2, 3], [4.0, 2.0, 5.0]))
    second = rec.adapt(([10, 11], [1.0, 3.0]), state=first)
    p, b = reference_adapt(rec, np.array([10, 11]), np.array([1.0, 3.0]), first.p[0].copy(), first.b[0], 4)
    np.testing.assert_allclose(second.p[0], p, rtol=1e-12)
    np.testing.assert_allclose(second.b[0], b, rtol=1e-12)
    assert second.seen_items.tolist() == [1, 2, 3, 10, 11]
    ids, _ = rec.recommend(second, k=rec.n_items)
    assert not {1, 2, 3, 10, 11} & set(ids[0].tolist())


def test_states_slice():
    rec = make_recommender(3)
    states = rec.adapt([([1], [1.0]), ([2, 3], [2.0, 3.0]), ([4], [4.0])])
    sub = states[1:]
    assert len(sub) == 2 and sub.seen_items.tolist() == [2, 3, 4]
    assert isinstance(sub, UserStates)


def test_save_load_round_trip(tmp_path):
    rec = make_recommender(4, dtype=np.float32, config={"note": "x"})
    path = rec.save(tmp_path / "bundle.npz")
    back = Recommender.load(path)
    support = [([1, 5, 8], [5.0, 3.0, 1.0]), ([2], [4.0])]
    a, b = rec.adapt(support), back.adapt(support)
    assert np.array_equal(a.p, b.p) and np.array_equal(a.b, b.b)
    ra, rb = rec.recommend(a, k=7), back.recommend(b, k=7)
    assert np.array_equal(ra[0], rb[0]) and np.array_equal(ra[1], rb[1])
    assert back.config == {"note": "x"}


def test_corrupt_truncated_and_foreign_files(tmp_path):
    path = make_recommender(5).save(tmp_path / "b.npz")
    data = bytearray(path.read_bytes())
    (tmp_path / "trunc.npz").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="truncated or foreign"):
        Recommender.load(tmp_path / "trunc.npz")
    # Flip one byte inside the largest array's payload.
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError):
        Recommender.load(tmp_path / "flip.npz")
    np.savez(tmp_path / "foreign.npz", x=np.arange(3))
    with pytest.raises(ValueError):
        Recommender.load(tmp_path / "foreign.npz")
    with pytest.raises(FileNotFoundError):
        Recommender.load(tmp_path / "missing.npz")


def test_bad_input():
    rec = make_recommender(6)
    with pytest.raises(IndexError, match="99"):
        rec.adapt(([1, 99], [1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        rec.adapt(([1, 2], [1.0, np.nan]))
    with pytest.raises(ValueError, match="ratings"):
        rec.adapt(([1, 2], [1.0]))
    with pytest.raises(TypeError):
        rec.adapt("user 1 liked item 2")
    states = rec.adapt(([1], [1.0]))
    with pytest.raises(ValueError, match="k"):
        rec.recommend(states, k=0)
    with pytest.raises(ValueError, match="state has"):
        rec.adapt([([1], [1.0]), ([2], [1.0])], state=states)
    with pytest.raises(ValueError, match="alpha_b"):
        Recommender(np.zeros((3, 2)), np.zeros(3), np.zeros(2), 0.0, alpha=np.ones(2))


def test_conditioned_initialisation():
    rng = np.random.default_rng(0)
    rec = make_recommender(7, init_weight=rng.normal(size=(7, 3)), init_bias=rng.normal(size=7))
    with pytest.raises(ValueError, match="user_features"):
        rec.adapt(([1], [2.0]))
    x = rng.normal(size=(1, 3))
    states = rec.adapt(([1], [2.0]), user_features=x, steps=0)
    shift = x @ rec.init_weight.T + rec.init_bias
    np.testing.assert_allclose(states.p[0], rec.p0 + shift[0, :6])
    np.testing.assert_allclose(states.b[0], rec.b0 + shift[0, 6])


def test_serving_never_imports_torch(tmp_path):
    code = f"""
import sys, numpy as np
from metarec_fast.serving import Recommender
rng = np.random.default_rng(0)
rec = Recommender(rng.normal(size=(100, 8)).astype(np.float32), np.zeros(100, np.float32),
                  np.zeros(8, np.float32), 3.5, steps=3)
states = rec.adapt([([1, 2, 3], [5.0, 4.0, 1.0])])
ids, scores = rec.recommend(states, k=5)
rec.save(r"{tmp_path / 'b.npz'}")
Recommender.load(r"{tmp_path / 'b.npz'}")
assert ids.shape == (1, 5)
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


torch = pytest.importorskip("torch")


def test_round_trip_from_trained_model(tmp_path):
    from metarec_fast.meta import MetaTrainer, TaskBatch
    from metarec_fast.models import MetaMF

    rng = np.random.default_rng(0)
    sup = [(rng.choice(40, 5, replace=False).tolist(), rng.integers(1, 6, 5).astype(float).tolist()) for _ in range(32)]
    qry = [(rng.choice(40, 5, replace=False).tolist(), rng.integers(1, 6, 5).astype(float).tolist()) for _ in range(32)]
    tasks = TaskBatch.from_lists(sup, qry, dtype=torch.float64)
    model = MetaMF(40, dim=4, random_state=0, dtype=torch.float64, global_bias=3.0)
    trainer = MetaTrainer(model, "metasgd", inner_steps=3, inner_lr=0.05, meta_batch_size=8,
                          outer_lr=0.01, random_state=0).fit(tasks, epochs=2, show_progress=False)
    rec = Recommender.from_model(model, trainer, dtype=np.float64)
    adapted = trainer.learner.adapt(tasks)
    states = rec.adapt(sup)
    np.testing.assert_allclose(states.p, adapted["head_p"].detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(states.b, adapted["head_b"].detach().numpy(), rtol=1e-10)
    back = Recommender.load(rec.save(tmp_path / "m.npz"))
    ids_a, sc_a = rec.recommend(states, k=10)
    ids_b, sc_b = back.recommend(back.adapt(sup), k=10)
    assert np.array_equal(ids_a, ids_b) and np.array_equal(sc_a, sc_b)
