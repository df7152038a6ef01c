"""Thread control and build facts."""

from __future__ import annotations

import platform
import sys
from typing import Any

from . import _core, _gpu


def set_num_threads(n: int) -> None:
    """Set the default number of OpenMP threads used by every kernel.

    Kernels called with ``num_threads=None`` use this default (which also
    follows ``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits``).
    ``-1`` means all processors.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n == -1:
        n = _core.resolve_num_threads(-1)
    if n <= 0:
        raise ValueError(f"n must be a positive integer or -1, got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of OpenMP threads a kernel uses when ``num_threads=None``."""
    return int(_core.get_num_threads())


def resolve_num_threads(num_threads: int | None) -> int:
    """Map the public ``num_threads`` argument to the core's convention.

    ``None`` -> OpenMP default (0 for the core), ``-1`` -> all processors,
    ``n > 0`` -> ``n``. ``0`` and other negatives raise ``ValueError``.
    """
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, int):
        raise TypeError(f"num_threads must be None or an int, got {type(num_threads).__name__}")
    if num_threads == 0 or num_threads < -1:
        raise ValueError(f"num_threads must be None, -1 or a positive integer, got {num_threads}")
    return num_threads


def _simd_kernels() -> str:
    """Level of the loop each dispatched kernel family runs (``area=level``).

    Top-k scoring and adaptation run the active level; the embedding-bag loop
    may run a lower one when that level reuses the loop below it.
    """
    level = getattr(_core, "simd_level", None)
    emb = getattr(_core, "embedding_simd_level", None)
    if not callable(level):
        return "n/a"
    active = level()
    parts = [f"topk={active}", f"adapt={active}"]
    if callable(emb):
        parts.append(f"embedding_bag={emb()}")
    return ", ".join(parts)


def config() -> dict[str, Any]:
    """Build and runtime facts as a dict (see :func:`show_config`)."""
    build = dict(_core.build_info)
    simd = getattr(_core, "simd_level", None)
    return {
        "version": _core.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "compiler": build["compiler"],
        "build_type": build["build_type"],
        "native_build": build["native"],
        "openmp": build["openmp"],
        "num_threads": get_num_threads(),
        "simd_compiled": build["simd_baseline"],
        "simd_in_use": simd() if callable(simd) else build["simd_baseline"],
        "simd_kernels": _simd_kernels(),
        **_gpu.info(),
    }


def show_config(file: Any = None) -> None:
    """Print how this copy of metarec-fast was built and what it will use."""
    for key, value in config().items():
        print(f"{key:>14}: {value}", file=file or sys.stdout)
