"""Evaluation protocols and baselines, against direct per-user computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metarec_fast import datasets
from metarec_fast.baselines import EASE, BiasBaseline, ItemKNN, Popularity, train_matrix
from metarec_fast.data import cold_start_split
from metarec_fast.evaluation import Report, evaluate


@pytest.fixture(scope="module")
def split():
    data = datasets.synthetic(n_users=300, n_items=120, n_interactions=9000, random_state=1)
    return cold_start_split(data, scenario="user", support=5, query="rest", random_state=0)


class RandomScorer:
    predicts_ratings = True

    def __init__(self, name="random", seed=0):
        self.name, self.seed = name, seed

    def score(self, tasks):
        # Deterministic per user so batching does not change the scores.
        rng = [np.random.default_rng(self.seed * 100_000 + int(u)) for u in tasks.users]
        return np.stack([g.uniform(1, 5, tasks.n_items) for g in rng])


def direct_metrics(scores, tasks, k, threshold=4.0, tie_order=None):
    """Per-user loops: the reference for evaluate(). Equal scores go to the item that
    comes first in ``tie_order`` (default: the lower id)."""
    tie_rank = np.arange(tasks.n_items)
    if tie_order is not None:
        tie_rank = np.empty(tasks.n_items, dtype=np.int64)
        tie_rank[tie_order] = np.arange(tasks.n_items)
    ndcgs, precs, recalls, q_ndcgs = [], [], [], []
    abs_err, sq_err, n = 0.0, 0.0, 0
    for u in range(len(tasks)):
        s0, s1 = tasks.support.indptr[u], tasks.support.indptr[u + 1]
        q0, q1 = tasks.query.indptr[u], tasks.query.indptr[u + 1]
        sup = set(tasks.support.items[s0:s1].tolist())
        q_items = tasks.query.items[q0:q1]
        q_r = tasks.query.ratings[q0:q1].astype(float)
        pred = scores[u, q_items]
        abs_err += np.abs(pred - q_r).sum()
        sq_err += ((pred - q_r) ** 2).sum()
        n += len(q_items)
        # MeLU's within-query nDCG@k, graded gain.
        order = np.argsort(-pred, kind="stable")
        gains = 2 ** q_r - 1
        disc = 1 / np.log2(np.arange(2, tasks.n_items + 2))
        idcg = (np.sort(gains)[::-1][:k] * disc[: min(k, len(gains))]).sum()
        if idcg > 0:
            q_ndcgs.append((gains[order][:k] * disc[: min(k, len(gains))]).sum() / idcg)
        # Full ranking with support excluded; ties to the lower id.
        cand = [i for i in np.lexsort((tie_rank, -scores[u])) if i not in sup][:k]
        rel = set(q_items[q_r >= threshold].tolist())
        if not rel:
            continue
        hits = np.array([i in rel for i in cand], dtype=float)
        dcg = (hits * disc[: len(hits)]).sum()
        ideal = disc[: min(k, len(rel))].sum()
        ndcgs.append(dcg / ideal)
        precs.append(hits.sum() / k)
        recalls.append(hits.sum() / len(rel))
    return dict(mae=abs_err / n, rmse=math.sqrt(sq_err / n), ndcg=np.mean(ndcgs),
                precision=np.mean(precs), recall=np.mean(recalls), query_ndcg=np.mean(q_ndcgs),
                evaluated=len(ndcgs), skipped=len(tasks) - len(ndcgs))


@pytest.mark.parametrize("batch_size", [7, 1024])
def test_evaluate_matches_direct_computation(split, batch_size):
    model = RandomScorer()
    rep = evaluate([model], split.test, ks=(3, 10), batch_size=batch_size)
    ref = direct_metrics(model.score(split.test), split.test, 10)
    m = rep["random"]
    assert m["mae"] == pytest.approx(ref["mae"], rel=1e-9)
    assert m["rmse"] == pytest.approx(ref["rmse"], rel=1e-9)
    assert m["ndcg@10"] == pytest.approx(ref["ndcg"], rel=1e-9)
    assert m["precision@10"] == pytest.approx(ref["precision"], rel=1e-9)
    assert m["recall@10"] == pytest.approx(ref["recall"], rel=1e-9)
    assert m["query_ndcg@10"] == pytest.approx(ref["query_ndcg"], rel=1e-9)
    counts = rep.results[0]["counts"]
    assert counts["ranking_evaluated"] == ref["evaluated"]
    assert counts["ranking_skipped_no_relevant"] == ref["skipped"]


def test_report_is_json_and_has_a_table(split):
    rep = evaluate([RandomScorer("a", 0), RandomScorer("b", 1)], split.test, ks=(10,))
    import json

    back = json.loads(rep.to_json())
    assert [r["model"] for r in back["results"]] == ["a", "b"]
    table = rep.table()
    assert "ndcg@10" in table and "a" in table.splitlines()[1]
    assert isinstance(rep, Report) and rep.models() == ["a", "b"]
    with pytest.raises(KeyError, match="c"):
        rep["c"]


def test_evaluate_rejects_bad_arguments(split):
    with pytest.raises(ValueError, match="protocol"):
        evaluate([RandomScorer()], split.test, protocols=("speed",))
    with pytest.raises(ValueError, match="unique"):
        evaluate([RandomScorer(), RandomScorer()], split.test)
    with pytest.raises(ValueError, match="ks"):
        evaluate([RandomScorer()], split.test, ks=(0,))


def test_popularity_scores_are_training_counts(split):
    pop = Popularity().fit(split.train)
    counts = np.asarray(train_matrix(split.train, binary=True).sum(0)).ravel()
    s = pop.score(split.test.subset([0, 1]))
    assert np.array_equal(s[0], counts) and np.array_equal(s[1], counts)


def test_bias_baseline_formula_and_tuning(split):
    b = BiasBaseline(reg_item=3.0, reg_user=7.0).fit(split.train)
    m = train_matrix(split.train).tocoo()
    mu = m.data.mean()
    bi = np.zeros(split.train.n_items)
    for i in range(split.train.n_items):
        r = m.data[m.col == i]
        bi[i] = (r - mu).sum() / (3.0 + len(r))
    t = split.test
    s = b.score(t)
    for u in range(3):
        items = t.support.items[t.support.indptr[u]:t.support.indptr[u + 1]]
        r = t.support.ratings[t.support.indptr[u]:t.support.indptr[u + 1]]
        bu = (r - mu - bi[items]).sum() / (7.0 + len(r))
        np.testing.assert_allclose(s[u], mu + bi + bu, rtol=1e-9)
    tuned = BiasBaseline().fit(split.train, split.val)
    assert tuned.tuning["reg_item"] in tuned.grid and np.isfinite(tuned.tuning["val_rmse"])


def test_ease_matches_closed_form(split):
    e = EASE(reg=50.0).fit(split.train)
    x = train_matrix(split.train, binary=True).toarray()
    g = x.T @ x + 50.0 * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    b = np.eye(x.shape[1]) - p / np.diag(p)
    np.testing.assert_allclose(e.B, b, atol=1e-5)
    tuned = EASE(grid=(10.0, 100.0)).fit(split.train, split.val)
    assert tuned.reg_ in (10.0, 100.0)


def test_itemknn_matches_cosine(split):
    knn = ItemKNN(n_neighbors=None, shrink=0.0).fit(split.train)
    x = train_matrix(split.train, binary=True).toarray()
    norms = np.linalg.norm(x, axis=0)
    sim = (x.T @ x) / (np.outer(norms, norms) + 1e-12)
    np.fill_diagonal(sim, 0)
    np.testing.assert_allclose(knn.sim, sim, atol=1e-6)


def test_unfitted_baseline_raises(split):
    with pytest.raises(RuntimeError, match="not fitted"):
        Popularity().score(split.test)


torch = pytest.importorskip("torch")


def test_pretrain_finetune_runs_and_tunes(split):
    from metarec_fast.baselines import PretrainFinetune

    pf = PretrainFinetune(dim=8, epochs=2, step_grid=(0, 5), lr_grid=(0.05,)).fit(split.train, split.val)
    s = pf.score(split.test)
    assert s.shape == (len(split.test), split.test.n_items) and np.isfinite(s).all()
    assert pf.tuning["steps"] in (0, 5)


def test_meta_scorer_engines_agree(split):
    from metarec_fast.meta import MetaScorer, MetaTrainer
    from metarec_fast.models import MetaMF

    scores = {}
    for engine in ("cpp", "torch"):
        model = MetaMF(split.train.n_items, dim=4, random_state=0, dtype=torch.float64, global_bias=3.0)
        trainer = MetaTrainer(model, "maml", inner_steps=2, inner_lr=0.05, meta_batch_size=32,
                              engine=engine, random_state=0).fit(split.train, epochs=1, show_progress=False)
        scores[engine] = MetaScorer(trainer).score(split.test)
    np.testing.assert_allclose(scores["cpp"], scores["torch"], rtol=1e-9)


def test_taskbatch_csr_shortcut_equals_unpadding(split):
    from dataclasses import replace

    from metarec_fast.meta import TaskBatch
    from metarec_fast.meta.cpp_engine import batch_to_csr

    batch = TaskBatch.from_tasks(split.train, np.arange(0, 40, 3), dtype=torch.float64)
    assert batch.csr is not None
    fast, rows_fast = batch_to_csr(batch, torch.float64)
    slow, rows_slow = batch_to_csr(replace(batch, csr=None), torch.float64)
    assert fast.keys() == slow.keys()
    for key in fast:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)
    assert torch.equal(rows_fast, rows_slow)


def test_trainer_rejects_tasks_from_another_id_space(split):
    from dataclasses import replace

    from metarec_fast.meta import MetaTrainer
    from metarec_fast.models import MetaMF

    trainer = MetaTrainer(MetaMF(split.train.n_items + 1, dim=2))
    with pytest.raises(ValueError, match="id space"):
        trainer.fit(split.train, epochs=1, show_progress=False)
    trainer = MetaTrainer(MetaMF(split.train.n_items, dim=2))
    with pytest.raises(ValueError, match="different datasets"):
        trainer.fit(split.train, replace(split.val, fingerprint="other"), epochs=1, show_progress=False)


def test_ranking_among_cold_items_matches_direct_computation():
    data = datasets.synthetic(n_users=300, n_items=120, n_interactions=9000, random_state=2)
    split = cold_start_split(data, scenario="item", support=3, query="rest", random_state=0)
    test = split.test
    cold = np.unique(test.cold_items)
    assert cold.size > 0
    model = RandomScorer()
    rep = evaluate([model], test, protocols=("full_ranking",), ks=(5,), candidates="cold")
    scores = model.score(test)
    ndcgs = []
    for u in range(len(test)):
        s0, s1 = test.support.indptr[u], test.support.indptr[u + 1]
        q0, q1 = test.query.indptr[u], test.query.indptr[u + 1]
        sup = set(test.support.items[s0:s1].tolist())
        order = [int(i) for i in cold[np.lexsort((cold, -scores[u, cold]))] if int(i) not in sup][:5]
        rel = set(test.query.items[q0:q1][test.query.ratings[q0:q1] >= 4].tolist())
        if not rel:
            continue
        disc = 1 / np.log2(np.arange(2, 7))
        dcg = sum(disc[r] for r, i in enumerate(order) if i in rel)
        ndcgs.append(dcg / disc[: min(5, len(rel))].sum())
    assert rep["random"]["ndcg@5"] == pytest.approx(np.mean(ndcgs), rel=1e-9)
    assert rep.config["candidates"] == "cold"
    with pytest.raises(ValueError, match="cold items"):
        evaluate([model], split_without_cold(), candidates="cold")
    with pytest.raises(ValueError, match="candidates"):
        evaluate([model], test, candidates="warm")


def split_without_cold():
    data = datasets.synthetic(n_users=100, n_items=50, n_interactions=2000, random_state=0)
    return cold_start_split(data, scenario="user", support=3, random_state=0).test


class CoarseScorer:
    """Scores with many ties (three levels), the way counts and unseen items tie."""

    predicts_ratings = False
    name = "coarse"

    def score(self, tasks):
        return np.tile((np.arange(tasks.n_items) % 3).astype(float), (len(tasks), 1))


@pytest.mark.parametrize("tie_seed", [0, 1, 7])
def test_ties_are_broken_by_a_seeded_random_order_not_by_id(split, tie_seed):
    model = CoarseScorer()
    rep = evaluate([model], split.test, protocols=("full_ranking",), ks=(10,), tie_seed=tie_seed)
    perm = np.random.default_rng(tie_seed).permutation(split.test.n_items)
    ref = direct_metrics(model.score(split.test), split.test, 10, tie_order=perm)
    assert rep["coarse"]["ndcg@10"] == pytest.approx(ref["ndcg"], rel=1e-12)
    assert rep["coarse"]["recall@10"] == pytest.approx(ref["recall"], rel=1e-12)
    by_id = direct_metrics(model.score(split.test), split.test, 10)
    assert rep["coarse"]["ndcg@10"] != pytest.approx(by_id["ndcg"], rel=1e-6)
    assert "random" in rep.config["ties"]
    again = evaluate([model], split.test, protocols=("full_ranking",), ks=(10,), tie_seed=tie_seed)
    assert again["coarse"] == rep["coarse"]


def test_equal_query_predictions_are_not_ordered_by_time(split):
    """A constant predictor's within-query nDCG is a random-order nDCG: it changes with
    the tie seed and is not the nDCG of the query in its time order."""
    const = CoarseScorer()
    const.score = lambda tasks: np.zeros((len(tasks), tasks.n_items))
    values = {evaluate([const], split.test, protocols=("query_ranking",), ks=(3,), tie_seed=s)["coarse"][
        "query_ndcg@3"] for s in range(4)}
    assert len(values) == 4
    time_order = direct_metrics(np.zeros((len(split.test), split.test.n_items)), split.test, 3)["query_ndcg"]
    assert time_order not in values


def test_candidates_auto_ranks_new_items_among_new_items():
    data = datasets.synthetic(n_users=300, n_items=120, n_interactions=9000, random_state=2)
    split = cold_start_split(data, scenario="item", support=3, query="rest", random_state=0)
    model = RandomScorer()
    auto = evaluate([model], split.test, protocols=("full_ranking",), ks=(5,))
    cold = evaluate([model], split.test, protocols=("full_ranking",), ks=(5,), candidates="cold")
    assert auto.config["candidates"] == "cold" and auto["random"] == cold["random"]
    assert auto.config["n_candidates"] == np.unique(split.test.cold_items).size
    user = evaluate([model], split_without_cold(), protocols=("full_ranking",), ks=(5,))
    assert user.config["candidates"] == "all"


def test_als_fold_in_is_the_exact_least_squares_solve(split):
    from metarec_fast.baselines import ALS

    als = ALS(factors=8, reg=1.0, alpha=5.0, iterations=3).fit(split.train)
    y = als.item_factors
    scores = als.score(split.test)
    for u in (0, 3, len(split.test) - 1):
        s = split.test.support
        items = np.unique(s.items[s.indptr[u]:s.indptr[u + 1]])
        a = y.T @ y + 1.0 * np.eye(8) + 5.0 * y[items].T @ y[items]
        x = np.linalg.solve(a, 6.0 * y[items].sum(0))
        np.testing.assert_allclose(scores[u], y @ x, rtol=1e-9, atol=1e-12)
    # Tuned on validation nDCG@10 over its grid; it beats popularity here.
    tuned = ALS(factor_grid=(8,), reg_grid=(1.0, 10.0), alpha_grid=(5.0,), iterations=3).fit(split.train, split.val)
    assert tuned.tuning["trials"] == 2 and tuned.reg_ in (1.0, 10.0)
    rep = evaluate([tuned, Popularity().fit(split.train)], split.test, protocols=("full_ranking",), ks=(10,))
    assert rep["als"]["ndcg@10"] > rep["popularity"]["ndcg@10"]
