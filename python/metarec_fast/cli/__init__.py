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

One module per command (``train``, ``demo``, ``evaluate``, ``recommend``,
``bench``, ``datasets``, ``info``: each ``add_parser(sub)`` and ``cmd_<name>``);
:mod:`.config` holds the shared options, argument types and TOML merging.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from .._bench import bench_rows
from . import bench, datasets, demo, evaluate, info, recommend, train
from .bench import cmd_bench
from .config import (
    BASELINES,
    DEMO,
    EXIT_USAGE,
    META_ALGORITHMS,
    MOVIELENS_SPECS,
    SCENARIOS,
    CLIError,
    Parser,
    config_defaults,
    fraction,
    load_toml,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    query_size,
)
from .datasets import cmd_datasets, dataset_spec, load_dataset
from .demo import cmd_demo
from .evaluate import BundleScorer, cmd_evaluate
from .info import cmd_info
from .recommend import cmd_recommend, recommend_users
from .train import cmd_train

__all__ = [
    "BASELINES", "COMMANDS", "DEMO", "EXIT_USAGE", "META_ALGORITHMS", "MOVIELENS_SPECS", "SCENARIOS",
    "BundleScorer", "CLIError", "bench_rows", "build_parser", "cmd_bench", "cmd_datasets", "cmd_demo", "cmd_evaluate",
    "cmd_info", "cmd_recommend", "cmd_train", "dataset_spec", "fraction", "load_dataset", "main",
    "nonneg_float", "nonneg_int", "parse", "positive_float", "positive_int", "query_size", "recommend_users",
]

_MODULES = (demo, train, evaluate, recommend, bench, datasets, info)  # the order of --help


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="metarec-fast", description="Meta-learned recommendation under cold start: train "
                     "meta-learners, compare them with baselines, serve fast adaptation.")
    parser.add_argument("--version", action="version", version=f"metarec-fast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details; tracebacks on errors")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    for module in _MODULES:
        module.add_parser(sub)
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; options from ``--config`` become defaults that the command line overrides."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
        sub.set_defaults(**config_defaults(sub, load_toml(args.config), args.command, args.config))
        args = parser.parse_args(argv)
    return args


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "recommend": cmd_recommend,
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
