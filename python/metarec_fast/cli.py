"""The ``metarec-fast`` console script (also ``python -m metarec_fast``).

Subcommands:

* ``demo``: the main job on the embedded synthetic dataset (no download): the
  baselines and MAML, first-order MAML, Reptile and Meta-SGD with the C++
  engine on a user-cold split; prints the comparison table, writes a report.
* ``train``: any model / algorithm / dataset; saves the report, the models and
  a serving bundle (the meta-learner with the best validation loss).
* ``evaluate``: serving bundles (and refitted baselines) on a split -> report.
* ``recommend``: adapt a bundle to support sets (CSV or inline), print top-k.
* ``bench``: a few-second run of the kernels against torch / numpy.
* ``datasets``: the known datasets, where they are looked for, whether present.
* ``info``: version and build configuration.

Every command takes ``--config FILE.toml`` whose keys mirror the flags
(``support = 5``, ``data-home = "..."``, ``algorithm = ["maml", "bias"]``; a
``[train]`` table applies to ``train`` only); flags on the command line win.
Errors (unknown dataset, missing file, bad hyper-parameter) print one line on
stderr and exit with code 2; ``--verbose`` shows the traceback and the log.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

EXIT_USAGE = 2
META_ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd")
BASELINES = ("popularity", "bias", "pretrain-finetune", "itemknn", "ease")
SCENARIOS = ("user-cold", "item-cold", "both-cold", "warm")
MOVIELENS_SPECS = ("movielens-100k", "movielens-1m", "movielens-latest-small", "movielens-10m",
                   "movielens-20m", "movielens-25m")
DEMO = {"n_users": 800, "n_items": 250, "epochs": 5, "dim": 16, "outer_lr": 0.05}

logger = logging.getLogger("metarec_fast")


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


# ---------------------------------------------------------------- argparse glue
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = _printable(message)  # a stray "\r" or "\n" argument must not break the one-line error
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _printable(text: str) -> str:
    """``text`` with control characters escaped (as in repr), so that it prints on one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _int_type(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _float_type(positive: bool, what: str, upper: float | None = None):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0) or (upper is not None and value >= upper):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _int_type(1, "a positive integer")
nonneg_int = _int_type(0, "an integer >= 0")
positive_float = _float_type(True, "a positive number")
nonneg_float = _float_type(False, "a number >= 0")
fraction = _float_type(True, "a fraction in (0, 1)", upper=1.0)


def query_size(text: str) -> int | str:
    if str(text) == "rest":
        return "rest"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'rest', got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (keys = flag names)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log progress details; show tracebacks on errors")


def _data_args(p: argparse.ArgumentParser, default: str | None = "synthetic") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default, metavar="NAME",
                   help="synthetic | movielens-100k | movielens-1m | movielens-latest-small | csv:PATH | "
                        "parquet:PATH (default: %(default)s)")
    g.add_argument("--data-home", metavar="DIR", help="folder that holds ml-100k/ etc. (default: $METAREC_DATA "
                   "or the user cache folder)")
    g.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download a missing MovieLens archive (default: yes)")
    g.add_argument("--columns", metavar="ROLE=NAME,...",
                   help="CSV/Parquet column mapping, e.g. user=userId,item=movieId,rating=rating,timestamp=ts")
    g.add_argument("--sep", help="CSV separator (default: from the extension)")
    g.add_argument("--n-users", type=positive_int, help="synthetic: number of users")
    g.add_argument("--n-items", type=positive_int, help="synthetic: number of items")
    g.add_argument("--n-interactions", type=positive_int, help="synthetic: expected number of interactions")
    g.add_argument("--implicit", action="store_true", default=None, help="synthetic: implicit feedback")
    g.add_argument("--data-seed", type=nonneg_int, help="synthetic: generator seed (default 0)")


