"""``metarec-fast info``: version and build configuration."""

from __future__ import annotations

import argparse
from typing import Any

from .config import common_args


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="print version and build configuration")
    common_args(p)


def cmd_info(args: argparse.Namespace) -> int:
    from .._config import show_config

    show_config()
    return 0
