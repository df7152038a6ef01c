"""``metarec-fast bench``: a few-second run of the kernels against torch /
numpy (the timed problems live in :mod:`metarec_fast._bench`).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .._bench import bench_rows
from .config import common_args, positive_float, positive_int, setup_threads


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="a few-second run of the kernels against torch / numpy")
    common_args(p)
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs per kernel, best kept (default: 3)")
    p.add_argument("--scale", type=positive_float, default=1.0, help="problem size factor (default: 1)")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--format", choices=("table", "json"), default="table")


def cmd_bench(args: argparse.Namespace) -> int:
    from .. import get_num_threads

    setup_threads(args.threads)
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