def _split_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    g = p.add_argument_group("split")
    d = (lambda v: v) if defaults else (lambda v: None)
    g.add_argument("--scenario", choices=SCENARIOS, default=d("user-cold"), help="(default: user-cold)")
    g.add_argument("--support", type=positive_int, default=d(10), metavar="K",
                   help="support interactions per new user (default: 10)")
    g.add_argument("--query", type=query_size, default=d("rest"), metavar="N|rest",
                   help="query interactions per user (default: rest)")
    g.add_argument("--by", choices=("time", "random"), default=d("time"),
                   help="order within a user (default: time)")
    g.add_argument("--val-fraction", type=fraction, default=d(0.1), help="(default: 0.1)")
    g.add_argument("--test-fraction", type=fraction, default=d(0.2), help="(default: 0.2)")
    g.add_argument("--ks", type=positive_int, nargs="+", default=[1, 3, 5, 10, 20], metavar="K",
                   help="ranking cutoffs (default: 1 3 5 10 20)")
    g.add_argument("--threshold", type=float, default=4.0, help="relevant ratings are >= this (default: 4)")


def _train_args(p: argparse.ArgumentParser, demo: bool) -> None:
    g = p.add_argument_group("model and meta-training")
    g.add_argument("--model", choices=("mf", "melu"), default="mf", help="(default: mf)")
    g.add_argument("--algorithm", nargs="+", choices=META_ALGORITHMS + BASELINES, metavar="NAME",
                   default=list(META_ALGORITHMS + BASELINES),
                   help=f"one or more of {', '.join(META_ALGORITHMS + BASELINES)} (default: all)")
    g.add_argument("--engine", choices=("cpp", "torch", "auto"), default="cpp" if demo else "auto",
                   help="inner-loop engine (default: %(default)s; auto = cpp for mf, torch for melu)")
    g.add_argument("--seeds", type=nonneg_int, nargs="+", default=[0], metavar="S", help="(default: 0)")
    g.add_argument("--epochs", type=nonneg_int, default=DEMO["epochs"] if demo else 30,
                   help="meta-epochs (default: %(default)s)")
    g.add_argument("--patience", type=positive_int, default=5, help="early stop after N epochs without "
                   "validation improvement (default: 5)")
    g.add_argument("--dim", type=positive_int, default=DEMO["dim"] if demo else 32, help="(default: %(default)s)")
    g.add_argument("--inner-steps", type=nonneg_int, default=5, help="(default: 5)")
    g.add_argument("--inner-lr", type=positive_float, default=0.1, help="(default: 0.1)")
    g.add_argument("--outer-lr", type=positive_float, default=DEMO["outer_lr"] if demo else 0.005,
                   help="outer (meta) learning rate (default: %(default)s" + ("; larger than train's 0.005 "
                        "because the demo trains for few epochs)" if demo else ")"))
    g.add_argument("--l2", type=nonneg_float, default=0.0, help="inner-loop L2 (default: 0)")
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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="metarec-fast", description="Meta-learned recommendation under cold start: train "
                     "meta-learners, compare them with baselines, serve fast adaptation.")
    parser.add_argument("--version", action="version", version=f"metarec-fast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details; tracebacks on errors")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("demo", help="the main job on the embedded synthetic data (no download)",
                       description="Train the baselines and MAML, FOMAML, Reptile and Meta-SGD (C++ engine) "
                       "on a user-cold split of synthetic data; print the table; write the report.")
    _common(p)
    _data_args(p)
    p.set_defaults(n_users=DEMO["n_users"], n_items=DEMO["n_items"])
    _split_args(p)
    _train_args(p, demo=True)

    p = sub.add_parser("train", help="train and evaluate models on a dataset; save models, bundle and report")
    _common(p)
    _data_args(p)
    _split_args(p)
    _train_args(p, demo=False)

    p = sub.add_parser("evaluate", help="evaluate serving bundles (and refitted baselines) on a split")
    _common(p)
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="serving bundle(s) written by train (.npz)")
    _data_args(p, default=None)
    _split_args(p, defaults=False)
    p.add_argument("--seed", type=nonneg_int, help="split seed (default: the bundle's)")
    p.add_argument("--algorithm", nargs="*", choices=BASELINES, metavar="NAME", default=list(BASELINES),
                   help="baselines to refit (default: all; none: --algorithm with no name)")
    p.add_argument("--report", default="metarec-report-eval", metavar="DIR", help="(default: %(default)s)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--support-sweep", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--sweep-ks", type=positive_int, nargs="+", default=[1, 3, 5, 10, 20], metavar="K")
    p.add_argument("--threads", type=positive_int)

    p = sub.add_parser("recommend", help="adapt a bundle to new users' support sets and print top-k")
    _common(p)
    p.add_argument("bundle", metavar="BUNDLE", help="serving bundle (.npz)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--csv", metavar="FILE", help="support interactions: CSV with header user,item[,rating]")
    src.add_argument("--support", action="append", metavar="[USER=]ITEM:RATING,...",
                     help="inline support set of one user (repeat for more users); rating optional (1)")
    p.add_argument("-k", "--k", type=positive_int, default=10, help="(default: 10)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--include-seen", action="store_true", help="do not exclude the support items")
    p.add_argument("--dense-ids", action="store_true",
                   help="item ids are the bundle's dense ids 0..n_items-1 (default: the dataset's raw ids)")
    p.add_argument("--threads", type=positive_int)

    p = sub.add_parser("bench", help="a few-second run of the kernels against torch / numpy")
    _common(p)
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs per kernel, best kept (default: 3)")
    p.add_argument("--scale", type=positive_float, default=1.0, help="problem size factor (default: 1)")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = sub.add_parser("datasets", help="list the known datasets, where they are looked for, and if present")
    _common(p)
    p.add_argument("--data-home", metavar="DIR")

    p = sub.add_parser("info", help="print version and build configuration")
    _common(p)
    return parser


# ---------------------------------------------------------------- config files
def _load_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise CLIError("--config needs Python >= 3.11 (tomllib) or the tomli package (pip install tomli)")
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"config file {p} does not exist (expected a TOML file whose keys are flag names)")
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise CLIError(f"config file {p} is not valid TOML: {exc}") from None


