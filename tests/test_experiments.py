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
                          meta=experiments.MetaConfig(dim=4, epochs=1, inner_steps=1),
                          ks=(3, 10), show_progress=False, dataset_name="synthetic")
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["seeds"] == [0, 1] and d["dataset"] == "synthetic" and d["support"] == 5
    names = [r["model"] for r in d["results"]]
    assert names == ["metamf-maml", "bias", "popularity"]
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
