"""Experiment reports on disk: ``report.json`` plus PNG plots.

* :func:`support_sweep`: a metric against the support size K for every fitted
  model (the plot a cold-start paper shows), evaluated on the same test users
  and the same query items for every K.
* :func:`engine_timing`: seconds per meta-epoch of each meta-learner with the
  C++ and the torch.func inner-loop engines, on the same training tasks.
* :func:`write_report`: writes ``report.json`` (atomically; NaN becomes
  ``null``) and the plots ``training_curves.png``, ``support_sweep.png`` and
  ``epoch_time.png``. matplotlib is optional (``pip install metarec-fast[plot]``):
  without it the plots are skipped and the reason is returned.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._io import atomic_write

logger = logging.getLogger("metarec_fast")

SWEEP_KS = (1, 3, 5, 10, 20)
PLOTS = ("training_curves.png", "support_sweep.png", "epoch_time.png")


# ------------------------------------------------------------------ support sweep
def recut(tasks: Any, k: int, horizon: int) -> Any:
    """The tasks with more than ``horizon`` interactions, re-cut: support = the
    first ``k``, query = everything after the first ``horizon`` (so the query is
    the same for every ``k <= horizon``). Support and query keep their order."""
    from .data import TaskPart

    if not 0 < k <= horizon:
        raise ValueError(f"k must lie in [1, {horizon}], got {k}")
    s, q = tasks.support, tasks.query
    keep, sup_i, sup_r, qry_i, qry_r = [], [], [], [], []
    for t in range(len(tasks)):
        items = np.concatenate([s.items[s.indptr[t]:s.indptr[t + 1]], q.items[q.indptr[t]:q.indptr[t + 1]]])
        ratings = np.concatenate([s.ratings[s.indptr[t]:s.indptr[t + 1]], q.ratings[q.indptr[t]:q.indptr[t + 1]]])
        if items.size <= horizon:
            continue
        keep.append(t)
        sup_i.append(items[:k])
        sup_r.append(ratings[:k])
        qry_i.append(items[horizon:])
        qry_r.append(ratings[horizon:])

    def part(items: list[np.ndarray], ratings: list[np.ndarray]) -> Any:
        indptr = np.concatenate([[0], np.cumsum([len(x) for x in items])]).astype(np.int64)
        flat_i = np.concatenate(items) if items else np.zeros(0, s.items.dtype)
        flat_r = np.concatenate(ratings) if ratings else np.zeros(0, s.ratings.dtype)
        return TaskPart(indptr, flat_i.astype(s.items.dtype), flat_r.astype(s.ratings.dtype))

    idx = np.asarray(keep, dtype=np.int64)
    uf = tasks.user_features.take(idx) if tasks.user_features is not None else None
    return replace(tasks, users=tasks.users[idx], support=part(sup_i, sup_r), query=part(qry_i, qry_r),
                   user_features=uf, report={**tasks.report, "recut": {"support": k, "horizon": horizon}})


def support_sweep(models: Sequence[Any], test: Any, ks: Sequence[int] = SWEEP_KS,
                  threshold: float = 4.0, eval_ks: Sequence[int] = (1, 3, 5, 10, 20)) -> dict[str, Any] | None:
    """Every metric of every model for each support size in ``ks`` (see :func:`recut`).

    Returns ``{"ks": [...], "horizon": H, "n_tasks": n, "results": {model: {metric: [one value per K]}}}``;
    Ks that no test user can give (with at least one query interaction left) are dropped
    (``dropped_ks``); None when none is left.
    """
    from .evaluation import evaluate

    ks = sorted({int(k) for k in ks})
    sizes = test.support.lengths + test.query.lengths
    dropped = []
    while ks and not (sizes > ks[-1]).any():  # keep the Ks some test users can give (plus a query)
        dropped.append(ks.pop())
    if dropped:
        logger.warning("support sweep: no test user has more than %d interactions; dropped K = %s",
                       dropped[-1], sorted(dropped))
    if not ks:
        return None
    horizon = ks[-1]
    out: dict[str, Any] = {"ks": ks, "horizon": horizon, "dropped_ks": sorted(dropped), "results": {}}
    for k in ks:
        tasks = recut(test, k, horizon)
        out["n_tasks"] = len(tasks)
        rep = evaluate(models, tasks, ks=eval_ks, threshold=threshold)
        for r in rep.results:
            per = out["results"].setdefault(r["model"], {})
            for metric, value in r["metrics"].items():
                per.setdefault(metric, []).append(value)
    return out


def mean_sweeps(sweeps: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Average sweeps of several seeds (same ``ks``)."""
    sweeps = [s for s in sweeps if s]
    if not sweeps:
        return None
    sweeps = [s for s in sweeps if s["ks"] == sweeps[0]["ks"]]  # a seed that dropped a K is left out
    out = {"ks": sweeps[0]["ks"], "horizon": sweeps[0]["horizon"],
           "n_tasks": [s["n_tasks"] for s in sweeps], "seeds_averaged": len(sweeps), "results": {}}
    for model, metrics in sweeps[0]["results"].items():
        out["results"][model] = {
            m: [float(np.nanmean([s["results"][model][m][j] for s in sweeps if model in s["results"]]))
                if any(not math.isnan(s["results"][model][m][j]) for s in sweeps if model in s["results"])
                else math.nan for j in range(len(out["ks"]))]
            for m in metrics}
    return out


