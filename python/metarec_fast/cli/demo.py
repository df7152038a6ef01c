"""``metarec-fast demo``: the main job on the embedded synthetic dataset (no
download): the baselines and MAML, first-order MAML, Reptile and Meta-SGD with
the C++ engine on a user-cold split; prints the comparison table, writes a
report. It runs ``train``'s pipeline with the demo's defaults.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import DEMO, common_args, data_args, split_args
from .train import cmd_train, train_args


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded synthetic data (no download)",
                       description="Train the baselines and MAML, FOMAML, Reptile and Meta-SGD (C++ engine) "
                       "on a user-cold split of synthetic data; print the table; write the report.")
    common_args(p)
    data_args(p)
    p.set_defaults(n_users=DEMO["n_users"], n_items=DEMO["n_items"])
    split_args(p)
    train_args(p, demo=True)


def cmd_demo(args: argparse.Namespace) -> int:
    """``train`` on the demo's data and defaults (it checks ``args.command == "demo"``)."""
    return cmd_train(args)
