"""The evaluation protocols of DESIGN.md, for meta-learners and baselines alike.

Every model is evaluated on the same test tasks through one contract, a
:class:`Scorer`: given tasks, adapt to each task's support set and return
scores for the whole catalogue. From those scores:

* ``rating``: MAE and RMSE on the query interactions (models that predict
  ratings only; NaN for the others).
* ``query_ranking``: MeLU's within-query nDCG@k, graded gain ``2^r - 1``.
* ``full_ranking``: every item except the support items is ranked (C++ top-k);
  relevant = query items rated >= ``threshold`` (all query items for implicit
  data); precision, recall, recall_capped, ndcg, hr, map, mrr @k. Users without
  a relevant item are skipped and counted. With ``candidates="cold"`` only the
  test set's cold items (``TaskSet.cold_items``, the item-cold scenarios) are
  ranked, the usual protocol for new items (among the whole catalogue, items
  without history sit behind everything that has some, whatever the model);
  ``"auto"`` (the default) does so whenever the task set has cold items.

Ties: items with equal scores are ordered by a seeded random permutation of
the item ids (``tie_seed``), never by id, and query items with equal
predictions by a seeded shuffle, never by their time order: a model that says
nothing about some items (popularity's equal counts, an unseen item's zero
score) cannot win on the catalogue's numbering or the log's order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

PROTOCOLS = ("rating", "query_ranking", "full_ranking")
CANDIDATES = ("auto", "all", "cold")


@runtime_checkable
class Scorer(Protocol):
    """What :func:`evaluate` needs of a model.

    ``score(tasks)`` adapts to every task's support set and returns
    ``[n_tasks, n_items]`` scores; ``predicts_ratings`` says whether those scores
    are ratings (then MAE/RMSE are reported).
    """

    name: str
    predicts_ratings: bool

    def score(self, tasks: Any) -> np.ndarray: ...


@dataclass
class Report:
    """Evaluation results: one entry per model, JSON-serialisable.

    ``results[i]`` = ``{"model": name, "metrics": {...}, "counts": {...}}``.
    """

    results: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, model: str) -> dict[str, float]:
        for r in self.results:
            if r["model"] == model:
                return r["metrics"]
        raise KeyError(f"no model {model!r} in this report; it has {[r['model'] for r in self.results]}")

    def models(self) -> list[str]:
        return [r["model"] for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.results, "config": self.config}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), default=_json_default, **kwargs)

    def table(self, metrics: Sequence[str] | None = None) -> str:
        """A fixed-width text table, one row per model."""
        return format_table(self.results, metrics)

    def __str__(self) -> str:
        return self.table()


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


DEFAULT_COLUMNS = ("mae", "rmse", "query_ndcg@3", "precision@10", "recall@10", "ndcg@10", "hr@10",
                   "map@10", "mrr@10")


def format_table(results: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None) -> str:
    """Text table of ``results`` (each with ``model``, ``metrics`` and optional ``std``)."""
    if not results:
        return "(no results)"
    available = list(results[0]["metrics"])
    cols = [m for m in (metrics or DEFAULT_COLUMNS) if m in available] or available[:8]
    has_std = any(r.get("std") for r in results)
    width = max(10 if not has_std else 16, *(len(c) for c in cols))
    name_w = max(len("model"), *(len(r["model"]) for r in results))
    lines = [f"{'model':<{name_w}}  " + "  ".join(f"{c:>{width}}" for c in cols)]
    for r in results:
        cells = []
        for c in cols:
            v = r["metrics"].get(c, math.nan)
            s = r.get("std", {}).get(c) if has_std else None
            text = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
            if s is not None and text != "n/a" and not math.isnan(s):
                text += f" ± {s:.4f}"
            cells.append(f"{text:>{width}}")
        lines.append(f"{r['model']:<{name_w}}  " + "  ".join(cells))
    return "\n".join(lines)


def relevant_items(tasks: Any, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, items)`` of each task's relevant query items."""
    q = tasks.query
    keep = np.ones(q.n_interactions, dtype=bool) if (threshold is None or tasks.implicit) else q.ratings >= threshold
    rows = np.repeat(np.arange(len(q)), q.lengths)
    counts = np.bincount(rows[keep], minlength=len(q))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, np.asarray(q.items[keep], dtype=np.int64)


def _rank(scores: np.ndarray, tasks: Any, k: int, cand: np.ndarray, num_threads: Any,
          topk: Any) -> np.ndarray:
    """Top-``k`` item ids per task with its support items excluded, among the
    candidate items ``cand``; equal scores go to the earlier position in ``cand``
    (the top-k kernel's rule), so a shuffled ``cand`` breaks ties at random."""
    indptr = np.asarray(tasks.support.indptr, np.int64)
    items = np.asarray(tasks.support.items, np.int64)
    # Rank within the candidate columns; support items map to candidate positions.
    position = np.full(scores.shape[1], -1, dtype=np.int64)
    position[cand] = np.arange(cand.size)
    mapped = position[items]
    keep = mapped >= 0
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))[keep]
    sub_indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(indptr) - 1))])
    sub, _ = topk(np.ascontiguousarray(scores[:, cand]), k, exclude=(sub_indptr, mapped[keep]),
                  num_threads=num_threads)
    return np.where(sub >= 0, cand[np.maximum(sub, 0)], -1)


def _query_predictions(scores: np.ndarray, tasks: Any) -> np.ndarray:
    rows = np.repeat(np.arange(len(tasks.query)), tasks.query.lengths)
    return scores[rows, tasks.query.items]


