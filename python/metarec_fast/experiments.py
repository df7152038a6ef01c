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
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .evaluation import PROTOCOLS, Report, evaluate, format_table

logger = logging.getLogger("metarec_fast")

META_ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd")
BASELINES = ("popularity", "bias", "pretrain-finetune", "itemknn", "ease", "als")
#: Metrics where lower is better; every other metric is higher-is-better.
LOWER_IS_BETTER = ("mae", "rmse")
#: The metrics every results table compares against the best baseline.
HEADLINE_METRICS = ("mae", "rmse", "query_ndcg@3", "ndcg@10", "recall@10")
#: ``MetaConfig.loss`` values that train a ranking model; "softmax" and "bpr" adapt
#: with the logistic loss and rank the query set against sampled negatives in the
#: meta-objective (the model's ``query_objective``).
RANKING_LOSSES = ("logistic", "softmax", "bpr")
LOSSES = ("auto", "mse") + RANKING_LOSSES
SCENARIOS = {"user-cold": "user", "item-cold": "item", "both-cold": "both", "warm": "warm",
             "user": "user", "item": "item", "both": "both"}


@dataclass
class MetaConfig:
    """Meta-learner settings shared by every algorithm of an experiment.

    ``init="pretrained"`` starts MetaMF's body and head from a
    :class:`~metarec_fast.baselines.PretrainFinetune` fitted on the same
    training tasks (:meth:`MetaMF.from_pretrained`, "meta-fine-tuning"), with
    ``body_lr`` as the body's outer learning rate. ``loss``: ``"auto"`` (MSE for
    explicit ratings, logistic for implicit data), ``"mse"`` or ``"logistic"``;
    with ``"logistic"`` on explicit ratings every interaction is a positive and
    ``negatives`` / ``support_negatives`` sampled items per task are the
    negatives (the implicit / ranking variant). ``user_features=True``
    conditions theta_0 on the one-hot user features of the dataset.
    ``task_weighting``, ``weight_decay``: see :class:`~metarec_fast.meta.MetaTrainer`.
    """

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
    init: str = "random"
    body_lr: float | None = None
    weight_decay: float = 0.0
    task_weighting: str = "task"
    loss: str = "auto"
    negatives: int = 0
    support_negatives: int = 0
    user_features: bool = False
    support_encoder: bool = False
    support_sizes: tuple[int, ...] | None = None
    positive_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: The rating model a user gets by default (explicit ratings): meta-fine-tuning
#: from the pretrained MF, the pooled (per-interaction) objective that MAE/RMSE
#: measure. Chosen on validation users (benchmarks/RESULTS.md, "Quality").
RATING_DEFAULT = MetaConfig(init="pretrained", dim=32, inner_steps=10, inner_lr=0.03, outer_lr=0.005,
                            body_lr=1e-3, task_weighting="interaction", epochs=30, patience=5)
#: The ranking model a user gets by default: logistic inner loop on the support
#: items plus 50 sampled negatives, the logQ-corrected sampled softmax of the
#: query items against 400 sampled negatives as meta-objective (an estimate of
#: the full-catalogue softmax). On MovieLens 100K (validation and three seeds) it
#: gave the best recall@10 of the ranking variants tried; pointwise logistic gave
#: a higher nDCG@10 and a lower recall (benchmarks/RESULTS.md). ``--tune`` searches both.
RANKING_DEFAULT = MetaConfig(loss="softmax", dim=32, inner_steps=5, inner_lr=0.5, outer_lr=0.01, negatives=400,
                             support_negatives=50, epochs=40, patience=5)
OBJECTIVES = ("rating", "ranking")


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

    def comparison(self, metrics: Sequence[str] = HEADLINE_METRICS) -> str:
        """Paired per-seed comparison with the best baseline (:func:`comparison_table`)."""
        return comparison_table(self.results, metrics)

    def __str__(self) -> str:
        return self.table()


