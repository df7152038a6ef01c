"""``metarec-fast train`` (and the pipeline ``demo`` runs): any model, algorithm
and dataset; trains, evaluates, writes the report, saves the models and a
serving bundle (the meta-learner with the best validation loss).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .config import (
    BASELINES,
    DEMO,
    META_ALGORITHMS,
    CLIError,
    common_args,
    data_args,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    print_written,
    say,
    setup_threads,
    split_args,
)
from ..experiments import LOSSES, RANKING_LOSSES
from .datasets import dataset_spec, load_dataset

#: `train`'s default tuning budget: trials per meta-learner and objective.
TUNE_TRIALS = 3


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train and evaluate models on a dataset; save models, bundle and report")
    common_args(p)
    data_args(p)
    split_args(p)
    train_args(p, demo=False)


def train_args(p: argparse.ArgumentParser, demo: bool) -> None:
    g = p.add_argument_group("model and meta-training")
    g.add_argument("--model", choices=("mf", "melu"), default="mf", help="(default: mf)")
    g.add_argument("--algorithm", nargs="+", choices=META_ALGORITHMS + BASELINES, metavar="NAME",
                   default=list(META_ALGORITHMS + BASELINES),
                   help=f"one or more of {', '.join(META_ALGORITHMS + BASELINES)} (default: all)")
    g.add_argument("--engine", choices=("cpp", "torch", "auto"), default="cpp" if demo else "auto",
                   help="inner-loop engine (default: %(default)s; auto = cpp for mf, torch for melu)")
    g.add_argument("--seeds", type=nonneg_int, nargs="+", default=[0], metavar="S", help="(default: 0)")
    g.add_argument("--loss", choices=LOSSES, default="auto",
                   help="what each meta-learner learns: auto = a rating model (mse) and a ranking model "
                        "(logistic inner loop, ranking meta-objective) on explicit ratings, the ranking model on "
                        "implicit data; mse = the rating model only; logistic|softmax|bpr = the ranking model "
                        "only, with that query objective (default: auto)")
    g.add_argument("--negatives", type=nonneg_int, metavar="N",
                   help="ranking models: sampled negatives per task in the query set (default: 400)")
    g.add_argument("--support-negatives", type=nonneg_int, metavar="N",
                   help="ranking models: sampled negatives per task in the support set, also at test time "
                        "(default: 50)")
    g.add_argument("--init", choices=("random", "pretrained"),
                   help="rating models: start from a pretrained MF (default) or at random")
    g.add_argument("--support-encoder", action=argparse.BooleanOptionalAction, default=None,
                   help="an amortised start: theta_0 computed from the support set by a learned encoder")
    g.add_argument("--tune", type=positive_int, default=1 if demo else TUNE_TRIALS, metavar="N",
                   help="trials per meta-learner and objective, chosen on validation users only: the "
                        "defaults, then random draws from a documented search space (default: %(default)s; "
                        "1 = no search)")
    d = DEMO if demo else {}
    g.add_argument("--epochs", type=nonneg_int, default=d.get("epochs"),
                   help="meta-epochs (default: " + ("%(default)s)" if demo else "30 rating, 40 ranking)"))
    g.add_argument("--patience", type=positive_int, default=5, help="early stop after N epochs without "
                   "validation improvement (default: 5)")
    g.add_argument("--dim", type=positive_int, default=d.get("dim"),
                   help="(default: " + ("%(default)s)" if demo else "32)"))
    g.add_argument("--inner-steps", type=nonneg_int, help="(default: 10 rating, 5 ranking)")
    g.add_argument("--inner-lr", type=positive_float, help="(default: 0.03 rating, 0.5 ranking)")
    g.add_argument("--outer-lr", type=positive_float, default=d.get("outer_lr"),
                   help="outer (meta) learning rate (default: " + ("%(default)s, larger than train's "
                        "because the demo trains for few epochs)" if demo else "0.005 rating, 0.01 ranking)"))
    g.add_argument("--l2", type=nonneg_float, help="inner-loop L2 (default: 0)")
    g.add_argument("--meta-batch-size", type=positive_int, default=32, help="(default: 32)")
    g.add_argument("--distributed", action="store_true",
                   help="torch.distributed meta-training: launch under torchrun --nproc-per-node=N; the "
                        "global --meta-batch-size is split across ranks, rank 0 writes the report")
    g.add_argument("--dist-timeout", type=positive_float, default=300.0, metavar="S",
                   help="with --distributed: seconds before a collective waiting on a dead rank fails "
                        "(default: %(default)s)")
    r = p.add_argument_group("report")
    r.add_argument("--report", default="metarec-report", metavar="DIR", help="output folder (default: %(default)s)")
    r.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help="write PNG plots")
    r.add_argument("--support-sweep", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate every model with K = --sweep-ks support interactions (default: yes)")
    r.add_argument("--sweep-ks", type=positive_int, nargs="+", default=[1, 3, 5, 10, 20], metavar="K")
    r.add_argument("--engine-timing", action=argparse.BooleanOptionalAction, default=True,
                   help="time a few meta-steps with each engine (default: yes)")
    r.add_argument("--save-models", action=argparse.BooleanOptionalAction, default=True,
                   help="save the models and the serving bundle (default: yes)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--threads", type=positive_int, help="threads for the kernels and torch (default: all)")



#: Fields of both MetaConfigs that a command-line flag overrides when given.
_OVERRIDES = ("epochs", "patience", "dim", "inner_steps", "inner_lr", "outer_lr", "l2", "meta_batch_size",
              "negatives", "support_negatives", "init", "support_encoder")


def _meta_configs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(objectives, rating config, ranking config)``: the library's defaults per
    objective (experiments.RATING_DEFAULT / RANKING_DEFAULT), overridden by the
    flags the user gave (which ``--tune`` then leaves alone, see :func:`_fixed`)."""
    import dataclasses

    from ..experiments import RANKING_DEFAULT, RATING_DEFAULT

    engine = args.engine
    if args.model == "melu":
        if engine == "cpp":
            raise CLIError("--engine cpp runs linear heads (--model mf); MeLU's MLP head needs --engine torch")
        engine = "torch"
    given = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k, None) is not None}
    common = dict(engine=engine, model=args.model)
    rating = {**given, **common}
    rating.pop("negatives", None)
    rating.pop("support_negatives", None)
    ranking = {k: v for k, v in given.items() if k != "init"}
    ranking.update(common)
    if args.model == "melu":
        rating.setdefault("init", "random")
        if args.support_encoder:
            raise CLIError("--support-encoder is a MetaMF option (--model mf)")
    if args.loss in RANKING_LOSSES:
        ranking["loss"] = args.loss
    if args.init is not None and args.loss in RANKING_LOSSES:
        raise CLIError(f"--init {args.init} starts a rating model; --loss {args.loss} trains ranking models only")
    objectives = {"auto": "auto", "mse": ("rating",)}.get(args.loss, ("ranking",))
    return (objectives, dataclasses.replace(RATING_DEFAULT, **rating),
            dataclasses.replace(RANKING_DEFAULT, **ranking))


