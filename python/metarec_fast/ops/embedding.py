"""Embedding lookups: row gather, pooled bags, their gradients, sparse optimisers.

Every function takes numpy arrays or CPU torch tensors and returns the same
kind (torch in -> torch out). Tables are ``float32`` or ``float64``; ids and
offsets may have any integer dtype (converted once to int64).

Bags follow :func:`torch.nn.functional.embedding_bag` with
``include_last_offset=False``: with ``n_bags = len(offsets)``, bag ``b`` holds
``ids[offsets[b]:offsets[b + 1]]`` and the last bag runs to ``len(ids)``.
Alternatively pass a 2-d ``ids`` of shape ``(n_bags, bag_size)`` and
``offsets=None``. Empty bags pool to zeros.

Errors: a wrong dtype raises ``TypeError`` naming the expected dtype; a wrong
shape or length, NaN/inf where not allowed, or bad offsets raise
``ValueError`` naming the argument and value; an id outside the table raises
``IndexError`` naming the first bad id (the compiled core checks every id
again and never reads out of range).

NaN/inf policy: tables and ``grad_out`` are not scanned (a full scan would
cost as much as the lookup itself; non-finite values propagate as in torch).
Per-sample ``weights``, optimiser gradients, ``lr`` and ``eps`` must be finite.

Determinism: every result is bit-identical for any ``num_threads``. The
backward passes and optimisers group lookups by row and sum each row's
contributions in ascending position order (no floating-point atomics).
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple

import numpy as np

from .. import _core
from .._config import resolve_num_threads
from .._validation import (
    FLOAT_DTYPES,
    as_float_array,
    as_index_array,
    check_finite,
    like_input,
    to_numpy,
)

__all__ = [
    "embedding_bag",
    "embedding_bag_backward",
    "embedding_bag_weight_grad",
    "gather",
    "sparse_adagrad_",
    "sparse_sgd_",
]

_ANY_NDIM = tuple(range(33))
_MODES = ("sum", "mean")


# ---------------------------------------------------------------------------
# Validation helpers


def _table(x: Any, name: str = "table") -> np.ndarray:
    return as_float_array(x, name, 2, finite=False)


def _ids(x: Any, name: str = "ids", ndim: Any = _ANY_NDIM) -> np.ndarray:
    # Range checks happen in the core (one pass, names the first bad id).
    return as_index_array(x, name, n=None, ndim=ndim)


def _mode(mode: Any) -> str:
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be 'sum' or 'mean', got {mode!r}")
    return mode


def _bags(ids: Any, offsets: Any) -> Tuple[np.ndarray, np.ndarray, Tuple[int, ...]]:
    """(flat int64 ids, int64 offsets, original ids shape) after checking offsets."""
    if offsets is None:
        ids_a = _ids(ids, "ids", ndim=2)
        n_bags, size = ids_a.shape
        offs = np.arange(0, n_bags * size, size, dtype=np.int64) if size else np.zeros(
            n_bags, dtype=np.int64
        )
        return ids_a.reshape(-1), offs, ids_a.shape
    ids_a = _ids(ids, "ids", ndim=1)
    offs = as_index_array(offsets, "offsets", n=None, ndim=1)
    n_ids = ids_a.shape[0]
    if offs.shape[0] == 0:
        if n_ids:
            raise ValueError(f"offsets is empty but ids has {n_ids} entries")
        return ids_a, offs, ids_a.shape
    if offs[0] != 0:
        raise ValueError(f"offsets must start at 0, got offsets[0] = {int(offs[0])}")
    steps = np.diff(offs)
    if steps.size and (steps < 0).any():
        b = int(np.argmax(steps < 0)) + 1
        raise ValueError(
            f"offsets must be non-decreasing, got offsets[{b}] = {int(offs[b])} "
            f"< offsets[{b - 1}] = {int(offs[b - 1])}"
        )
    if offs[-1] > n_ids:
        raise ValueError(
            f"offsets[{offs.shape[0] - 1}] = {int(offs[-1])} is beyond len(ids) = {n_ids}"
        )
    return ids_a, offs, ids_a.shape


def _weights(weights: Any, dtype: np.dtype, ids_shape: Tuple[int, ...], mode: str) -> Optional[np.ndarray]:
    if weights is None:
        return None
    if mode != "sum":
        raise ValueError(f"per-sample weights are only supported with mode='sum', got mode={mode!r}")
    w = to_numpy(weights, "weights")
    if w.dtype != dtype:
        raise TypeError(f"weights must have dtype {dtype} (the table's dtype), got {w.dtype}")
    if w.shape != tuple(ids_shape):
        raise ValueError(f"weights must have the shape of ids {tuple(ids_shape)}, got {w.shape}")
    w = np.ascontiguousarray(w).reshape(-1)
    _check_finite(w, "weights")
    return w


def _check_finite(a: np.ndarray, name: str) -> None:
    """ValueError naming the first NaN/inf. Fast path: a finite sum proves every
    element finite (NaN and inf propagate); only a non-finite sum (a bad value,
    or an overflow) pays for the exact element-wise scan."""
    if a.size == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        total = a.sum()
    if not np.isfinite(total):
        check_finite(a, name)


def _writable(x: Any, name: str, ndim: int) -> np.ndarray:
    """The caller's own buffer as a numpy view (never a copy) for in-place updates."""
    a = to_numpy(x, name)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-d, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(
            f"{name} must be C-contiguous to be updated in place, got strides {a.strides}; "
            "pass np.ascontiguousarray(...) and keep that array"
        )
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only and cannot be updated in place")
    return a