def _baseline(name: str) -> Any:
    from . import baselines as b

    table = {"popularity": b.Popularity, "bias": b.BiasBaseline, "pretrain-finetune": b.PretrainFinetune,
             "itemknn": b.ItemKNN, "ease": b.EASE, "als": b.ALS}
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
    meta_variants: Sequence[tuple[str, str, MetaConfig]] = (),
    trainer_class: Any = None,
    rank_meta: MetaConfig | None = None,
    objectives: str | Sequence[str] = "auto",
    tune: int = 1,
    tune_fixed: Sequence[str] = (),
) -> ExperimentReport:
    """Split ``data`` once per seed, fit every algorithm, evaluate on the test tasks.

    ``algorithms`` mixes meta-learners (``maml``, ``fomaml``, ``reptile``,
    ``metasgd``) and baselines (``popularity``, ``bias``, ``pretrain-finetune``,
    ``itemknn``, ``ease``). Unknown names raise ValueError before any work.
    ``on_seed(seed, split, scorers)``, if given, is called after each seed's
    evaluation with that seed's split and fitted models (to save or reuse them).

    ``meta_variants``: extra meta-learners as ``(row name, algorithm, MetaConfig)``,
    e.g. ``("metamf-maml-implicit", "maml", MetaConfig(loss="logistic", negatives=400))``,
    each with its own settings, fitted and reported after ``algorithms``.

    ``trainer_class``: the meta-trainer (default :class:`~metarec_fast.meta.MetaTrainer`;
    :class:`~metarec_fast.distributed.DistributedMetaTrainer` under torchrun).

    ``objectives``: which model each meta-learner trains: ``"rating"`` (MSE on
    ratings, row ``metamf-<alg>``, config ``meta``, default :data:`RATING_DEFAULT`),
    ``"ranking"`` (config ``rank_meta``, default :data:`RANKING_DEFAULT`; row
    ``metamf-<alg>-rank``, or ``metamf-<alg>`` on implicit data, where ``meta``
    serves when ``rank_meta`` is not given), or both; ``"auto"`` = both for
    explicit ratings, ranking for implicit feedback.

    ``tune``: trials per meta-learner and objective (1 = the given configuration
    only): the configuration, then random draws from the objective's search space
    (:mod:`metarec_fast.tuning`), each scored on the validation tasks only; the
    best is kept and every trial is recorded in the report's ``tuning``.
    ``tune_fixed``: MetaConfig fields the search leaves at the given value (what a
    user set explicitly, e.g. the command line's flags).
    """
    from .data import cold_start_split

    unknown = [a for a in algorithms if a not in META_ALGORITHMS + BASELINES]
    if unknown:
        raise ValueError(f"unknown algorithm(s) {unknown}; choose from {META_ALGORITHMS + BASELINES}")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {sorted(SCENARIOS)}")
    if not seeds:
        raise ValueError("seeds must not be empty")
    if isinstance(tune, bool) or not isinstance(tune, (int, np.integer)) or tune < 1:
        raise ValueError(f"tune must be an int >= 1 (trials per meta-learner), got {tune!r}")
    implicit = bool(getattr(data, "implicit", False))
    if objectives == "auto":
        objectives = ("ranking",) if implicit else OBJECTIVES
    objectives = (objectives,) if isinstance(objectives, str) else tuple(objectives)
    if not objectives or any(o not in OBJECTIVES for o in objectives):
        raise ValueError(f"objectives must be 'auto' or a subset of {OBJECTIVES}, got {objectives!r}")
    if "rating" in objectives and implicit:
        raise ValueError("objective 'rating' needs explicit ratings; this dataset is implicit feedback")
    configs = {"rating": meta or RATING_DEFAULT,
               "ranking": rank_meta or (meta if (implicit and meta is not None) else RANKING_DEFAULT)}
    suffix = {"rating": "", "ranking": "" if implicit else "-rank"}
    for variant in meta_variants:
        if len(variant) != 3 or variant[1] not in META_ALGORITHMS or not isinstance(variant[2], MetaConfig):
            raise ValueError(f"meta_variants entries are (name, algorithm in {META_ALGORITHMS}, MetaConfig); "
                             f"got {variant!r}")
        _check_meta(variant[2])
    for o in objectives:
        _check_meta(configs[o])
    prefix = {o: "melu" if configs[o].model == "melu" else "metamf" for o in objectives}
    # Baselines first: a fitted pretrain + fine-tune is the meta-fine-tuning start of the rating models.
    jobs = [(name, None, None, None) for name in algorithms if name not in META_ALGORITHMS]
    jobs += [(name, f"{prefix[o]}-{name}{suffix[o]}", configs[o], o) for name in algorithms
             if name in META_ALGORITHMS for o in objectives]
    jobs += [(a, n, c, _objective_of(c, implicit)) for n, a, c in meta_variants]
    tuning: dict[str, Any] = {}
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
        cache: dict[Any, Any] = {}
        for name, row, cfg, objective in jobs:
            start = time.perf_counter()
            if name in META_ALGORITHMS:
                scorer, hist, trials = _fit_tuned(name, split, data, cfg, objective, seed, show_progress, tune,
                                                  row, cache, trainer_class, threshold, tuple(tune_fixed))
                history[f"{scorer.name}/seed{seed}"] = hist
                if trials is not None:
                    tuning.setdefault(scorer.name, {})[f"seed{seed}"] = trials
            else:
                scorer = _baseline(name)
                if split.train.implicit and not hasattr(scorer, "predicts_ratings"):
                    continue
                try:
                    scorer.fit(split.train, split.val)
                except ValueError as exc:  # e.g. a rating baseline on implicit data
                    logger.warning("skipping %s: %s", name, exc)
                    continue
                if name == "pretrain-finetune":
                    cache[("pretrain", scorer.dim)] = scorer
                if scorer.tuning:
                    tuning.setdefault(scorer.name, {})[f"seed{seed}"] = scorer.tuning
            seconds.setdefault(scorer.name, []).append(time.perf_counter() - start)
            scorers.append(scorer)
            logger.info("seed %d: fitted %s in %.1f s", seed, scorer.name, seconds[scorer.name][-1])
        rep: Report = evaluate(scorers, split.test, protocols=protocols, ks=ks, threshold=threshold)
        per_seed.append({"seed": seed, **rep.to_dict()})
        if on_seed is not None:
            on_seed(seed, split, scorers)
    results = aggregate_seeds(per_seed, seconds)
    compare_to_baselines(results, per_seed, [r["model"] for r in results if r["algorithm"] is None])
    config = {"by": by, "query": query, "protocols": list(protocols), "ks": list(ks),
              "threshold": threshold, "algorithms": list(algorithms),
              "objectives": list(objectives), "meta": configs["rating"].to_dict(),
              "rank_meta": configs["ranking"].to_dict(), "tune": int(tune), "tune_fixed": list(tune_fixed),
              "search_space": {o: {k: list(v) for k, v in _space(o).items()} for o in objectives} if tune > 1 else {},
              "tuning": tuning, "candidates": per_seed[-1]["config"].get("candidates"),
              "ties": per_seed[-1]["config"].get("ties"),
              "meta_variants": [{"name": n, "algorithm": a, "meta": c.to_dict()} for n, a, c in meta_variants],
              "split": dict(split_kwargs or {})}
    return ExperimentReport(dataset_name, scenario, support, list(seeds), results, counts, config,
                            per_seed, history)


