"""Shared by the GPU benchmarks (benchmarks/gpu_bench_*.py): CUDA-event timing."""

from __future__ import annotations

import statistics
from typing import Any, Callable


def cuda_median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` between CUDA events, after ``warmup`` calls.

    Each repeat is bracketed by its own pair of events on the current stream and
    waited for, so queued work from one repeat never leaks into the next.
    """
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