# ------------------------------------------------------------------ engine timing
def engine_timing(train: Any, algorithms: Sequence[str], meta: Any, engines: Sequence[str] = ("cpp", "torch"),
                  batches: int = 3, random_state: int = 0) -> list[dict[str, Any]]:
    """Seconds per meta-epoch of MetaMF with each algorithm and engine, estimated
    from ``batches`` outer steps (after one warm-up step) on ``train``."""
    import torch

    from .meta import MetaTrainer
    from .models import MetaMF

    n_batches = math.ceil(len(train) / meta.meta_batch_size)
    mean = 0.0 if train.implicit else float(np.mean(train.query.ratings))
    rows = []
    for algorithm in algorithms:
        for engine in engines:
            torch.manual_seed(random_state)
            model = MetaMF(train.n_items, dim=meta.dim, random_state=random_state,
                           loss="logistic" if train.implicit else "mse", global_bias=mean)
            trainer = MetaTrainer(model, algorithm, inner_steps=meta.inner_steps, inner_lr=meta.inner_lr,
                                  l2=meta.l2, outer_lr=meta.outer_lr, meta_batch_size=meta.meta_batch_size,
                                  engine=engine, random_state=random_state)
            order = np.random.default_rng(random_state).permutation(len(train))
            steps = min(batches, n_batches)
            idx = [order[(b % n_batches) * meta.meta_batch_size:((b % n_batches) + 1) * meta.meta_batch_size]
                   for b in range(steps + 1)]
            trainer.step(trainer.batch(train, idx[0]))  # warm-up
            start = time.perf_counter()
            for b in range(1, steps + 1):
                trainer.step(trainer.batch(train, idx[b]))
            per_batch = (time.perf_counter() - start) / steps
            rows.append({"algorithm": algorithm, "engine": engine, "seconds_per_epoch": per_batch * n_batches,
                         "seconds_per_batch": per_batch, "batches_per_epoch": n_batches, "batches_timed": steps})
    return rows


# ------------------------------------------------------------------ writing
def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars/arrays -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(_clean(obj), indent=2, allow_nan=False)
    return atomic_write(path, lambda f: f.write(text.encode() + b"\n"))


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_report(folder: str | Path, report: dict[str, Any], plots: bool = True) -> tuple[Path, list[Path], str | None]:
    """Write ``folder/report.json`` and the plots.

    Returns ``(report_path, plot_paths, note)``; ``note`` says why plots were
    skipped (matplotlib missing, or ``plots=False``), else None.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    note = None
    if not plots:
        note = "plots skipped (--no-plots)"
    elif not have_matplotlib():
        note = "plots skipped: matplotlib is not installed (pip install 'metarec-fast[plot]')"
    else:
        written = make_plots(folder, report)
    report = {**report, "plots": [p.name for p in written]}
    path = write_json(folder / "report.json", report)
    return path, written, note


def make_plots(folder: Path, report: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = []
    for name, fn in (("training_curves.png", _plot_curves), ("support_sweep.png", _plot_sweep),
                     ("epoch_time.png", _plot_timing)):
        fig = fn(plt, report)
        if fig is None:
            continue
        path = folder / name
        fig.tight_layout()
        atomic_write(path, lambda f, fig=fig: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)
        out.append(path)
    return out


def _title(report: dict[str, Any]) -> str:
    return f"{report.get('dataset') or 'data'}, {report.get('scenario')}, K={report.get('support')}"


def _plot_curves(plt: Any, report: dict[str, Any]) -> Any:
    history = report.get("history") or {}
    if not history:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors: dict[str, Any] = {}
    for key, records in history.items():
        if not records:
            continue
        model = key.split("/")[0]
        epochs = [r["epoch"] for r in records]
        val = [r.get("val_loss") for r in records]
        use_val = all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in val)
        ys = val if use_val else [r["train_loss"] for r in records]
        label = None if model in colors else model + ("" if use_val else " (train)")
        line, = ax.plot(epochs, ys, marker="o", ms=3, label=label, color=colors.get(model))
        colors.setdefault(model, line.get_color())
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("meta-epoch")
    ax.set_ylabel("validation query loss")
    ax.set_title(f"Meta-training ({_title(report)})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _plot_sweep(plt: Any, report: dict[str, Any]) -> Any:
    sweep = report.get("support_sweep")
    if not sweep:
        return None
    ks = sweep["ks"]
    panels = [m for m in ("ndcg@10", "rmse") if any(
        any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in r.get(m, []))
        for r in sweep["results"].values())]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colors = {m: cycle[j % len(cycle)] for j, m in enumerate(sweep["results"])}
    for ax, metric in zip(axes[0], panels):
        for model, metrics in sweep["results"].items():
            ys = [np.nan if v is None else v for v in metrics.get(metric, [])]
            if all(np.isnan(ys)):
                continue
            ax.plot(ks, ys, marker="o", ms=4, label=model, color=colors[model])
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("support size K (interactions of the new user)")
        ax.set_ylabel(metric + (" (lower is better)" if metric == "rmse" else ""))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Cold start: quality against K ({report.get('dataset') or 'data'}, {report.get('scenario')})")
    return fig


def _plot_timing(plt: Any, report: dict[str, Any]) -> Any:
    rows = report.get("engine_timing") or []
    if not rows:
        return None
    algorithms = list(dict.fromkeys(r["algorithm"] for r in rows))
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.8 / len(engines)
    x = np.arange(len(algorithms))
    for j, engine in enumerate(engines):
        ys = [next((r["seconds_per_epoch"] for r in rows if r["algorithm"] == a and r["engine"] == engine), np.nan)
              for a in algorithms]
        ax.bar(x + (j - (len(engines) - 1) / 2) * width, ys, width, label=f"engine={engine}")
    ax.set_xticks(x)
    ax.set_xticklabels(algorithms)
    ax.set_ylabel("seconds per meta-epoch")
    ax.set_title(f"Meta-training time per epoch ({_title(report)})")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return fig
