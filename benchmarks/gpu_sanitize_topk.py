"""Small CUDA top-k workload for compute-sanitizer (memcheck / racecheck /
synccheck), run by benchmarks/gpu_check.sh. Tiny shapes that still cover
every path: several query tiles and item slices, buffer overflows and
flushes, exclusions, ties, padding, float32 and float64, NaN reporting.
Exits non-zero if a result differs from the CPU twin.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from metarec_fast import ops
from metarec_fast.ops.topk import _topk_cuda, _topk_dot_cuda


def exclusion(rng, n_rows, n_cols, per_row):
    rows = [np.sort(rng.integers(0, n_cols, rng.integers(0, per_row + 1))) for _ in range(n_rows)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return indptr, np.concatenate(rows).astype(np.int64)


def main() -> int:
    dev = torch.device("cuda", torch.cuda.current_device())
    rng = np.random.default_rng(0)
    bad = 0
    for dtype in (np.float32, np.float64):
        q = rng.integers(-1, 2, (150, 5)).astype(dtype)
        it = rng.integers(-1, 2, (1500, 5)).astype(dtype)
        b = rng.integers(-1, 2, 1500).astype(dtype)
        ex = exclusion(rng, 150, 1500, 40)
        want = ops.topk_dot(q, it, 40, item_bias=b, exclude=ex)
        for slices in (1, 3):
            ids, vals = _topk_dot_cuda(q, it, 40, b, ex, dev, slices=slices)
            got = (ids.cpu().numpy(), vals.cpu().numpy())
            if not (np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])):
                print(f"topk_dot {dtype.__name__} slices={slices}: differs from the CPU")
                bad += 1
        s = rng.integers(-5, 5, (7, 5000)).astype(dtype)
        ex2 = exclusion(rng, 7, 5000, 100)
        want = ops.topk(s, 30, exclude=ex2)
        for slices in (1, 2):
            ids, vals = _topk_cuda(s, 30, ex2, dev, slices=slices)
            if not np.array_equal(ids.cpu().numpy(), want[0]):
                print(f"topk {dtype.__name__} slices={slices}: differs from the CPU")
                bad += 1
        # padding only (k beyond the items) and the empty catalogue
        _topk_dot_cuda(q[:3], it[:5], 9, None, None, dev)
        _topk_dot_cuda(q[:3], it[:0], 2, None, None, dev)
        s[3, 17] = np.nan
        try:
            _topk_cuda(s, 3, None, dev)
            print("NaN not reported")
            bad += 1
        except ValueError:
            pass
    torch.cuda.synchronize()
    print("sanitize workload:", "ok" if bad == 0 else f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