def _shuffle_within_rows(indptr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of CSR entries that shuffles each row's entries and keeps rows in place."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return np.lexsort((rng.random(rows.size), rows))


def evaluate(
    models: Scorer | Iterable[Scorer],
    test_tasks: Any,
    protocols: Sequence[str] = PROTOCOLS,
    ks: Sequence[int] = (1, 3, 5, 10, 20),
    threshold: float = 4.0,
    batch_size: int = 1024,
    num_threads: int | None = None,
    show_progress: bool = False,
    candidates: str = "auto",
    tie_seed: int = 0,
) -> Report:
    """Evaluate every model on ``test_tasks`` with the given protocols.

    Args:
        models: one :class:`Scorer` or several (baselines, wrapped meta-learners).
        test_tasks: a :class:`~metarec_fast.data.TaskSet`.
        protocols: any of ``"rating"``, ``"query_ranking"``, ``"full_ranking"``.
        ks: cutoffs for the ranking metrics.
        threshold: explicit ratings >= threshold are relevant for full ranking.
        batch_size: tasks scored at once (bounds the ``[batch, n_items]`` score block).
        candidates: ``"all"`` ranks the whole catalogue; ``"cold"`` only the task
            set's ``cold_items`` (ValueError when it has none); ``"auto"``: ``"cold"``
            when the task set has cold items (item-cold scenarios), else ``"all"``.
            The report's config names the set used and its size.
        tie_seed: seeds the random order that breaks ties between equal scores
            (candidate items and query items alike; the same for every model).
    """
    from . import metrics
    from .ops import topk

    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {PROTOCOLS}")
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] <= 0:
        raise ValueError(f"ks must be positive ints, got {ks}")
    if len(test_tasks) == 0:
        raise ValueError("test_tasks is empty")
    if candidates not in CANDIDATES:
        raise ValueError(f"candidates must be one of {CANDIDATES}, got {candidates!r}")
    cand = np.arange(test_tasks.n_items, dtype=np.int64)
    if candidates == "auto":
        candidates = "cold" if len(getattr(test_tasks, "cold_items", ())) else "all"
    if candidates == "cold":
        cand = np.unique(np.asarray(getattr(test_tasks, "cold_items", ()), dtype=np.int64))
        if cand.size == 0:
            raise ValueError("candidates='cold' needs a task set with cold items (an item-cold split)")
    tie_rng = np.random.default_rng(tie_seed)
    cand = tie_rng.permutation(cand)
    if isinstance(models, Scorer):
        models = [models]
    models = list(models)
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")

    results = []
    for model in models:
        agg: dict[str, list[np.ndarray]] = {}
        abs_err = sq_err = 0.0
        n_rating = 0
        for start in range(0, len(test_tasks), batch_size):
            idx = np.arange(start, min(start + batch_size, len(test_tasks)))
            tasks = test_tasks.subset(idx)
            scores = np.asarray(model.score(tasks))
            if scores.shape != (len(tasks), test_tasks.n_items):
                raise ValueError(
                    f"{model.name}.score returned shape {scores.shape}, expected "
                    f"({len(tasks)}, {test_tasks.n_items})"
                )
            # Shuffled within each task, so that equal predictions are not ordered by time.
            order = _shuffle_within_rows(tasks.query.indptr, np.random.default_rng([tie_seed, start]))
            pred = _query_predictions(scores, tasks)[order]
            true = tasks.query.ratings.astype(np.float64)[order]
            if "rating" in protocols and model.predicts_ratings and pred.size:
                abs_err += float(np.abs(pred - true).sum())
                sq_err += float(((pred - true) ** 2).sum())
                n_rating += pred.size
            if "query_ranking" in protocols:
                r = metrics.query_ndcg(pred.astype(np.float64), true, tasks.query.indptr, ks=ks,
                                       num_threads=num_threads)
                for key, val in r.per_query.items():
                    agg.setdefault(f"query_{key}", []).append(val)
            if "full_ranking" in protocols:
                ids = _rank(scores, tasks, max(ks), cand, num_threads, topk)
                rel = relevant_items(tasks, threshold)
                r = metrics.ranking(ids, rel, ks=ks, n_items=test_tasks.n_items, num_threads=num_threads)
                for key, val in r.per_query.items():
                    agg.setdefault(key, []).append(val)
        out: dict[str, float] = {}
        counts: dict[str, int] = {"tasks": len(test_tasks)}
        if "rating" in protocols:
            out["mae"] = abs_err / n_rating if n_rating else math.nan
            out["rmse"] = math.sqrt(sq_err / n_rating) if n_rating else math.nan
            counts["rated_interactions"] = n_rating
        for key, parts in agg.items():
            values = np.concatenate(parts)
            ok = ~np.isnan(values)
            out[key] = float(values[ok].mean()) if ok.any() else math.nan
        if "full_ranking" in protocols:
            ndcg = np.concatenate(agg[f"ndcg@{ks[0]}"])
            counts["ranking_evaluated"] = int((~np.isnan(ndcg)).sum())
            counts["ranking_skipped_no_relevant"] = int(np.isnan(ndcg).sum())
        if "query_ranking" in protocols:
            q = np.concatenate(agg[f"query_ndcg@{ks[0]}"])
            counts["query_ranking_evaluated"] = int((~np.isnan(q)).sum())
            counts["query_ranking_skipped"] = int(np.isnan(q).sum())
        results.append({"model": model.name, "metrics": out, "counts": counts})
    config = {"protocols": list(protocols), "ks": list(ks), "threshold": threshold, "candidates": candidates,
              "n_candidates": int(cand.size), "ties": f"seeded random order (tie_seed={tie_seed})",
              "n_test_tasks": len(test_tasks), "implicit": bool(getattr(test_tasks, "implicit", False))}
    return Report(results, config)
