"""Options that make the meta-learners competitive on the quality protocol:
pretrained initialisation, implicit training with sampled negatives, interaction
weighting of the meta-objective, body learning rate / weight decay, and their
experiments.MetaConfig switches."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metarec_fast import datasets, experiments  # noqa: E402
from metarec_fast.baselines import BiasBaseline  # noqa: E402
from metarec_fast.data import cold_start_split  # noqa: E402
from metarec_fast.meta import MetaLearner, MetaScorer, MetaTrainer, TaskBatch  # noqa: E402
from metarec_fast.meta.inner import query_losses  # noqa: E402
from metarec_fast.models import MetaMF  # noqa: E402


@pytest.fixture(scope="module")
def split():
    data = datasets.synthetic(n_users=120, n_items=50, n_interactions=3000, random_state=1)
    return data, cold_start_split(data, scenario="user", support=5, random_state=0)


# -- TaskBatch.with_negatives --------------------------------------------------
@pytest.mark.parametrize("n_q,n_s", [(0, 0), (3, 0), (0, 2), (4, 3)])
def test_with_negatives_matches_per_task_reference(n_q, n_s):
    g = np.random.default_rng(n_q * 10 + n_s)
    sup = [(g.choice(30, k, replace=False).tolist(), g.integers(1, 6, k).astype(float).tolist())
           for k in (1, 4, 2)]
    qry = [(g.choice(30, k, replace=False).tolist(), g.integers(1, 6, k).astype(float).tolist())
           for k in (3, 0, 5)]
    batch = TaskBatch.from_lists(sup, qry, dtype=torch.float64)
    qn = g.integers(0, 30, (3, n_q)) if n_q else None
    sn = g.integers(0, 30, (3, n_s)) if n_s else None
    out = batch.with_negatives(qn, sn)
    for side, sets, neg in (("support", sup, sn), ("query", qry, qn)):
        items, target, mask = (getattr(out, f"{side}_{k}") for k in ("items", "ratings", "mask"))
        for t, (it, _) in enumerate(sets):
            real = mask[t] > 0
            ref_items = list(it) + ([] if neg is None else neg[t].tolist())
            ref_targets = [1.0] * len(it) + [0.0] * (0 if neg is None else neg.shape[1])
            assert items[t][real].tolist() == ref_items
            assert target[t][real].tolist() == ref_targets
            assert (target[t][~real] == 0).all()
    assert out.support_items.dtype == torch.int64 and out.query_ratings.dtype == torch.float64
    with pytest.raises(ValueError, match="negatives"):
        batch.with_negatives(np.zeros((2, 3), np.int64))


# -- negatives in the trainer -----------------------------------------------------
def logistic_trainer(split, seed=0, algorithm="maml", **kw):
    data, (train, val, test) = split
    model = MetaMF(train.n_items, dim=4, loss="logistic", random_state=seed, dtype=torch.float64)
    kw.setdefault("negatives", 6)
    return MetaTrainer(model, algorithm, inner_steps=2, inner_lr=0.5, outer_lr=0.02, meta_batch_size=16,
                       random_state=seed, **kw)


def test_trainer_negatives_avoid_the_task_positives(split):
    _, (train, _, _) = split
    tr = logistic_trainer(split, negatives=7, support_negatives=3)
    idx = np.array([5, 0, 9, 3])
    batch = tr.batch(train, idx)
    for row, t in enumerate(idx):
        s_items = set(train.support.items[train.support.indptr[t]:train.support.indptr[t + 1]].tolist())
        q_items = set(train.query.items[train.query.indptr[t]:train.query.indptr[t + 1]].tolist())
        for side, n, forbidden, positives in (("support", 3, s_items, s_items),
                                              ("query", 7, s_items | q_items, q_items)):
            items, target, mask = (getattr(batch, f"{side}_{k}")[row] for k in ("items", "ratings", "mask"))
            real = mask > 0
            neg = items[real & (target == 0)].tolist()
            pos = items[real & (target == 1)].tolist()
            assert len(neg) == n and not set(neg) & forbidden
            assert sorted(pos) == sorted(positives)


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_implicit_training_is_deterministic_and_learns(split, algorithm):
    _, (train, val, _) = split
    a = logistic_trainer(split, seed=2, algorithm=algorithm, support_negatives=2)
    before = a.validation_loss(val)
    assert a.validation_loss(val) == before  # validation negatives are fixed
    a.fit(train, val, epochs=4, show_progress=False)
    b = logistic_trainer(split, seed=2, algorithm=algorithm, support_negatives=2).fit(
        train, val, epochs=4, show_progress=False)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    assert min(r["val_loss"] for r in a.history) < before


def test_negative_options_are_validated(split):
    _, (train, _, _) = split
    mse = MetaMF(train.n_items, dim=3)
    with pytest.raises(ValueError, match="logistic"):
        MetaTrainer(mse, negatives=5)
    with pytest.raises(ValueError, match="negatives"):
        logistic_trainer(split, negatives=-1)
    with pytest.raises(ValueError, match="negative_method"):
        logistic_trainer(split, negative_method="hard")
    with pytest.raises(ValueError, match="weight_decay"):
        MetaTrainer(mse, weight_decay=-1.0)
    with pytest.raises(ValueError, match="body_lr"):
        MetaTrainer(mse, body_lr=0.0)
    with pytest.raises(ValueError, match="task_weighting"):
        MetaTrainer(mse, task_weighting="user")


@pytest.mark.parametrize("engine", ["cpp", "torch"])
def test_logistic_scorer_adapts_on_binary_targets_and_negatives(split, engine):
    _, (train, _, test) = split
    tr = logistic_trainer(split, engine=engine, support_negatives=4).fit(train, epochs=1, show_progress=False)
    sc = MetaScorer(tr, random_state=3)
    assert sc.support_negatives == 4
    sub = test.subset(np.arange(6))
    indptr, items, targets = sc._support_csr(sub)
    neg = sc._support_negatives(sub)
    for t in range(len(sub)):
        s = sub.support.items[sub.support.indptr[t]:sub.support.indptr[t + 1]]
        row_items, row_t = items[indptr[t]:indptr[t + 1]], targets[indptr[t]:indptr[t + 1]]
        assert row_items.tolist() == s.tolist() + neg[t].tolist()
        assert row_t.tolist() == [1.0] * len(s) + [0.0] * 4
        assert not set(neg[t].tolist()) & set(s.tolist())
    # Reference: adapt the torch way on the same implicit support sets.
    batch = TaskBatch.from_tasks(sub, dtype=torch.float64).with_negatives(None, neg)
    with torch.no_grad():
        ref = tr.learner.adapt(batch) if engine == "torch" else MetaLearner(
            tr.model, "maml", 2, 0.5, engine="torch").adapt(batch)
        H, c = tr.model.item_representations()
        expected = (ref["head_p"] @ H.T + ref["head_b"][:, None] + c[None, :]).numpy()
    np.testing.assert_allclose(sc.score(sub), expected, rtol=1e-6, atol=1e-6)


# -- task weighting ----------------------------------------------------------------
@pytest.mark.parametrize("engine", ["cpp", "torch"])
def test_interaction_weighting_is_the_pooled_query_loss(engine):
    g = np.random.default_rng(0)
    sup = [(g.choice(20, 3, replace=False).tolist(), g.normal(3, 1, 3).tolist()) for _ in range(4)]
    qry = [(g.choice(20, k, replace=False).tolist(), g.normal(3, 1, k).tolist()) for k in (1, 7, 0, 3)]
    batch = TaskBatch.from_lists(sup, qry, dtype=torch.float64)
    model = MetaMF(20, dim=3, random_state=0, dtype=torch.float64, global_bias=3.0)
    task = MetaLearner(model, "maml", 2, 0.1, engine=engine)
    inter = MetaLearner(model, "maml", 2, 0.1, engine=engine, task_weighting="interaction")
    ref = MetaLearner(model, "maml", 2, 0.1, engine="torch")
    with torch.no_grad():
        per_task = query_losses(model, ref.adapt(batch), batch)
    counts = batch.query_mask.sum(-1)
    pooled = float((per_task * counts).sum() / counts.sum())
    task_mean = float(per_task[counts > 0].mean())
    assert float(inter(batch).detach()) == pytest.approx(pooled, rel=1e-10)
    assert float(task(batch).detach()) == pytest.approx(task_mean, rel=1e-10)
    assert not math.isclose(pooled, task_mean)


# -- body learning rate / weight decay ------------------------------------------------
def test_body_lr_and_weight_decay_only_touch_the_body():
    model = MetaMF(10, dim=2, random_state=0, user_feature_dim=3)
    tr = MetaTrainer(model, "metasgd", outer_lr=0.01, body_lr=0.001, weight_decay=0.1)
    head, body = tr.optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names.get(id(p), "lr") for p in head["params"]) == sorted(
        ["head_p", "head_b", "init_net.weight", "init_net.bias", "lr", "lr"])
    assert sorted(names[id(p)] for p in body["params"]) == ["global_bias", "item_bias", "item_embedding"]
    assert (head["lr"], head["weight_decay"]) == (0.01, 0.0)
    assert (body["lr"], body["weight_decay"]) == (0.001, 0.1)
    plain = MetaTrainer(MetaMF(10, dim=2), outer_lr=0.01)
    assert len(plain.optimizer.param_groups) == 1


# -- pretrained initialisation ---------------------------------------------------------
def test_from_pretrained_reproduces_the_pretrained_predictions():
    g = np.random.default_rng(0)
    src = SimpleNamespace(H=g.normal(size=(12, 4)), c=g.normal(3, 0.5, 12), p0=g.normal(size=4), b0=0.25)
    model = MetaMF.from_pretrained(src, dtype=torch.float64)
    items = torch.arange(12)
    with torch.no_grad():
        got = model(items).numpy()
    np.testing.assert_allclose(got, src.H @ src.p0 + src.b0 + src.c, rtol=1e-12)
    assert model.dim == 4 and model.loss == "mse"
    # Keyword arrays override the source; the item table can stay random.
    m2 = MetaMF.from_pretrained(item_offset=src.c, dim=3, random_state=1, dtype=torch.float64)
    assert m2.item_embedding.shape == (12, 3)
    np.testing.assert_allclose((m2.item_bias + m2.global_bias).detach().numpy(), src.c, rtol=1e-12)


def test_from_pretrained_bias_baseline(split):
    _, (train, val, _) = split
    bb = BiasBaseline().fit(train, val)
    model = MetaMF.from_pretrained(bb, dim=3, init_scale=0.0, random_state=0, dtype=torch.float64)
    with torch.no_grad():
        got = model(torch.arange(train.n_items)).numpy()
    np.testing.assert_allclose(got, bb.mu + bb.item_bias, rtol=1e-10)


def test_from_pretrained_validates():
    with pytest.raises(TypeError, match="pretrained"):
        MetaMF.from_pretrained(object())
    with pytest.raises(ValueError, match="needs"):
        MetaMF.from_pretrained()
    with pytest.raises(ValueError, match="items"):
        MetaMF.from_pretrained(item_embedding=np.zeros((4, 2)), item_offset=np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        MetaMF.from_pretrained(item_offset=np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="head_p"):
        MetaMF.from_pretrained(item_embedding=np.zeros((4, 2)), head_p=np.zeros(3))
    with pytest.raises(ValueError, match="dim"):
        MetaMF.from_pretrained(item_embedding=np.zeros((4, 2)), dim=3)


# -- experiments -------------------------------------------------------------------------
def test_experiments_meta_variants_and_pretrained_init(split):
    data, _ = split
    rating = experiments.MetaConfig(dim=3, epochs=1, inner_steps=1, init="pretrained", body_lr=1e-3,
                                    task_weighting="interaction")
    implicit = experiments.MetaConfig(dim=3, epochs=1, inner_steps=1, loss="logistic", negatives=5,
                                      support_negatives=2)
    rep = experiments.run(data, support=5, seeds=(0,), algorithms=("bias",), ks=(3, 10), show_progress=False,
                          meta_variants=[("metamf-maml", "maml", rating),
                                         ("metamf-maml-implicit", "maml", implicit)])
    by = {r["model"]: r for r in rep.results}
    assert list(by) == ["bias", "metamf-maml", "metamf-maml-implicit"]
    assert not math.isnan(by["metamf-maml"]["metrics"]["mae"])
    assert math.isnan(by["metamf-maml-implicit"]["metrics"]["mae"])  # a ranking model: no ratings
    assert not math.isnan(by["metamf-maml-implicit"]["metrics"]["ndcg@10"])
    assert by["metamf-maml-implicit"]["algorithm"] == "maml"
    assert rep.to_dict()["config"]["meta_variants"][1]["meta"]["negatives"] == 5


def test_experiments_reject_bad_meta_configs(split):
    data, _ = split
    with pytest.raises(ValueError, match="init"):
        experiments.run(data, algorithms=("maml",), meta=experiments.MetaConfig(init="warm"))
    with pytest.raises(ValueError, match="loss"):
        experiments.run(data, algorithms=("maml",), meta=experiments.MetaConfig(loss="bpr"))
    with pytest.raises(ValueError, match="meta_variants"):
        experiments.run(data, algorithms=(), meta_variants=[("x", "sgd", experiments.MetaConfig())])