def _scalar(x: Any, name: str, minimum: Optional[float] = None) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    v = float(x)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _num_rows(num_rows: Any) -> int:
    if isinstance(num_rows, bool) or not isinstance(num_rows, (int, np.integer)):
        raise TypeError(f"num_rows must be an int, got {type(num_rows).__name__}")
    if num_rows < 0:
        raise ValueError(f"num_rows must be non-negative, got {num_rows}")
    return int(num_rows)


# ---------------------------------------------------------------------------
# Forward


def gather(table: Any, ids: Any, num_threads: Optional[int] = None) -> Any:
    """Rows of ``table`` at ``ids``: ``table[ids]`` with shape ``ids.shape + (d,)``.

    Parameters
    ----------
    table : array [num_rows, d], float32 or float64
    ids : integer array of any shape; every id in ``[0, num_rows)``
    num_threads : None (OpenMP default), -1 (all cores) or n > 0
    """
    t = _table(table)
    raw = to_numpy(ids, "ids")
    i = _ids(raw)  # (np.ascontiguousarray makes 0-d ids 1-d: keep raw.shape)
    threads = resolve_num_threads(num_threads)
    out = _core.embedding_gather(t, i.reshape(-1), threads)
    return like_input(out.reshape(raw.shape + (t.shape[1],)), table, ids)


def embedding_bag(
    table: Any,
    ids: Any,
    offsets: Any = None,
    weights: Any = None,
    mode: str = "sum",
    num_threads: Optional[int] = None,
) -> Any:
    """Pooled rows, one per bag, as :func:`torch.nn.functional.embedding_bag`.

    ``out[b] = sum_{j in bag b} w_j * table[ids[j]]`` (``w_j = weights[j]`` or
    1), divided by the bag size for ``mode="mean"``. Empty bags give zeros.
    For float32 ``mode="sum"`` without weights the result is bit-identical to
    torch's (the same left-to-right float32 sum).

    Parameters
    ----------
    table : array [num_rows, d], float32 or float64
    ids : 1-d integer array (with ``offsets``) or 2-d ``(n_bags, bag_size)``
        (``offsets=None``)
    offsets : 1-d integer array of bag starts (``include_last_offset=False``):
        starts at 0, non-decreasing, at most ``len(ids)``
    weights : per-sample weights, the shape and dtype of ``ids``/``table``,
        finite; only with ``mode="sum"``
    mode : "sum" or "mean"
    num_threads : None (OpenMP default), -1 (all cores) or n > 0

    Returns
    -------
    array [n_bags, d] of the table's dtype
    """
    mode = _mode(mode)
    t = _table(table)
    flat, offs, shape = _bags(ids, offsets)
    w = _weights(weights, t.dtype, shape, mode)
    threads = resolve_num_threads(num_threads)
    out = _core.embedding_bag_forward(t, flat, offs, w, mode, threads)
    return like_input(out, table, ids, offsets, weights)


# ---------------------------------------------------------------------------
# Backward


def embedding_bag_backward(
    grad_out: Any,
    ids: Any,
    offsets: Any,
    num_rows: int,
    weights: Any = None,
    mode: str = "sum",
    sparse: bool = False,
    num_threads: Optional[int] = None,
) -> Any:
    """Gradient of :func:`embedding_bag` with respect to the table.

    ``grad_table[r] = sum over lookups j of r: w_j * grad_out[bag(j)]`` with
    ``w_j`` the per-sample weight, ``1/|bag|`` for ``mode="mean"`` or 1.
    Each row's terms are summed in ascending position order by one thread:
    deterministic and independent of ``num_threads``.

    Parameters
    ----------
    grad_out : array [n_bags, d], float32 or float64
    ids, offsets : as for :func:`embedding_bag` (``offsets=None`` with 2-d ids)
    num_rows : number of rows of the table
    weights : per-sample weights used in the forward pass (mode="sum" only)
    mode : "sum" or "mean"
    sparse : False -> dense ``[num_rows, d]``; True -> ``(rows, values)``
        with ``rows`` the distinct looked-up ids (int64, ascending) and
        ``values [len(rows), d]`` their gradient rows
    num_threads : None (OpenMP default), -1 (all cores) or n > 0
    """
    mode = _mode(mode)
    g = as_float_array(grad_out, "grad_out", 2, finite=False)
    n = _num_rows(num_rows)
    flat, offs, shape = _bags(ids, offsets)
    if g.shape[0] != offs.shape[0]:
        raise ValueError(f"grad_out has {g.shape[0]} rows but there are {offs.shape[0]} bags")
    w = _weights(weights, g.dtype, shape, mode)
    threads = resolve_num_threads(num_threads)
    res = _core.embedding_bag_backward(g, flat, offs, n, w, mode, bool(sparse), threads)
    if sparse:
        rows, values = res
        return like_input(rows, grad_out, ids, offsets, weights), like_input(
            values, grad_out, ids, offsets, weights
        )
    return like_input(res, grad_out, ids, offsets, weights)


