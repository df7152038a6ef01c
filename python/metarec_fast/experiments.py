"""One call that runs baselines and meta-learners on one cold-start split,
over several seeds, and reports mean and standard deviation.

    from metarec_fast import datasets, experiments
    data = datasets.movielens("100k")
    report = experiments.run(data, scenario="user", support=10, seeds=(0, 1, 2))
    print(report.table())
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .evaluation import PROTOCOLS, Report, evaluate, format_table

logger = logging.getLogger("metarec_fast")

META_ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd")
BASELINES = ("popularity", "bias", "pretrain-finetune", "itemknn", "ease")
SCENARIOS = {"user-cold": "user", "item-cold": "item", "both-cold": "both", "warm": "warm",
             "user": "user", "item": "item", "both": "both"}


@dataclass
class MetaConfig:
    """Meta-learner settings shared by every algorithm of an experiment."""

    dim: int = 32
    inner_steps: int = 5
    inner_lr: float = 0.1
    l2: float = 0.0
    outer_lr: float = 0.005
    meta_batch_size: int = 32
    epochs: int = 30
    patience: int | None = 5
    engine: str = "auto"
    model: str = "mf"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ExperimentReport:
    """Mean and std over seeds, per model, in the schema of ``report.json``."""

    dataset: str
    scenario: str
    support: int | str
    seeds: list[int]
    results: list[dict[str, Any]]
    counts: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        return {"dataset": self.dataset, "scenario": self.scenario, "support": self.support,
                "seeds": self.seeds, "results": self.results, "counts": self.counts,
                "config": self.config, "version": __version__, "per_seed": self.per_seed,
                "history": self.history}

    def table(self, metrics: Sequence[str] | None = None) -> str:
        return format_table(self.results, metrics)

    def __str__(self) -> str:
        return self.table()


def _baseline(name: str) -> Any:
    from . import baselines as b

    table = {"popularity": b.Popularity, "bias": b.BiasBaseline, "pretrain-finetune": b.PretrainFinetune,
             "itemknn": b.ItemKNN, "ease": b.EASE}
    if name not in table:
        raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
    return table[name]()


def run(
    data: Any,
    scenario: str = "user",
    support: int | str = 10,
    query: int | str = "rest",
    by: str = "time",
    seeds: Sequence[int] = (0,),
    algorithms: Sequence[str] = META_ALGORITHMS + BASELINES,
    meta: MetaConfig | None = None,
    protocols: Sequence[str] = PROTOCOLS,
    ks: Sequence[int] = (1, 3, 5, 10, 20),
    threshold: float = 4.0,
    dataset_name: str = "",
    show_progress: bool = True,
    split_kwargs: dict[str, Any] | None = None,
    on_seed: Callable[[int, Any, list[Any]], Any] | None = None,
) -> ExperimentReport:
    """Split ``data`` once per seed, fit every algorithm, evaluate on the test tasks.

    ``algorithms`` mixes meta-learners (``maml``, ``fomaml``, ``reptile``,
    ``metasgd``) and baselines (``popularity``, ``bias``, ``pretrain-finetune``,
    ``itemknn``, ``ease``). Unknown names raise ValueError before any work.
    ``on_seed(seed, split, scorers)``, if given, is called after each seed's
    evaluation with that seed's split and fitted models (to save or reuse them).
    """
    from .data import cold_start_split

    meta = meta or MetaConfig()
    unknown = [a for a in algorithms if a not in META_ALGORITHMS + BASELINES]
    if unknown:
        raise ValueError(f"unknown algorithm(s) {unknown}; choose from {META_ALGORITHMS + BASELINES}")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {sorted(SCENARIOS)}")
    if not seeds:
        raise ValueError("seeds must not be empty")
    per_seed: list[dict[str, Any]] = []
    seconds: dict[str, list[float]] = {}
    history: dict[str, list[dict[str, float]]] = {}
    counts: dict[str, Any] = {}
    for seed in seeds:
        split = cold_start_split(data, scenario=SCENARIOS[scenario], by=by, support=support, query=query,
                                 random_state=seed, **(split_kwargs or {}))
        counts[f"seed{seed}"] = {"train_tasks": len(split.train), "val_tasks": len(split.val),
                                 "test_tasks": len(split.test)}
        scorers = []
        for name in algorithms:
            start = time.perf_counter()
            if name in META_ALGORITHMS:
                scorer, hist = _fit_meta(name, split, data, meta, seed, show_progress)
                history[f"{scorer.name}/seed{seed}"] = hist
            else:
                scorer = _baseline(name)
                if split.train.implicit and not hasattr(scorer, "predicts_ratings"):
                    continue
                try:
                    scorer.fit(split.train, split.val)
                except ValueError as exc:  # e.g. a rating baseline on implicit data
                    logger.warning("skipping %s: %s", name, exc)
                    continue
            seconds.setdefault(scorer.name, []).append(time.perf_counter() - start)
            scorers.append(scorer)
            logger.info("seed %d: fitted %s in %.1f s", seed, scorer.name, seconds[scorer.name][-1])
        rep: Report = evaluate(scorers, split.test, protocols=protocols, ks=ks, threshold=threshold)
        per_seed.append({"seed": seed, **rep.to_dict()})
        if on_seed is not None:
            on_seed(seed, split, scorers)
    results = aggregate_seeds(per_seed, seconds)
    config = {"by": by, "query": query, "protocols": list(protocols), "ks": list(ks),
              "threshold": threshold, "algorithms": list(algorithms), "meta": meta.to_dict(),
              "split": dict(split_kwargs or {})}
    return ExperimentReport(dataset_name, scenario, support, list(seeds), results, counts, config,
                            per_seed, history)


def _fit_meta(name: str, split: Any, data: Any, meta: MetaConfig, seed: int, show_progress: bool):
    import torch

    from .meta import MetaScorer, MetaTrainer
    from .models import MetaMF

    torch.manual_seed(seed)
    if meta.model not in ("mf", "melu"):
        raise ValueError(f"unknown model {meta.model!r} for experiments.run; choose 'mf' or 'melu'")
    mean = float(np.mean(split.train.query.ratings)) if len(split.train) else 0.0
    loss = "logistic" if split.train.implicit else "mse"
    user_features = None
    if meta.model == "melu":
        model, user_features = melu_model(data, dim=meta.dim, loss=loss,
                                          rating_offset=0.0 if split.train.implicit else mean, random_state=seed)
    else:
        model = MetaMF(split.train.n_items, dim=meta.dim, random_state=seed, loss=loss,
                       global_bias=0.0 if split.train.implicit else mean)
    trainer = MetaTrainer(model, name, inner_steps=meta.inner_steps, inner_lr=meta.inner_lr, l2=meta.l2,
                          outer_lr=meta.outer_lr, meta_batch_size=meta.meta_batch_size,
                          engine=meta.engine, random_state=seed, user_features=user_features)
    trainer.fit(split.train, split.val, epochs=meta.epochs, patience=meta.patience,
                show_progress=show_progress)
    prefix = "metamf" if meta.model == "mf" else meta.model
    return MetaScorer(trainer, name=f"{prefix}-{name}"), trainer.history


def melu_model(data: Any, dim: int = 32, hidden: Sequence[int] = (64, 64), loss: str = "mse",
               rating_offset: float = 0.0, random_state: int | None = None) -> tuple[Any, np.ndarray]:
    """A :class:`~metarec_fast.models.MeLU` over the dataset's side features, and the
    ``[n_users, F]`` user feature codes its trainer needs (``MetaTrainer(user_features=...)``).

    Categorical item features become item embeddings, the first multi-valued one
    (e.g. genres) a pooled embedding, categorical user features user embeddings."""
    from .models import MeLU

    if data.item_features is None or data.user_features is None:
        raise ValueError("model 'melu' needs user and item side features; this dataset has "
                         f"{'no item' if data.item_features is None else 'no user'} features")
    if not data.item_features.categorical and not data.item_features.multi:
        raise ValueError("model 'melu' needs categorical or multi-valued item features; this dataset has none")
    return MeLU.from_features(data.item_features, data.user_features, embedding_dim=dim,
                              hidden=tuple(hidden), loss=loss, rating_offset=rating_offset,
                              random_state=random_state)


def aggregate_seeds(per_seed: list[dict[str, Any]], seconds: dict[str, list[float]]) -> list[dict[str, Any]]:
    names: list[str] = []
    for run_ in per_seed:
        for r in run_["results"]:
            if r["model"] not in names:
                names.append(r["model"])
    out = []
    for name in names:
        rows = [r for run_ in per_seed for r in run_["results"] if r["model"] == name]
        keys = list(rows[0]["metrics"])
        mean = {k: float(np.nanmean([r["metrics"][k] for r in rows])) if any(
            not math.isnan(r["metrics"][k]) for r in rows) else math.nan for k in keys}
        std = {k: float(np.nanstd([r["metrics"][k] for r in rows])) if any(
            not math.isnan(r["metrics"][k]) for r in rows) else math.nan for k in keys}
        algorithm = name.split("-", 1)[1] if name.startswith(("metamf-", "melu-")) else None
        out.append({"model": name, "algorithm": algorithm, "metrics": mean, "std": std,
                    "train_seconds": float(np.mean(seconds.get(name, [math.nan])))})
    return out