def _convert(action: argparse.Action, key: str, value: Any, path: str) -> Any:
    """A TOML value, checked and converted like the flag's command-line text."""
    def one(v: Any) -> Any:
        if isinstance(v, (dict, list)):
            raise CLIError(f"{path}: {key} takes a single value per item, got {v!r}")
        text = str(v).lower() if isinstance(v, bool) else str(v)
        try:
            out = action.type(text) if action.type is not None else text
        except argparse.ArgumentTypeError as exc:
            raise CLIError(f"{path}: {key}: {exc}") from None
        if action.choices is not None and out not in action.choices:
            raise CLIError(f"{path}: {key}: invalid choice {out!r} (choose from {', '.join(map(str, action.choices))})")
        return out

    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        if not isinstance(value, bool):
            raise CLIError(f"{path}: {key} must be true or false, got {value!r}")
        return value
    if action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction):
        values = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not values:
            raise CLIError(f"{path}: {key} needs at least one value")
        return [one(v) for v in values]
    if isinstance(value, list):
        raise CLIError(f"{path}: {key} takes one value, got a list")
    return one(value)


def _config_defaults(sub: argparse.ArgumentParser, config: dict[str, Any], command: str,
                     path: str) -> dict[str, Any]:
    """TOML keys (flag names, ``-`` or ``_``) -> parser defaults; a ``[command]`` table overrides."""
    items = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for key, value in config.items():
        if isinstance(value, dict) and key not in COMMANDS:
            raise CLIError(f"unknown table [{key}] in {path} (tables name commands: {', '.join(COMMANDS)})")
    table = config.get(command)
    if isinstance(table, dict):
        items.update(table)
    options = sub._option_string_actions
    out = {}
    for key, value in items.items():
        flag = "--" + key.replace("_", "-")
        if flag not in options or flag in ("--config", "--help"):
            positional = any(a.dest == key.replace("-", "_") for a in sub._actions if not a.option_strings)
            hint = "positional arguments go on the command line" if positional else (
                f"keys are the flag names of 'metarec-fast {command} --help'")
            raise CLIError(f"unknown key {key!r} in {path} for '{command}' ({hint})")
        action = options[flag]
        out[action.dest] = _convert(action, key, value, path)
    return out


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; options from ``--config`` become defaults that the command line overrides."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
        sub.set_defaults(**_config_defaults(sub, _load_toml(args.config), args.command, args.config))
        args = parser.parse_args(argv)
    return args