def _fixed(args: argparse.Namespace) -> tuple[str, ...]:
    """The MetaConfig fields the user set with a flag: the search keeps them."""
    fields = tuple(k for k in _OVERRIDES if getattr(args, k, None) is not None)
    return fields + (("loss",) if args.loss != "auto" else ())


def cmd_train(args: argparse.Namespace) -> int:
    rank, world, trainer_class = 0, 1, None
    if args.distributed:
        from ..distributed import DistributedMetaTrainer, DistributedSetupError, distributed_session

        try:
            with distributed_session(timeout=args.dist_timeout) as (rank, world):
                if rank != 0:  # only rank 0 prints, shows progress and writes the report and models
                    args.quiet = True
                    args.engine_timing = False
                    args.save_models = False
                    args.support_sweep = False
                return _cmd_train(args, rank, world, DistributedMetaTrainer)
        except DistributedSetupError as exc:
            raise CLIError(f"--distributed: {exc}") from None
    return _cmd_train(args, rank, world, trainer_class)


def _cmd_train(args: argparse.Namespace, rank: int, world: int, trainer_class: Any) -> int:
    from .. import experiments, reports

    if args.command == "demo" and args.dataset != "synthetic":
        raise CLIError("demo runs on the embedded synthetic data; use 'metarec-fast train --dataset ...' for others")
    setup_threads(args.threads)
    objectives, meta, rank_meta = _meta_configs(args)
    if args.model == "melu":
        args.engine_timing = False
    spec = dataset_spec(args)
    t0 = time.perf_counter()
    data = load_dataset(spec, download=args.download)
    say(args, f"data: {spec['dataset']}: {len(data)} interactions, {data.n_users} users, {data.n_items} items "
               f"({time.perf_counter() - t0:.1f} s)")
    if args.scenario == "warm" and args.query == "rest":
        raise CLIError("--scenario warm holds out a fixed number of interactions per user: pass --query N")
    algorithms = list(dict.fromkeys(args.algorithm))
    metas = [a for a in algorithms if a in META_ALGORITHMS]
    report_dir = Path(args.report)
    models_dir = report_dir / "models"
    state: dict[str, Any] = {"sweeps": [], "timing": [], "saved": [], "best": None}

    def on_seed(seed: int, split: Any, scorers: list[Any]) -> None:
        if args.support_sweep:
            say(args, f"seed {seed}: support-size sweep K = {' '.join(map(str, args.sweep_ks))}")
            state["sweeps"].append(reports.support_sweep(scorers, split.test, ks=args.sweep_ks,
                                                         threshold=args.threshold, eval_ks=args.ks))
        if args.engine_timing and metas and not state["timing"] and args.model == "mf":
            say(args, "timing one meta-step per algorithm with engines cpp and torch")
            timing_cfg = rank_meta if (objectives == ("ranking",) or split.train.implicit) else meta
            state["timing"] = reports.engine_timing(split.train, metas, timing_cfg, random_state=seed)
        if args.save_models:
            _save_models(args, spec, models_dir, seed, scorers, data, state, split.val)

    say(args, f"training {', '.join(algorithms)} on a {args.scenario} split (K={args.support}), "
               f"seeds {' '.join(map(str, args.seeds))}")
    report = experiments.run(
        data, scenario=args.scenario, support=args.support, query=args.query, by=args.by, seeds=args.seeds,
        algorithms=algorithms, meta=meta, rank_meta=rank_meta, objectives=objectives, tune=args.tune,
        tune_fixed=_fixed(args),
        ks=args.ks, threshold=args.threshold, dataset_name=spec["dataset"], show_progress=not args.quiet,
        split_kwargs={"val_fraction": args.val_fraction, "test_fraction": args.test_fraction},
        on_seed=on_seed, trainer_class=trainer_class)
    if rank != 0:
        return 0
    out = report.to_dict()
    out["config"].update(command=args.command, data=spec, engine=meta.engine, world_size=world)
    out["comparison"] = report.comparison()
    out["support_sweep"] = reports.mean_sweeps(state["sweeps"]) if args.support_sweep else None
    out["engine_timing"] = state["timing"]
    out["models"] = state["saved"]
    out["bundle"] = str(state["best"][1]) if state["best"] else None
    out["total_seconds"] = time.perf_counter() - t0
    path, plots, note = reports.write_report(report_dir, out, plots=args.plots)
    from ..evaluation import format_table

    # One seed: no "± 0.0000" columns.
    print(format_table(report.results if len(args.seeds) > 1 else [{**r, "std": {}} for r in report.results]))
    cfg = report.config
    print(f"ranking: {cfg.get('candidates')} items as candidates ({'new items among new items' if cfg.get('candidates') == 'cold' else 'the whole catalogue'}, "
          f"support items excluded); ties in {cfg.get('ties')}")
    print("against the best baseline (mean paired difference, positive = better; seeds won; paired t-test):")
    print(report.comparison())
    print_written(path, plots, note)
    if state["best"]:
        example = ",".join(f"{i}:{r}" for i, r in zip(data.item_raw_ids[:3].tolist(), (5, 4, 1)))
        print(f"bundle: {state['best'][1]}  (lowest validation loss, {state['best'][0]}: {state['best'][2]:.4f})")
        print(f"try:    metarec-fast recommend {state['best'][1]} --support {example}")
    elif args.save_models and metas and args.model != "mf":
        print("no serving bundle: serving bundles hold linear-head models (--model mf); MeLU state dicts are "
              f"in {models_dir}")
    return 0


