"""The ``metarec-fast`` console script."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="metarec-fast",
        description="Meta-learned recommendation under cold start.",
    )
    parser.add_argument("--version", action="version", version=f"metarec-fast {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="print version and build configuration")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "info"):
        from ._config import show_config

        show_config()
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