def _objective_of(cfg: MetaConfig, implicit: bool) -> str:
    """"ranking" for configurations that train a ranking model, else "rating"."""
    return "ranking" if cfg.loss in RANKING_LOSSES or (cfg.loss == "auto" and implicit) else "rating"


def _space(objective: str) -> Any:
    from . import tuning

    return tuning.RATING_SPACE if objective == "rating" else tuning.RANKING_SPACE


def _fit_tuned(name: str, split: Any, data: Any, cfg: MetaConfig, objective: str, seed: int,
               show_progress: bool, trials: int, row: str, cache: dict[Any, Any], trainer_class: Any,
               threshold: float, fixed: tuple[str, ...] = ()) -> tuple[Any, list[dict[str, float]],
                                                                       list[dict[str, Any]] | None]:
    """One meta-learner: the given configuration, or the best of ``trials`` on validation."""
    if trials == 1:
        return (*_fit_meta(name, split, data, cfg, seed, show_progress, row_name=row, cache=cache,
                           trainer_class=trainer_class), None)
    from . import tuning

    metric = tuning.SELECTION[objective]
    lower = metric in LOWER_IS_BETTER
    if cfg.model == "melu" or split.train.implicit:
        fixed += ("init", "support_encoder")
    candidates = tuning.sample_configs(cfg, _space(objective), trials, random_state=[seed, trials], fixed=fixed)
    protocol = "rating" if objective == "rating" else "full_ranking"

    def score(fitted: Any) -> float:
        return evaluate([fitted[0]], split.val, protocols=(protocol,), ks=(10,),
                        threshold=threshold)[fitted[0].name][metric]

    best, records = tuning.select(
        candidates, lambda c: _fit_meta(name, split, data, c, seed, False, row_name=row, cache=cache,
                                        trainer_class=trainer_class), score, lower)
    return best[0], best[1], records


