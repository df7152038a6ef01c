"""Top-k and embedding-bag speed at every SIMD level, and portable vs native.

    python benchmarks/simd_levels.py                 # levels + a -march=native build (~5-8 min)
    python benchmarks/simd_levels.py --no-native     # levels only (~3 min)
    python benchmarks/simd_levels.py --native-python /path/to/native-venv/bin/python

What it runs (not part of the test suite):

* The portable build (the interpreter running this script, i.e. the wheel or
  ``.venv`` build: baseline flags + runtime dispatch) once per SIMD level the
  CPU supports, each in a fresh subprocess with ``METAREC_SIMD=<level>`` (the
  level is read once per process, as in real use).
* A ``METAREC_NATIVE=ON`` build (``-march=native`` on every kernel file),
  built from this checkout into a temporary virtual environment and build
  folder (nothing in the checkout is touched), at its default level.

Cases (float32, ``METAREC_BENCH_THREADS`` or ``--threads`` threads, default 2;
the same shapes as bench_topk.py / bench_embedding.py):

* ``topk_dot`` small 1000 x 20000 x 64 and target 10000 x 50000 x 64, k=10,
  50 excluded items per query;
* ``embedding_bag`` 1M x 64 table, 65536 bags of 20 (sum, mean, weighted sum)
  and 200k x 256, 8192 bags of 30 (sum).

Each worker first checks its results (top-k against a float64 numpy reference
on 200 rows, embedding bags against numpy), then times them (median of
``--repeats`` after one warm-up). The table also says whether every run gave
bit-identical embedding bags and identical top-k ids. Timings on a shared
machine are noisy; treat small differences as noise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ["generic", "avx2", "avx512"]
N_EXCL = 50
CHECK_ROWS = 200

TOPK_SHAPES = {  # name: (n_queries, n_items, d, k)
    "small": (1_000, 20_000, 64, 10),
    "target": (10_000, 50_000, 64, 10),
}
BAG_CASES = [  # (label, num_rows, d, n_bags, bag_size, mode)
    ("1Mx64-65536x20 sum", 1_000_000, 64, 65_536, 20, "sum"),
    ("1Mx64-65536x20 mean", 1_000_000, 64, 65_536, 20, "mean"),
    ("1Mx64-65536x20 weighted", 1_000_000, 64, 65_536, 20, "weighted"),
    ("200kx256-8192x30 sum", 200_000, 256, 8_192, 30, "sum"),
]


# ------------------------------------------------------------------ worker


def _time(fn, repeats):
    t0 = time.perf_counter()
    fn()  # warm-up (page faults, thread pool)
    first = time.perf_counter() - t0
    # Several calls per sample when one call is short (coarse clocks).
    inner = max(1, min(50, int(0.25 / max(first, 1e-6))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    samples.sort()
    return samples[len(samples) // 2]


def worker(threads: int, repeats: int) -> dict:
    import numpy as np

    from metarec_fast import _core, ops
    from metarec_fast._config import config

    out = {"config": config(), "results": {}}
    res = out["results"]

    for name, (nq, ni, d, k) in TOPK_SHAPES.items():
        rng = np.random.default_rng(42)
        q = rng.standard_normal((nq, d), dtype=np.float32)
        it = rng.standard_normal((ni, d), dtype=np.float32)
        cols = np.sort(np.stack([rng.choice(ni, N_EXCL, replace=False) for _ in range(nq)]), axis=1)
        indptr = np.arange(0, nq * N_EXCL + 1, N_EXCL, dtype=np.int64)
        excl = (indptr, cols.ravel().astype(np.int64))
        ids, vals = ops.topk_dot(q, it, k, exclude=excl, num_threads=threads)
        exact = q[:CHECK_ROWS].astype(np.float64) @ it.astype(np.float64).T
        tol = 1e-5 * (1.0 + np.abs(exact).max())
        for r in range(CHECK_ROWS):
            row = exact[r].copy()
            row[cols[r]] = -np.inf
            kth = np.partition(row, -k)[-k]
            got = row[ids[r]]
            assert len(set(ids[r].tolist())) == k and got.min() >= kth - tol, f"topk_dot {name} row {r}"
        sec = _time(lambda: ops.topk_dot(q, it, k, exclude=excl, num_threads=threads), repeats)
        res[f"topk_dot {name} {nq}x{ni}x{d} k{k}"] = {
            "ms": sec * 1e3, "hash": hashlib.sha1(ids.tobytes()).hexdigest()[:12]}
        del q, it, cols, exact

    table_key = None
    for label, num_rows, d, n_bags, size, mode in BAG_CASES:
        if table_key != (num_rows, d):
            rng = np.random.default_rng(0)
            table = rng.standard_normal((num_rows, d), dtype=np.float32)
            ids = rng.integers(0, num_rows, n_bags * size, dtype=np.int64)
            offsets = np.arange(0, n_bags * size, size, dtype=np.int64)
            weights = rng.random(n_bags * size, dtype=np.float32)
            table_key = (num_rows, d)
        w = weights if mode == "weighted" else None
        m = "mean" if mode == "mean" else "sum"
        got = ops.embedding_bag(table, ids, offsets, w, m, num_threads=threads)
        rows = table[ids].reshape(n_bags, size, d)
        if w is not None:
            rows = rows * w.reshape(n_bags, size, 1)
        ref = rows.mean(axis=1) if m == "mean" else rows.sum(axis=1)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4, err_msg=label)
        del rows, ref
        sec = _time(lambda: ops.embedding_bag(table, ids, offsets, w, m, num_threads=threads), repeats)
        nbytes = ids.size * (d * 4 + 8) + n_bags * (d * 4 + 8)
        res[f"embedding_bag {label}"] = {
            "ms": sec * 1e3, "GBps": nbytes / sec / 1e9,
            "hash": hashlib.sha1(got.tobytes()).hexdigest()[:12]}
    out["embedding_level"] = _core.embedding_simd_level()
    return out


# ------------------------------------------------------------------ driver


def run_worker(python: str, level: str | None, threads: int, repeats: int) -> dict:
    env = dict(os.environ)
    env.pop("METAREC_SIMD", None)
    if level is not None:
        env["METAREC_SIMD"] = level
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [python, str(Path(__file__).resolve()), "--worker", "--threads", str(threads),
           "--repeats", str(repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        sys.exit(f"worker failed ({python}, METAREC_SIMD={level}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_native(workdir: Path) -> str:
    """Builds this checkout with METAREC_NATIVE=ON into workdir/venv; returns its python."""
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {**os.environ, "METAREC_NATIVE": "ON"}
    t0 = time.time()
    print(f"building the native (-march=native) variant into {workdir} ...", file=sys.stderr, flush=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    f"--config-settings=build-dir={workdir / 'build'}", str(ROOT)],
                   env=env, check=True, cwd=str(workdir))
    print(f"  built in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("METAREC_BENCH_THREADS", "2")))
    ap.add_argument("--repeats", type=int, default=5, help="timed samples per case and run")
    ap.add_argument("--rounds", type=int, default=2, help="runs of every configuration, interleaved")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-native", action="store_true", help="skip the -march=native build")
    ap.add_argument("--native-python", help="interpreter of an existing METAREC_NATIVE=ON install")
    ap.add_argument("--keep", action="store_true", help="keep the native build's temp folder")
    ap.add_argument("--json", help="also write every raw result to this file")
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(args.threads, args.repeats)))
        return

    detected = subprocess.run(
        [sys.executable, "-c", "from metarec_fast import _core; print(_core.simd_detected())"],
        capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()).stdout.strip()
    levels = LEVELS[: LEVELS.index(detected) + 1]

    configs: list[tuple[str, str | None]] = [(sys.executable, level) for level in levels]
    tmp = None
    if not args.no_native:
        native_py = args.native_python
        if native_py is None:
            tmp = Path(tempfile.mkdtemp(prefix="metarec-native-"))
            native_py = build_native(tmp)
        configs.append((native_py, None))

    # Rounds interleave the configurations (load on a shared machine drifts);
    # each case keeps its fastest median over the rounds.
    merged: dict[int, dict] = {}
    for rnd in range(args.rounds):
        for i, (python, level) in enumerate(configs):
            what = f"METAREC_SIMD={level}" if level else "native build, default level"
            print(f"round {rnd + 1}/{args.rounds}: {what} ...", file=sys.stderr, flush=True)
            r = run_worker(python, level, args.threads, args.repeats)
            native = python != sys.executable
            assert r["config"]["native_build"] == native, (
                f"{python}: expected a {'native' if native else 'portable'} build")
            if i not in merged:
                merged[i] = r
            else:
                for case, v in r["results"].items():
                    assert v["hash"] == merged[i]["results"][case]["hash"], f"{case}: result changed"
                    if v["ms"] < merged[i]["results"][case]["ms"]:
                        merged[i]["results"][case] = v
    if tmp is not None and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    runs: list[tuple[str, dict]] = []
    for i, (python, level) in enumerate(configs):
        r = merged[i]
        name = f"portable {level}" if level else f"native ({r['config']['simd_in_use']})"
        runs.append((name, r))

    # ---- table
    cases = list(runs[0][1]["results"])
    names = [n for n, _ in runs]
    width = max(len(c) for c in cases) + 2
    colw = max(14, max(len(n) for n in names) + 2)
    cfg = runs[0][1]["config"]
    print()
    print(f"metarec-fast {cfg['version']}, {cfg['compiler']}, {args.threads} threads, ms (lower is better): "
          f"best over {args.rounds} interleaved rounds of the median of {args.repeats}; "
          f"CPU best level: {detected}")
    for name, r in runs:
        print(f"  {name}: simd_kernels {r['config']['simd_kernels']}")
    header = "case".ljust(width) + "".join(n.rjust(colw) for n in names)
    has_native = not args.no_native
    if has_native:
        header += "native/best-portable".rjust(22)
    header += "  same result"
    print(header)
    print("-" * len(header))
    portable = [i for i, n in enumerate(names) if n.startswith("portable")]
    for case in cases:
        vals = [r["results"][case]["ms"] for _, r in runs]
        line = case.ljust(width) + "".join(f"{v:.2f}".rjust(colw) for v in vals)
        if has_native:
            best = min(vals[i] for i in portable)
            line += f"{vals[-1] / best:.2f}x".rjust(22)
        hashes = [r["results"][case]["hash"] for _, r in runs]
        if case.startswith("topk_dot"):
            # The generic level multiplies then adds; the FMA levels fuse:
            # ids agree unless two scores tie within rounding.
            fma = [h for (n, _), h in zip(runs, hashes) if "generic" not in n]
            same = "ids identical" if len(set(hashes)) == 1 else (
                "FMA levels identical" if len(set(fma)) == 1 else "DIFFER")
        else:
            same = "bit-identical" if len(set(hashes)) == 1 else "DIFFER"
        print(line + "  " + same)
    print()
    print("embedding_bag GB/s (minimum bytes moved / time):")
    for case in cases:
        if case.startswith("embedding_bag"):
            gb = [r["results"][case]["GBps"] for _, r in runs]
            print("  " + case.ljust(width) + "".join(f"{g:.1f}".rjust(colw) for g in gb))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(runs), indent=1))


if __name__ == "__main__":
    main()
