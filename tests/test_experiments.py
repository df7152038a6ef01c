"""experiments.run: one call, several seeds, mean and std per model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")

from metarec_fast import datasets, experiments  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic(n_users=250, n_items=80, n_interactions=6000, random_state=3)


def test_run_reports_mean_and_std_over_seeds(data):
    rep = experiments.run(data, support=5, seeds=(0, 1), algorithms=("maml", "bias", "popularity"),
                          meta=experiments.MetaConfig(dim=4, epochs=1, inner_steps=1), objectives="rating",
                          ks=(3, 10), show_progress=False, dataset_name="synthetic")
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["seeds"] == [0, 1] and d["dataset"] == "synthetic" and d["support"] == 5
    names = [r["model"] for r in d["results"]]
    assert names == ["bias", "popularity", "metamf-maml"]  # baselines first
    for r in d["results"]:
        assert set(r) >= {"model", "algorithm", "metrics", "std", "train_seconds"}
        assert r["train_seconds"] >= 0
    by = {r["model"]: r for r in rep.results}
    seeds = [s["results"] for s in rep.per_seed]
    for name in names:
        vals = [next(x for x in run_ if x["model"] == name)["metrics"]["ndcg@10"] for run_ in seeds]
        assert by[name]["metrics"]["ndcg@10"] == pytest.approx(np.mean(vals))
        assert by[name]["std"]["ndcg@10"] == pytest.approx(np.std(vals))
    assert math.isnan(by["popularity"]["metrics"]["mae"])
    assert by["metamf-maml"]["algorithm"] == "maml" and by["bias"]["algorithm"] is None
    assert "metamf-maml/seed0" in rep.history
    assert "ndcg@10" in rep.table()


def test_run_validates_before_work(data):
    with pytest.raises(ValueError, match="sgd"):
        experiments.run(data, algorithms=("sgd",))
    with pytest.raises(ValueError, match="scenario"):
        experiments.run(data, scenario="lukewarm")
    with pytest.raises(ValueError, match="seeds"):
        experiments.run(data, seeds=())


def test_rating_and_ranking_models_tuned_on_validation(data):
    tiny = dict(dim=4, epochs=1, inner_steps=1)
    rep = experiments.run(data, support=5, seeds=(0, 1), algorithms=("fomaml", "popularity", "bias"),
                          meta=experiments.MetaConfig(**tiny),
                          rank_meta=experiments.MetaConfig(loss="softmax", negatives=20, **tiny),
                          tune=3, ks=(3, 10), show_progress=False)
    names = [r["model"] for r in rep.results]
    assert names == ["popularity", "bias", "metamf-fomaml", "metamf-fomaml-rank"]
    by = {r["model"]: r for r in rep.results}
    # The ranking model reports no rating error; the rating model does.
    assert math.isnan(by["metamf-fomaml-rank"]["metrics"]["mae"]) and by["metamf-fomaml"]["metrics"]["mae"] > 0
    tuning = rep.config["tuning"]
    for name, metric in (("metamf-fomaml", "rmse"), ("metamf-fomaml-rank", "ndcg@10")):
        for seed in ("seed0", "seed1"):
            trials = tuning[name][seed]
            assert len(trials) == 3 and trials[0]["config"]["dim"] == 4  # the given config is trial 0
            assert all(math.isfinite(t["value"]) for t in trials)
            assert len({json.dumps(t["config"], sort_keys=True) for t in trials}) == 3
    assert tuning["bias"]["seed0"]["reg_item"] is not None
    assert set(rep.config["search_space"]) == {"rating", "ranking"}
    assert rep.config["candidates"] == "all" and "random" in rep.config["ties"]
    # Paired comparison with the best baseline on each headline metric.
    cmp = by["metamf-fomaml"]["vs_best_baseline"]["mae"]
    assert cmp["baseline"] == "bias" and cmp["seeds"] == 2 and len(cmp["diffs"]) == 2
    assert "ndcg@10" in rep.comparison() and "best baseline" in rep.comparison()
    with pytest.raises(ValueError, match="tune"):
        experiments.run(data, tune=0)
    with pytest.raises(ValueError, match="objectives"):
        experiments.run(data, objectives=("clicks",))


def test_compare_to_baselines_counts_wins_and_signs():
    per_seed = [{"results": [{"model": "a", "metrics": {"mae": m_a, "ndcg@10": n_a}},
                             {"model": "b", "metrics": {"mae": m_b, "ndcg@10": n_b}},
                             {"model": "x", "metrics": {"mae": m_x, "ndcg@10": n_x}}]}
                for m_a, n_a, m_b, n_b, m_x, n_x in [(0.9, 0.2, 0.8, 0.1, 0.7, 0.3),
                                                     (0.9, 0.2, 0.8, 0.1, 0.85, 0.1),
                                                     (0.9, 0.2, 0.8, 0.1, 0.75, 0.25)]]
    results = [{"model": m} for m in ("a", "b", "x")]
    experiments.compare_to_baselines(results, per_seed, ["a", "b"], metrics=("mae", "ndcg@10"))
    mae, ndcg = results[2]["vs_best_baseline"]["mae"], results[2]["vs_best_baseline"]["ndcg@10"]
    assert mae["baseline"] == "b" and ndcg["baseline"] == "a"  # lower MAE, higher nDCG
    np.testing.assert_allclose(mae["diffs"], [0.1, -0.05, 0.05])  # positive = better than the baseline
    np.testing.assert_allclose(ndcg["diffs"], [0.1, -0.1, 0.05])
    assert mae["wins"] == 2 and ndcg["wins"] == 2 and mae["seeds"] == 3
    assert 0 < mae["p_ttest"] < 1


def test_tuning_select_keeps_the_best_and_survives_failures():
    from metarec_fast import tuning

    base = experiments.MetaConfig(dim=4)
    cands = tuning.sample_configs(base, tuning.RATING_SPACE, 5, random_state=0)
    assert cands[0] is base and len({repr(c) for c in cands}) == 5
    values = {id(c): v for c, v in zip(cands, [0.9, 0.5, math.nan, 0.7, 0.5])}

    def fit(c):
        if c is cands[3]:
            raise ValueError("diverged")
        return c

    best, trials = tuning.select(cands, fit, lambda c: values[id(c)], lower_is_better=True)
    assert best is cands[1]  # the first of the two 0.5s
    assert [t.get("error") for t in trials] == [None, None, None, "diverged", None]
    best, _ = tuning.select(cands, fit, lambda c: values[id(c)], lower_is_better=False)
    assert best is cands[0]
    # No finite value: the first fitted candidate; every fit failing: the first error again.
    best, _ = tuning.select(cands, fit, lambda c: math.nan, lower_is_better=True)
    assert best is cands[0]
    with pytest.raises(ValueError, match="diverged"):
        tuning.select(cands, lambda c: fit(cands[3]), lambda c: 0.0, lower_is_better=True)
    with pytest.raises(ValueError, match="trials"):
        tuning.sample_configs(base, tuning.RATING_SPACE, 0)