def _check_meta(meta: MetaConfig) -> None:
    if meta.model not in ("mf", "melu"):
        raise ValueError(f"unknown model {meta.model!r} for experiments.run; choose 'mf' or 'melu'")
    if meta.model == "melu" and (meta.init != "random" or meta.user_features):
        raise ValueError("model 'melu' embeds its own features: use init='random', user_features=False")
    if meta.init not in ("random", "pretrained"):
        raise ValueError(f"MetaConfig.init must be 'random' or 'pretrained', got {meta.init!r}")
    if meta.loss not in LOSSES:
        raise ValueError(f"MetaConfig.loss must be one of {LOSSES}, got {meta.loss!r}")
    if meta.loss in ("softmax", "bpr") and not meta.negatives:
        raise ValueError(f"MetaConfig.loss={meta.loss!r} ranks each task's query items against sampled "
                         "negatives: set negatives > 0")


def _fit_meta(name: str, split: Any, data: Any, meta: MetaConfig, seed: int, show_progress: bool,
              row_name: str | None = None, cache: dict[Any, Any] | None = None, trainer_class: Any = None):
    import torch

    from .meta import MetaScorer, MetaTrainer
    from .models import MetaMF

    torch.manual_seed(seed)
    _check_meta(meta)
    cache = {} if cache is None else cache
    loss = meta.loss if meta.loss != "auto" else ("logistic" if split.train.implicit else "mse")
    objective = loss if loss in ("softmax", "bpr") else "pointwise"
    loss = "logistic" if objective != "pointwise" else loss
    extra = dict(support_encoder=meta.support_encoder, query_objective=objective)
    mean = float(np.mean(split.train.query.ratings)) if len(split.train) else 0.0
    uf = None
    if meta.user_features:
        from .models.features import one_hot

        if data.user_features is None:
            raise ValueError("MetaConfig.user_features=True but the dataset has no user features")
        uf = one_hot(data.user_features)
    feature_dim = uf.shape[1] if uf is not None else None
    if meta.model == "melu":
        model, uf = melu_model(data, dim=meta.dim, loss=loss,
                               rating_offset=0.0 if loss == "logistic" else mean, random_state=seed)
    elif meta.init == "pretrained":
        if loss != "mse" or split.train.implicit:
            raise ValueError("init='pretrained' starts from a rating MF; it needs explicit ratings and loss 'mse'")
        key = ("pretrain", meta.dim)
        if key not in cache:
            from .baselines import PretrainFinetune

            cache[key] = PretrainFinetune(dim=meta.dim, random_state=seed).fit(split.train, split.val)
        model = MetaMF.from_pretrained(cache[key], loss=loss, user_feature_dim=feature_dim, random_state=seed,
                                       **extra)
    else:
        model = MetaMF(split.train.n_items, dim=meta.dim, random_state=seed, loss=loss,
                       user_feature_dim=feature_dim, global_bias=0.0 if loss == "logistic" else mean, **extra)
    trainer = (trainer_class or MetaTrainer)(model, name, inner_steps=meta.inner_steps, inner_lr=meta.inner_lr, l2=meta.l2,
                          outer_lr=meta.outer_lr, meta_batch_size=meta.meta_batch_size,
                          engine=meta.engine, random_state=seed, user_features=uf,
                          weight_decay=meta.weight_decay, body_lr=meta.body_lr,
                          negatives=meta.negatives, support_negatives=meta.support_negatives,
                          task_weighting=meta.task_weighting, support_sizes=meta.support_sizes,
                          positive_threshold=meta.positive_threshold)
    trainer.fit(split.train, split.val, epochs=meta.epochs, patience=meta.patience,
                show_progress=show_progress)
    prefix = "metamf" if meta.model == "mf" else meta.model
    scorer = MetaScorer(trainer, name=row_name or f"{prefix}-{name}")
    scorer.validation_loss = trainer.best_val if math.isfinite(trainer.best_val) else None
    return scorer, trainer.history


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
    """Mean and std over seeds of each model's metrics (``per_seed``: one evaluation
    report dict per seed), with the mean fitting time in ``train_seconds``."""
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
        # "metamf-maml-implicit" -> "maml"; baselines have no algorithm.
        algorithm = name.split("-")[1] if name.startswith(("metamf-", "melu-")) else None
        out.append({"model": name, "algorithm": algorithm, "metrics": mean, "std": std,
                    "train_seconds": float(np.mean(seconds.get(name, [math.nan])))})
    return out