def embedding_bag_weight_grad(
    grad_out: Any,
    table: Any,
    ids: Any,
    offsets: Any = None,
    num_threads: Optional[int] = None,
) -> Any:
    """Gradient of a weighted ``mode="sum"`` :func:`embedding_bag` w.r.t. its weights.

    ``out[j] = dot(grad_out[bag(j)], table[ids[j]])``, with the shape of
    ``ids`` (torch's ``per_sample_weights.grad``).
    """
    t = _table(table)
    g = as_float_array(grad_out, "grad_out", 2, finite=False)
    if g.dtype != t.dtype:
        raise TypeError(f"grad_out must have dtype {t.dtype} (the table's dtype), got {g.dtype}")
    flat, offs, shape = _bags(ids, offsets)
    if g.shape != (offs.shape[0], t.shape[1]):
        raise ValueError(
            f"grad_out must have shape ({offs.shape[0]}, {t.shape[1]}) (bags, table width), "
            f"got {g.shape}"
        )
    threads = resolve_num_threads(num_threads)
    out = _core.embedding_bag_weight_grad(g, t, flat, offs, threads)
    return like_input(out.reshape(shape), grad_out, table, ids, offsets)


# ---------------------------------------------------------------------------
# Sparse optimisers (in place)


def _sparse_update_args(table: Any, rows: Any, grads: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = _writable(table, "table", 2)
    r = as_index_array(rows, "rows", n=t.shape[0], ndim=1)
    g = as_float_array(grads, "grads", 2, dtype=t.dtype, finite=False)
    if g.shape != (r.shape[0], t.shape[1]):
        raise ValueError(
            f"grads must have shape ({r.shape[0]}, {t.shape[1]}) (len(rows), table width), "
            f"got {g.shape}"
        )
    _check_finite(g, "grads")
    if np.may_share_memory(g, t):
        g = g.copy()
    return t, r, g


def sparse_sgd_(
    table: Any, rows: Any, grads: Any, lr: float, num_threads: Optional[int] = None
) -> Any:
    """Sparse SGD in place: ``table[r] -= lr * g_r`` for every distinct row ``r``.

    Duplicate ids in ``rows`` are summed first: ``g_r`` is the sum of the
    ``grads`` rows with ``rows[j] == r`` in ascending ``j`` order (so the
    result equals one dense SGD step on the summed gradient).

    ``table`` must be a writable C-contiguous float32/float64 array (or CPU
    tensor); it is updated in place, never through a copy, and returned.
    ``grads`` must have the table's dtype, shape ``(len(rows), d)``, and be
    finite, as must ``lr``.
    """
    t, r, g = _sparse_update_args(table, rows, grads)
    lr_v = _scalar(lr, "lr")
    threads = resolve_num_threads(num_threads)
    _core.sparse_sgd(t, r, g, lr_v, threads)
    return table


def sparse_adagrad_(
    table: Any,
    state: Any,
    rows: Any,
    grads: Any,
    lr: float,
    eps: float = 1e-10,
    num_threads: Optional[int] = None,
) -> Any:
    """Row-wise Adagrad (FBGEMM's ``rowwise_adagrad``) in place.

    For every distinct row ``r`` (duplicate ids summed first, as in
    :func:`sparse_sgd_`)::

        state[r] += mean(g_r ** 2)
        table[r] -= lr * g_r / (sqrt(state[r]) + eps)

    ``state`` holds one value per table row (shape ``(num_rows,)``, the
    table's dtype, writable and C-contiguous; start it at zeros). Both
    ``table`` and ``state`` are updated in place; ``table`` is returned.
    """
    t, r, g = _sparse_update_args(table, rows, grads)
    s = _writable(state, "state", 1)
    if s.dtype != t.dtype:
        raise TypeError(f"state must have dtype {t.dtype} (the table's dtype), got {s.dtype}")
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"state must have shape ({t.shape[0]},) (one per table row), got {s.shape}")
    if np.may_share_memory(s, t):
        raise ValueError("state must not share memory with table")
    lr_v = _scalar(lr, "lr")
    eps_v = _scalar(eps, "eps", minimum=0.0)
    threads = resolve_num_threads(num_threads)
    _core.sparse_adagrad(t, s, r, g, lr_v, eps_v, threads)
    return table


def _copy_bandwidth(nbytes: int = 1 << 28, repeats: int = 5, num_threads: Optional[int] = None) -> float:
    """Private: measured parallel memcpy bandwidth in GB/s (bytes read + written)."""
    import time

    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    threads = resolve_num_threads(num_threads)
    _core._parallel_copy(src, dst, threads)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _core._parallel_copy(src, dst, threads)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9

