"""``metarec-fast evaluate``: serving bundles (and refitted baselines) on a
split -> report.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from .config import (
    BASELINES,
    CLIError,
    common_args,
    data_args,
    nonneg_int,
    positive_int,
    print_written,
    setup_threads,
    split_args,
)
from .datasets import dataset_spec, load_dataset

logger = logging.getLogger("metarec_fast")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate serving bundles (and refitted baselines) on a split")
    common_args(p)
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="serving bundle(s) written by train (.npz)")
    data_args(p, default=None)
    split_args(p, defaults=False)
    p.add_argument("--seed", type=nonneg_int, help="split seed (default: the bundle's)")
    p.add_argument("--algorithm", nargs="*", choices=BASELINES, metavar="NAME", default=list(BASELINES),
                   help="baselines to refit (default: all; none: --algorithm with no name)")
    p.add_argument("--report", default="metarec-report-eval", metavar="DIR", help="(default: %(default)s)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--support-sweep", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--sweep-ks", type=positive_int, nargs="+", default=[1, 3, 5, 10, 20], metavar="K")
    p.add_argument("--threads", type=positive_int)


class BundleScorer:
    """A serving bundle as an evaluation :class:`~metarec_fast.evaluation.Scorer`."""

    def __init__(self, rec: Any, name: str) -> None:
        self.rec = rec
        self.name = name
        self.predicts_ratings = rec.loss == "mse"

    def score(self, tasks: Any) -> Any:
        s = tasks.support
        states = self.rec.adapt((s.indptr, s.items, s.ratings))
        return states.p @ self.rec.item_vectors.T + states.b[:, None] + self.rec.item_offsets[None, :]


def load_bundle(path: str) -> Any:
    from ..serving import Recommender

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"bundle {p} does not exist (expected an .npz written by 'metarec-fast train', "
                       "e.g. metarec-report/models/bundle.npz)")
    return Recommender.load(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .. import evaluation, reports
    from ..data import cold_start_split
    from ..experiments import SCENARIOS as SPLIT_NAMES
    from ..experiments import _baseline

    setup_threads(args.threads)
    recs = [load_bundle(b) for b in args.bundles]
    train_cfg = recs[0].config.get("train", {})
    if args.dataset is not None:
        spec = dataset_spec(args)
    elif train_cfg.get("data"):
        spec = dict(train_cfg["data"])
        if args.data_home:
            spec["data_home"] = args.data_home
    else:
        raise CLIError(f"{args.bundles[0]} does not say which data it was trained on: pass --dataset")
    split_args = {}
    for key, default in (("scenario", "user-cold"), ("support", 10), ("query", "rest"), ("by", "time"),
                         ("val_fraction", 0.1), ("test_fraction", 0.2)):
        value = getattr(args, key)
        split_args[key] = value if value is not None else train_cfg.get(key, default)
    seed = args.seed if args.seed is not None else train_cfg.get("seed", 0)
    data = load_dataset(spec, download=args.download)
    for rec, path in zip(recs, args.bundles):
        if rec.n_items != data.n_items:
            raise CLIError(f"{path} scores {rec.n_items} items but the dataset has {data.n_items}: "
                           "evaluate it on the data it was trained on")
    split = cold_start_split(data, scenario=SPLIT_NAMES[split_args["scenario"]], by=split_args["by"],
                             support=split_args["support"], query=split_args["query"],
                             val_fraction=split_args["val_fraction"], test_fraction=split_args["test_fraction"],
                             random_state=seed)
    names = []
    scorers: list[Any] = []
    for rec, path in zip(recs, args.bundles):
        name = str(rec.config.get("name") or Path(path).stem)
        while name in names:
            name += "'"
        names.append(name)
        scorers.append(BundleScorer(rec, name))
    seconds = {}
    for b in dict.fromkeys(args.algorithm):
        model = _baseline(b)
        if split.train.implicit and not hasattr(model, "predicts_ratings"):
            continue
        start = time.perf_counter()
        try:
            model.fit(split.train, split.val)
        except ValueError as exc:
            logger.warning("skipping %s: %s", b, exc)
            continue
        seconds[model.name] = time.perf_counter() - start
        scorers.append(model)
    rep = evaluation.evaluate(scorers, split.test, ks=args.ks, threshold=args.threshold)
    results = [{"model": r["model"], "algorithm": next((s.rec.config.get("algorithm") for s in scorers
                                                        if s.name == r["model"] and isinstance(s, BundleScorer)),
                                                       None),
                "metrics": r["metrics"], "std": {k: 0.0 for k in r["metrics"]},
                "train_seconds": seconds.get(r["model"], 0.0), "counts": r["counts"]} for r in rep.results]
    from .. import __version__

    out = {"dataset": spec["dataset"], "scenario": split_args["scenario"], "support": split_args["support"],
           "seeds": [seed], "results": results,
           "counts": {f"seed{seed}": {"train_tasks": len(split.train), "val_tasks": len(split.val),
                                      "test_tasks": len(split.test)}},
           "config": {"command": "evaluate", "data": spec, "bundles": [str(b) for b in args.bundles],
                      "ks": list(args.ks), "threshold": args.threshold, **split_args},
           "version": __version__, "history": {}, "engine_timing": [],
           "support_sweep": reports.support_sweep(scorers, split.test, ks=args.sweep_ks, threshold=args.threshold,
                                                  eval_ks=args.ks) if args.support_sweep else None}
    path, plots, note = reports.write_report(args.report, out, plots=args.plots)
    print(evaluation.format_table([{**r, "std": {}} for r in results]))
    print_written(path, plots, note)
    return 0