def compare_to_baselines(results: list[dict[str, Any]], per_seed: list[dict[str, Any]],
                         baselines: Sequence[str], metrics: Sequence[str] = HEADLINE_METRICS) -> None:
    """Add ``results[i]["vs_best_baseline"][metric]`` in place: the per-seed paired
    difference of each model to the best baseline on that metric (best by mean
    over seeds), how many seeds the model wins, and paired tests (t-test and
    Wilcoxon signed-rank, two-sided; NaN with fewer than 2 seeds or no spread).

    ``diffs`` are signed so that positive means "the model is better" (for MAE
    and RMSE the baseline's value minus the model's)."""
    from scipy import stats

    def values(model: str, metric: str) -> np.ndarray:
        out = []
        for run_ in per_seed:
            row = next((r for r in run_["results"] if r["model"] == model), None)
            out.append(math.nan if row is None else float(row["metrics"].get(metric, math.nan)))
        return np.asarray(out)

    for metric in metrics:
        lower = metric in LOWER_IS_BETTER
        candidates = [(float(np.nanmean(v)), b) for b in baselines
                      if (v := values(b, metric)).size and not np.isnan(v).all()]
        if not candidates:
            continue
        best = (min if lower else max)(candidates)[1]
        ref = values(best, metric)
        for r in results:
            mine = values(r["model"], metric)
            if np.isnan(mine).all():
                continue
            diffs = (ref - mine) if lower else (mine - ref)
            ok = ~np.isnan(diffs)
            d = diffs[ok]
            p_t = p_w = math.nan
            if d.size >= 2 and np.ptp(d) > 0:
                p_t = float(stats.ttest_rel(mine[ok], ref[ok]).pvalue)
                p_w = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else math.nan
            r.setdefault("vs_best_baseline", {})[metric] = {
                "baseline": best, "diffs": [float(x) for x in diffs], "mean_diff": float(d.mean()) if d.size else math.nan,
                "wins": int((d > 0).sum()), "seeds": int(d.size), "p_ttest": p_t, "p_wilcoxon": p_w}


def comparison_table(results: Sequence[Mapping[str, Any]], metrics: Sequence[str] = HEADLINE_METRICS) -> str:
    """Text table: per model and metric, the mean paired difference to the best
    baseline (positive = better), the seeds won and the paired t-test p-value;
    ``*`` marks a model that wins on every seed."""
    cols = [m for m in metrics if any(m in r.get("vs_best_baseline", {}) for r in results)]
    if not cols:
        return "(no baseline to compare with)"
    name_w = max(len("model"), *(len(r["model"]) for r in results))
    lines = [f"{'model':<{name_w}}  " + "  ".join(f"{c:>26}" for c in cols)]
    for r in results:
        cells = []
        for c in cols:
            v = r.get("vs_best_baseline", {}).get(c)
            if v is None:
                cells.append(f"{'n/a':>26}")
                continue
            star = "*" if v["seeds"] and v["wins"] == v["seeds"] else " "
            p = "" if math.isnan(v["p_ttest"]) else f" p={v['p_ttest']:.3f}"
            cells.append(f"{v['mean_diff']:+.4f} {v['wins']}/{v['seeds']}{star}{p}".rjust(26))
        lines.append(f"{r['model']:<{name_w}}  " + "  ".join(cells))
    best = {c: next((r["vs_best_baseline"][c]["baseline"] for r in results if c in r.get("vs_best_baseline", {})), "")
            for c in cols}
    lines.append("best baseline per metric: " + ", ".join(f"{c}: {b}" for c, b in best.items()))
    return "\n".join(lines)