# ---------------------------------------------------------------- datasets
def _columns(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        role, sep, name = part.partition("=")
        if not sep or not role.strip() or not name.strip():
            raise CLIError(f"--columns expects ROLE=NAME pairs separated by commas, got {text!r}")
        out[role.strip()] = name.strip()
    return out


def dataset_spec(args: argparse.Namespace) -> dict[str, Any]:
    """A JSON-serialisable description of the dataset (kept in reports and bundles)."""
    name = args.dataset
    spec: dict[str, Any] = {"dataset": name}
    if name == "synthetic":
        spec.update(n_users=args.n_users or 5000, n_items=args.n_items or 2000, n_interactions=args.n_interactions,
                    implicit=bool(args.implicit), data_seed=args.data_seed or 0)
    elif name.startswith("movielens-"):
        spec["data_home"] = args.data_home
    elif name.startswith(("csv:", "parquet:")):
        spec.update(columns=args.columns, sep=args.sep)
    return spec


def load_dataset(spec: dict[str, Any], download: bool = True) -> Any:
    from . import datasets

    name = spec["dataset"]
    if name == "synthetic":
        return datasets.synthetic(spec["n_users"], spec["n_items"], spec.get("n_interactions"),
                                  implicit=spec.get("implicit", False), random_state=spec.get("data_seed", 0))
    if name.startswith("movielens-") and name[len("movielens-"):] in datasets.MOVIELENS:
        try:
            return datasets.movielens(name[len("movielens-"):], data_home=spec.get("data_home"), download=download)
        except datasets.DatasetNotFoundError as exc:
            first = str(exc).splitlines()
            key = name[len("movielens-"):]
            rel = datasets.MOVIELENS[key]
            home = datasets.data_home(spec.get("data_home"))
            raise CLIError(f"dataset {name} not found: expected {home / rel.folder / rel.marker} "
                           f"(download {datasets._BASE + rel.archive} and unzip it into {home}, or pass "
                           f"--data-home DIR){'; ' + first[0] if first else ''}") from None
    for prefix, fmt in (("csv:", None), ("parquet:", "parquet")):
        if name.startswith(prefix):
            from .data import load_table

            path = Path(name[len(prefix):]).expanduser()
            if not path.is_file():
                what = "a CSV file with a header (user,item[,rating[,timestamp]])" if fmt is None else "a Parquet file"
                raise CLIError(f"{path} does not exist (expected {what})")
            return load_table(path, columns=_columns(spec.get("columns")), sep=spec.get("sep"), format=fmt)
    raise CLIError(f"unknown dataset {name!r}; expected synthetic, {', '.join(MOVIELENS_SPECS)}, "
                   "csv:PATH or parquet:PATH")


# ---------------------------------------------------------------- helpers
def _setup_threads(n: int | None) -> None:
    if n is None:
        return
    from . import set_num_threads

    set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _meta_config(args: argparse.Namespace) -> Any:
    from .experiments import MetaConfig

    engine = args.engine
    if args.model == "melu":
        if engine == "cpp":
            raise CLIError("--engine cpp runs linear heads (--model mf); MeLU's MLP head needs --engine torch")
        engine = "torch"
    return MetaConfig(dim=args.dim, inner_steps=args.inner_steps, inner_lr=args.inner_lr, l2=args.l2,
                      outer_lr=args.outer_lr, meta_batch_size=args.meta_batch_size, epochs=args.epochs,
                      patience=args.patience, engine=engine, model=args.model)


# ---------------------------------------------------------------- train / demo
def cmd_train(args: argparse.Namespace) -> int:
    rank, world, trainer_class = 0, 1, None
    if args.distributed:
        from .distributed import DistributedMetaTrainer, DistributedSetupError, distributed_session

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
    from . import experiments, reports

    if args.command == "demo" and args.dataset != "synthetic":
        raise CLIError("demo runs on the embedded synthetic data; use 'metarec-fast train --dataset ...' for others")
    _setup_threads(args.threads)
    meta = _meta_config(args)
    if args.model == "melu":
        args.engine_timing = False
    spec = dataset_spec(args)
    t0 = time.perf_counter()
    data = load_dataset(spec, download=args.download)
    _say(args, f"data: {spec['dataset']}: {len(data)} interactions, {data.n_users} users, {data.n_items} items "
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
            _say(args, f"seed {seed}: support-size sweep K = {' '.join(map(str, args.sweep_ks))}")
            state["sweeps"].append(reports.support_sweep(scorers, split.test, ks=args.sweep_ks,
                                                         threshold=args.threshold, eval_ks=args.ks))
        if args.engine_timing and metas and not state["timing"] and args.model == "mf":
            _say(args, "timing one meta-step per algorithm with engines cpp and torch")
            state["timing"] = reports.engine_timing(split.train, metas, meta, random_state=seed)
        if args.save_models:
            _save_models(args, spec, models_dir, seed, scorers, data, state, split.val)

    _say(args, f"training {', '.join(algorithms)} on a {args.scenario} split (K={args.support}), "
               f"seeds {' '.join(map(str, args.seeds))}")
    report = experiments.run(
        data, scenario=args.scenario, support=args.support, query=args.query, by=args.by, seeds=args.seeds,
        algorithms=algorithms, meta=meta, ks=args.ks, threshold=args.threshold, dataset_name=spec["dataset"],
        show_progress=not args.quiet,
        split_kwargs={"val_fraction": args.val_fraction, "test_fraction": args.test_fraction},
        on_seed=on_seed, trainer_class=trainer_class)
    if rank != 0:
        return 0
    out = report.to_dict()
    out["config"].update(command=args.command, data=spec, engine=meta.engine, world_size=world)
    out["support_sweep"] = reports.mean_sweeps(state["sweeps"]) if args.support_sweep else None
    out["engine_timing"] = state["timing"]
    out["models"] = state["saved"]
    out["bundle"] = str(state["best"][1]) if state["best"] else None
    out["total_seconds"] = time.perf_counter() - t0
    path, plots, note = reports.write_report(report_dir, out, plots=args.plots)
    from .evaluation import format_table

    # One seed: no "± 0.0000" columns.
    print(format_table(report.results if len(args.seeds) > 1 else [{**r, "std": {}} for r in report.results]))
    _print_written(path, plots, note)
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
    from .meta import save_model_file
    from .serving import Recommender

    train_cfg = {"data": spec, "scenario": args.scenario, "support": args.support, "query": args.query,
                 "by": args.by, "seed": seed, "val_fraction": args.val_fraction,
                 "test_fraction": args.test_fraction, "threshold": args.threshold}
    for scorer in scorers:
        learner = getattr(scorer, "learner", None)
        if learner is None:
            continue  # baselines are refitted by `evaluate`
        name = f"{scorer.name}-seed{seed}"
        model = learner.model
        model_args = {"n_items": int(data.n_items), "dim": args.dim, "loss": model.loss}
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
    # The best meta-learner by validation loss becomes models/bundle.npz.
    for entry in state["saved"]:
        if entry["seed"] != seed or "bundle" not in entry:
            continue
        val = entry.get("val_loss")
        if val is None:
            val = _val_loss(next(s for s in scorers if s.name == entry["model"]), split_val)
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

    from .meta import TaskBatch
    from .meta.inner import query_losses

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


# ---------------------------------------------------------------- evaluate
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


def _load_bundle(path: str) -> Any:
    from .serving import Recommender

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"bundle {p} does not exist (expected an .npz written by 'metarec-fast train', "
                       "e.g. metarec-report/models/bundle.npz)")
    return Recommender.load(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import evaluation, reports
    from .data import cold_start_split
    from .experiments import SCENARIOS as SPLIT_NAMES
    from .experiments import _baseline

    _setup_threads(args.threads)
    recs = [_load_bundle(b) for b in args.bundles]
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
    from . import __version__

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
    _print_written(path, plots, note)
    return 0


def _print_written(path: Any, plots: Any, note: Any) -> None:
    """Where the report and plots went (or why plots were skipped)."""
    print()
    print(f"report: {path}")
    for p in plots:
        print(f"plot:   {p}")
    if note:
        print(note)


# ---------------------------------------------------------------- recommend
def _parse_inline(specs: list[str]) -> list[tuple[str, list[str], list[float]]]:
    users = []
    for n, text in enumerate(specs):
        user, sep, rest = text.partition("=")
        if not sep:
            user, rest = f"user{n}", text
        items, ratings = [], []
        for pair in filter(None, (x.strip() for x in rest.split(","))):
            item, colon, rating = pair.partition(":")
            try:
                ratings.append(float(rating) if colon else 1.0)
            except ValueError:
                raise CLIError(f"--support {text!r}: rating {rating!r} is not a number "
                               "(expected [USER=]ITEM:RATING,ITEM:RATING,...)") from None
            items.append(item.strip())
        if not items:
            raise CLIError(f"--support {text!r} has no items (expected [USER=]ITEM:RATING,ITEM:RATING,...)")
        users.append((user.strip(), items, ratings))
    return users


def _parse_csv(path: str) -> list[tuple[str, list[str], list[float]]]:
    import csv

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{p} does not exist (expected a CSV file with a header user,item[,rating])")
    users: dict[str, tuple[list[str], list[float]]] = {}
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if "user" not in fields or "item" not in fields:
                raise CLIError(f"{p}: expected a header with columns user,item[,rating], got {fields}")
            for row in reader:
                line = reader.line_num
                if row["item"] is None or not row["item"].strip():
                    raise CLIError(f"{p}, line {line}: missing item (expected user,item[,rating])")
                try:
                    rating = float(row["rating"]) if row.get("rating") not in (None, "") else 1.0
                except ValueError:
                    raise CLIError(f"{p}, line {line}: rating {row['rating']!r} is not a number") from None
                items, ratings = users.setdefault(row["user"], ([], []))
                items.append(row["item"].strip())
                ratings.append(rating)
    except UnicodeDecodeError as exc:
        raise CLIError(f"{p} is not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise CLIError(f"{p}: not a valid CSV file: {exc}") from None
    if not users:
        raise CLIError(f"{p} holds no support interactions")
    return [(u, it, r) for u, (it, r) in users.items()]


def _item_lookup(rec: Any, dense: bool):
    raw = rec.config.get("item_raw_ids")
    if dense or raw is None:
        def to_dense(item: str) -> int:
            try:
                i = int(item)
            except ValueError:
                raise CLIError(f"item {item!r} is not an integer id") from None
            if not 0 <= i < rec.n_items:
                raise CLIError(f"item {i} is outside the bundle's catalogue [0, {rec.n_items})")
            return i

        return to_dense, (lambda i: int(i))
    index = {str(r): i for i, r in enumerate(raw)}

    def to_dense_raw(item: str) -> int:
        if item not in index:
            raise CLIError(f"item {item!r} is not in the bundle's catalogue ({len(raw)} items; "
                           "--dense-ids takes ids 0..n_items-1)")
        return index[item]

    return to_dense_raw, (lambda i: raw[i] if i >= 0 else None)


def recommend_users(rec: Any, users: list[tuple[str, list[str], list[float]]], k: int, dense_ids: bool = False,
                    include_seen: bool = False) -> list[dict[str, Any]]:
    """Adapt ``rec`` to each user's support set and return their top-``k`` (what the command prints)."""
    import numpy as np

    to_dense, to_raw = _item_lookup(rec, dense_ids)
    support = [(np.array([to_dense(i) for i in items], dtype=np.int64), np.array(ratings, dtype=np.float64))
               for _, items, ratings in users]
    states = rec.adapt(support)
    ids, scores = rec.recommend(states, k=k, exclude_seen=not include_seen)
    out = []
    for (user, _, _), row_ids, row_scores in zip(users, ids, scores):
        keep = row_ids >= 0
        out.append({"user": user, "items": [to_raw(int(i)) for i in row_ids[keep]],
                    "scores": [float(s) for s in row_scores[keep]]})
    return out


def cmd_recommend(args: argparse.Namespace) -> int:
    _setup_threads(args.threads)
    rec = _load_bundle(args.bundle)
    if args.csv:
        users = _parse_csv(args.csv)
    elif args.support:
        users = _parse_inline(args.support)
    else:
        raise CLIError("give the new users' support interactions: --csv FILE or --support ITEM:RATING,...")
    result = recommend_users(rec, users, args.k, dense_ids=args.dense_ids, include_seen=args.include_seen)
    if args.format == "json":
        print(json.dumps({"bundle": str(args.bundle), "k": args.k, "users": result}))
    else:
        print(f"{'user':<12} {'rank':>4}  {'item':>10}  {'score':>9}")
        for r in result:
            for rank, (item, score) in enumerate(zip(r["items"], r["scores"]), start=1):
                print(f"{r['user']:<12} {rank:>4}  {item!s:>10}  {score:>9.4f}")
    return 0


# ---------------------------------------------------------------- bench
def _best(fn: Any, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_rows(repeats: int = 3, scale: float = 1.0) -> list[dict[str, Any]]:
    """Quick timings of the kernels against their torch / numpy peers (results checked first)."""
    import numpy as np
    import torch

    from . import metrics, ops

    rng = np.random.default_rng(0)
    rows = []

    def add(kernel: str, shape: str, ours: float, peer_name: str, peer: float) -> None:
        rows.append({"kernel": kernel, "shape": shape, "metarec_ms": ours * 1e3, "peer": peer_name,
                     "peer_ms": peer * 1e3, "speedup": peer / ours if ours > 0 else math.inf})

    # top-k of users @ items.T + bias
    nq, ni, d, k = max(1, int(256 * scale)), max(10, int(20000 * scale)), 64, 10
    q = rng.standard_normal((nq, d), dtype=np.float32)
    it = rng.standard_normal((ni, d), dtype=np.float32)
    bias = rng.standard_normal(ni, dtype=np.float32)
    tq, ti, tb = map(torch.from_numpy, (q, it, bias))
    ids, _ = ops.topk_dot(q, it, k, item_bias=bias)
    ref = torch.topk(tq @ ti.T + tb, k).indices.numpy()
    if (ids != ref).mean() > 0.01:
        raise RuntimeError("bench: topk_dot disagrees with torch")
    add("topk_dot", f"{nq}x{ni}xd{d} k{k}", _best(lambda: ops.topk_dot(q, it, k, item_bias=bias), repeats),
        "torch matmul+topk", _best(lambda: torch.topk(tq @ ti.T + tb, k), repeats))

    # embedding bags (sum)
    rows_, bags, bag = max(10, int(100000 * scale)), max(1, int(20000 * scale)), 20
    table = rng.standard_normal((rows_, 64), dtype=np.float32)
    idx = rng.integers(0, rows_, bags * bag)
    offsets = np.arange(bags, dtype=np.int64) * bag
    tt, tidx, toff = torch.from_numpy(table), torch.from_numpy(idx), torch.from_numpy(offsets)
    import torch.nn.functional as F

    ours = ops.embedding_bag(table, idx, offsets, mode="sum")
    if not np.allclose(ours, F.embedding_bag(tidx, tt, toff, mode="sum").numpy(), atol=1e-4):
        raise RuntimeError("bench: embedding_bag disagrees with torch")
    add("embedding_bag", f"{bags} bags x {bag} of {rows_}x64",
        _best(lambda: ops.embedding_bag(table, idx, offsets, mode="sum"), repeats),
        "torch embedding_bag", _best(lambda: F.embedding_bag(tidx, tt, toff, mode="sum"), repeats))

    # ranking metrics
    nu, nitems, kk = max(1, int(5000 * scale)), 2000, 20
    top = np.stack([rng.choice(nitems, kk, replace=False) for _ in range(nu)]).astype(np.int64)
    lens = rng.integers(1, 30, nu)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    rel = np.concatenate([rng.choice(nitems, n, replace=False) for n in lens]).astype(np.int64)

    def numpy_ndcg() -> float:
        disc = 1.0 / np.log2(np.arange(2, 12))
        total = 0.0
        for u in range(nu):
            r = rel[indptr[u]:indptr[u + 1]]
            hits = np.isin(top[u, :10], r)
            total += float((hits * disc).sum() / disc[:min(10, r.size)].sum())
        return total / nu

    got = metrics.ranking(top, (indptr, rel), ks=(10,)).mean["ndcg@10"]
    if abs(got - numpy_ndcg()) > 1e-9:
        raise RuntimeError("bench: metrics.ranking disagrees with numpy")
    add("metrics.ranking", f"{nu} users, top-{kk}, ndcg@10",
        _best(lambda: metrics.ranking(top, (indptr, rel), ks=(10,)), repeats),
        "numpy per-user loop", _best(numpy_ndcg, max(1, repeats // 2)))

    # inner loop + exact meta-gradient (second-order MAML)
    from .meta import MetaLearner, TaskBatch
    from .models import MetaMF

    nu2, n_items2, ns = max(1, int(256 * scale)), 2000, 20
    sup, qry = [], []
    for _ in range(nu2):
        items = rng.choice(n_items2, 2 * ns, replace=False)
        r = rng.integers(1, 6, 2 * ns).astype(float)
        sup.append((items[:ns].tolist(), r[:ns].tolist()))
        qry.append((items[ns:].tolist(), r[ns:].tolist()))
    batch = TaskBatch.from_lists(sup, qry, dtype=torch.float32)
    learners = {e: MetaLearner(MetaMF(n_items2, dim=32, random_state=0, global_bias=3.0), "maml", inner_steps=5,
                               inner_lr=0.05, engine=e) for e in ("cpp", "torch")}

    def grad(engine: str) -> Any:
        learner = learners[engine]
        learner.zero_grad(set_to_none=True)
        learner(batch).backward()
        return learner.model.item_embedding.grad

    if not torch.allclose(grad("cpp"), grad("torch"), atol=1e-4, rtol=1e-3):
        raise RuntimeError("bench: the cpp and torch engines disagree")
    add("adapt fwd+bwd (MAML)", f"{nu2} users x {ns}+{ns}, d32, T5", _best(lambda: grad("cpp"), repeats),
        "torch.func engine", _best(lambda: grad("torch"), repeats))
    return rows


def cmd_bench(args: argparse.Namespace) -> int:
    from . import get_num_threads

    _setup_threads(args.threads)
    t0 = time.perf_counter()
    rows = bench_rows(args.repeats, args.scale)
    threads = get_num_threads()
    if args.format == "json":
        print(json.dumps({"threads": threads, "rows": rows}))
        return 0
    print(f"best of {args.repeats} runs, {threads} thread(s); speed-up = peer time / metarec-fast time")
    print(f"{'kernel':<22} {'problem':<30} {'metarec ms':>10}  {'peer':<20} {'peer ms':>9}  {'speed-up':>8}")
    for r in rows:
        print(f"{r['kernel']:<22} {r['shape']:<30} {r['metarec_ms']:>10.2f}  {r['peer']:<20} "
              f"{r['peer_ms']:>9.2f}  {r['speedup']:>7.2f}x")
    print(f"({time.perf_counter() - t0:.1f} s; full benchmarks: pytest benchmarks/)")
    return 0


# ---------------------------------------------------------------- datasets / info
def cmd_datasets(args: argparse.Namespace) -> int:
    from . import datasets

    home = datasets.data_home(args.data_home)
    source = ("--data-home" if args.data_home else "$METAREC_DATA" if os.environ.get("METAREC_DATA")
              else "user cache folder")
    print(f"data home: {home} ({source})")
    print(f"{'dataset':<24} {'status':<9} location")
    print(f"{'synthetic':<24} {'present':<9} generated in-process (no download)")
    for key, rel in datasets.MOVIELENS.items():
        folder = home / rel.folder
        if (folder / rel.marker).is_file():
            status, where = "present", folder
        elif (home / rel.archive).is_file():
            status, where = "archive", home / rel.archive
        else:
            status, where = "missing", f"{folder / rel.marker} (downloaded from {datasets._BASE + rel.archive})"
        print(f"{'movielens-' + key:<24} {status:<9} {where}")
    print(f"{'csv:PATH':<24} {'-':<9} your CSV/TSV log, header user,item[,rating[,timestamp]] (--columns to map)")
    print(f"{'parquet:PATH':<24} {'-':<9} your Parquet log (--columns to map)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ._config import show_config

    show_config()
    return 0


COMMANDS = {"demo": cmd_train, "train": cmd_train, "evaluate": cmd_evaluate, "recommend": cmd_recommend,
            "bench": cmd_bench, "datasets": cmd_datasets, "info": cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    verbose = "-v" in (argv if argv is not None else sys.argv[1:]) or "--verbose" in (
        argv if argv is not None else sys.argv[1:])
    try:
        args = parse(argv)
        verbose = bool(getattr(args, "verbose", False))
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        command = args.command or "info"
        return COMMANDS[command](args)
    except KeyboardInterrupt:
        print("metarec-fast: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `metarec-fast recommend ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (CLIError, ValueError, FileNotFoundError, IndexError, TypeError) as exc:
        if verbose:
            raise
        message = " ".join(str(exc).split())
        if not isinstance(exc, CLIError):
            message = f"{message} ({type(exc).__name__}; --verbose shows the traceback)"
        print(f"metarec-fast: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line, exit 1
        if verbose:
            raise
        if type(exc).__name__ == "DivergenceError":  # meta.DivergenceError: a hyper-parameter problem
            print(f"metarec-fast: error: {' '.join(str(exc).split())} (training diverged: lower --inner-lr, "
                  "--outer-lr or --l2, or use fewer --inner-steps)", file=sys.stderr)
            return EXIT_USAGE
        print(f"metarec-fast: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
              "(run with --verbose for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
