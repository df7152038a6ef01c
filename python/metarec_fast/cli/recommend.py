"""``metarec-fast recommend``: adapt a bundle to new users' support sets (CSV or
inline) and print their top-k.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .config import CLIError, common_args, positive_int, setup_threads
from .evaluate import load_bundle


def add_parser(sub: Any) -> None:
    p = sub.add_parser("recommend", help="adapt a bundle to new users' support sets and print top-k")
    common_args(p)
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
    setup_threads(args.threads)
    rec = load_bundle(args.bundle)
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