def _save_models(args: argparse.Namespace, spec: dict[str, Any], folder: Path, seed: int, scorers: list[Any],
                 data: Any, state: dict[str, Any], split_val: Any) -> None:
    from ..meta import save_model_file
    from ..serving import Recommender

    train_cfg = {"data": spec, "scenario": args.scenario, "support": args.support, "query": args.query,
                 "by": args.by, "seed": seed, "val_fraction": args.val_fraction,
                 "test_fraction": args.test_fraction, "threshold": args.threshold}
    for scorer in scorers:
        learner = getattr(scorer, "learner", None)
        if learner is None:
            continue  # baselines are refitted by `evaluate`
        name = f"{scorer.name}-seed{seed}"
        model = learner.model
        model_args = {"n_items": int(data.n_items), "dim": int(getattr(model, "dim", 0)), "loss": model.loss}
        pt = save_model_file(folder / f"{name}.state.npz", {
            "format": "metarec-fast-model", "version": 1, "model": type(model).__name__,
            "model_args": model_args, "algorithm": learner.algorithm, "engine": learner.engine,
            "state_dict": learner.state_dict(), "train": train_cfg})
        entry: dict[str, Any] = {"model": scorer.name, "seed": seed, "state_dict": str(pt)}
        if type(model).__name__ == "MetaMF" and getattr(model, "init_net", None) is None:
            rec = Recommender.from_model(model, learner, name=scorer.name, algorithm=learner.algorithm,
                                         train=train_cfg, item_raw_ids=data.item_raw_ids.tolist())
            bundle = rec.save(folder / f"{name}.npz")
            entry["bundle"] = str(bundle)
        state["saved"].append(entry)
    # The best meta-learner by validation loss becomes models/bundle.npz: among the
    # ranking models when there are some (a bundle serves top-k lists), else the rating ones.
    ranking = {s.name for s in scorers if getattr(getattr(s, "learner", None), "model", None) is not None
               and s.learner.model.loss == "logistic"}
    for entry in state["saved"]:
        if entry["seed"] != seed or "bundle" not in entry or (ranking and entry["model"] not in ranking):
            continue
        val = entry.get("val_loss")
        if val is None:
            scorer = next(s for s in scorers if s.name == entry["model"])
            val = getattr(scorer, "validation_loss", None)
            if val is None:
                val = _val_loss(scorer, split_val)
            entry["val_loss"] = val
        if state["best"] is None or (val is not None and val < state["best"][2]):
            import shutil

            target = folder / "bundle.npz"
            shutil.copyfile(entry["bundle"], target)
            state["best"] = (entry["model"], target, val)


def _val_loss(scorer: Any, val: Any, batch_size: int = 256) -> float | None:
    """Mean query loss after adaptation on the validation tasks (what the trainer early-stops on)."""
    import numpy as np
    import torch

    from ..meta import TaskBatch
    from ..meta.inner import query_losses

    if val is None or len(val) == 0:
        return None
    learner = scorer.learner
    dtype = next(learner.model.parameters()).dtype
    total = count = 0.0
    with torch.no_grad():
        for start in range(0, len(val), batch_size):
            idx = np.arange(start, min(start + batch_size, len(val)))
            batch = TaskBatch.from_tasks(val, idx, dtype=dtype, user_features=scorer.user_features)
            losses = query_losses(learner.model, learner.adapt(batch), batch)
            has_query = batch.query_mask.sum(-1) > 0
            total += float(losses[has_query].sum())
            count += float(has_query.sum())
    return total / count if count else None

