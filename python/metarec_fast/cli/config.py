"""Shared pieces of the command line: constants, the one-line-error parser,
argument types, the option groups several commands take, helpers they share,
and ``--config FILE.toml`` merging (TOML keys become parser defaults that the
command line overrides).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
from ..experiments import BASELINES, META_ALGORITHMS  # noqa: E402  (one list of names for the API and the CLI)
SCENARIOS = ("user-cold", "item-cold", "both-cold", "warm")
MOVIELENS_SPECS = ("movielens-100k", "movielens-1m", "movielens-latest-small", "movielens-10m",
                   "movielens-20m", "movielens-25m")
DEMO = {"n_users": 800, "n_items": 250, "epochs": 5, "dim": 16, "outer_lr": 0.05}
# The subcommands, in the order of --help (also the names of a config file's tables).
COMMAND_NAMES = ("demo", "train", "evaluate", "recommend", "bench", "datasets", "info")


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


# ---------------------------------------------------------------- argparse glue
class Parser(argparse.ArgumentParser):
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


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (keys = flag names)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log progress details; show tracebacks on errors")


def data_args(p: argparse.ArgumentParser, default: str | None = "synthetic") -> None:
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


def split_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
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




# ---------------------------------------------------------------- shared helpers
def setup_threads(n: int | None) -> None:
    if n is None:
        return
    from .. import set_num_threads

    set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass


def say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)



def print_written(path: Any, plots: Any, note: Any) -> None:
    """Where the report and plots went (or why plots were skipped)."""
    print()
    print(f"report: {path}")
    for p in plots:
        print(f"plot:   {p}")
    if note:
        print(note)


# ---------------------------------------------------------------- config files
def load_toml(path: str) -> dict[str, Any]:
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


def config_defaults(sub: argparse.ArgumentParser, config: dict[str, Any], command: str,
                     path: str) -> dict[str, Any]:
    """TOML keys (flag names, ``-`` or ``_``) -> parser defaults; a ``[command]`` table overrides."""
    items = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for key, value in config.items():
        if isinstance(value, dict) and key not in COMMAND_NAMES:
            raise CLIError(f"unknown table [{key}] in {path} (tables name commands: {', '.join(COMMAND_NAMES)})")
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

