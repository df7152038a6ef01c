"""``metarec-fast datasets`` (the known datasets, where they are looked for,
whether present) and the ``--dataset`` option's meaning: a spec that reports
and bundles keep, and the loader behind it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .config import MOVIELENS_SPECS, CLIError, common_args


def add_parser(sub: Any) -> None:
    p = sub.add_parser("datasets", help="list the known datasets, where they are looked for, and if present")
    common_args(p)
    p.add_argument("--data-home", metavar="DIR")


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
    from .. import datasets

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
            from ..data import load_table

            path = Path(name[len(prefix):]).expanduser()
            if not path.is_file():
                what = "a CSV file with a header (user,item[,rating[,timestamp]])" if fmt is None else "a Parquet file"
                raise CLIError(f"{path} does not exist (expected {what})")
            return load_table(path, columns=_columns(spec.get("columns")), sep=spec.get("sep"), format=fmt)
    raise CLIError(f"unknown dataset {name!r}; expected synthetic, {', '.join(MOVIELENS_SPECS)}, "
                   "csv:PATH or parquet:PATH")



def cmd_datasets(args: argparse.Namespace) -> int:
    from .. import datasets

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
