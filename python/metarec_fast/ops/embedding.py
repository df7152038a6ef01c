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

GPU: :func:`gather`, :func:`embedding_bag`, :func:`embedding_bag_backward`
and :func:`embedding_bag_weight_grad` take ``device`` (``None``, ``"cpu"``,
``"cuda"``, ``"cuda:N"``; rules in :mod:`metarec_fast._gpu`): CUDA tensors in,
or ``device="cuda"``, run the CUDA kernels (``metarec_fast._cuda``) on the
caller's current stream and return torch CUDA tensors on that device; nothing
moves between devices silently. The CUDA kernels sum in the CPU kernels' order
with every multiply and add rounded separately, so their results are
bit-identical to the CPU's (and deterministic run to run). Validation is the
same (ids, offsets and weights are checked on the device before any kernel
runs; one synchronisation per call, plus one more for ``sparse=True`` to size
the result). ``num_threads`` is ignored on the GPU. The sparse optimisers are
CPU-only (a CUDA tensor raises ``ValueError``).
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple

import numpy as np

from .. import _core, _gpu
from .._config import resolve_num_threads
from .._validation import (
    FLOAT_DTYPES,
    as_float_array,
    as_index_array,
    check_finite,
    dtype_name,
    is_torch_tensor,
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
# Inputs, read once for either device: ``dev`` is None (the CPU: numpy arrays
# for _core) or a torch.device (torch tensors there for _cuda). Shapes and
# dtypes are checked here; the values (offsets, id ranges) by one pass on the
# device that holds them: numpy + the core's own id check on the CPU, the
# check kernel of the CUDA module on a GPU, with one set of messages.


def _table(x: Any, dev: Any, name: str = "table") -> Any:
    return as_float_array(x, name, 2, finite=False, device=dev)


def _ids(x: Any, dev: Any, ndim: Any = _ANY_NDIM) -> Tuple[Any, Tuple[int, ...]]:
    """(flat int64 ids, the shape given); ranges are checked with the bags or by the core."""
    shape = tuple(x.shape) if is_torch_tensor(x) else to_numpy(x, "ids").shape
    a = as_index_array(x, "ids", n=None, ndim=ndim, device=dev)  # (0-d -> 1-d: keep `shape`)
    return a.reshape(-1), tuple(int(s) for s in shape)


def _mode(mode: Any) -> str:
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be 'sum' or 'mean', got {mode!r}")
    return mode


def _bags(ids: Any, offsets: Any, dev: Any) -> Tuple[Any, Any, Tuple[int, ...]]:
    """(flat int64 ids, int64 offsets, ids shape): 1-d ids with offsets, or 2-d
    ids of equal bags (``offsets=None``)."""
    if offsets is None:
        flat, shape = _ids(ids, dev, ndim=2)
        n_bags, size = shape
        offs = np.arange(0, n_bags * size, size, dtype=np.int64) if size else np.zeros(n_bags, dtype=np.int64)
        return flat, _on(offs, dev), shape
    flat, shape = _ids(ids, dev, ndim=1)
    offs = as_index_array(offsets, "offsets", n=None, ndim=1, device=dev)
    if offs.shape[0] == 0 and flat.shape[0]:
        raise ValueError(f"offsets is empty but ids has {flat.shape[0]} entries")
    return flat, offs, shape


def _on(a: np.ndarray, dev: Any) -> Any:
    if dev is None:
        return a
    import torch

    return torch.from_numpy(a).to(dev)


def _check_values(flat: Any, offs: Any, num_rows: int, dev: Any) -> None:
    """Offsets start at 0, never decrease and stay within ``len(ids)``
    (ValueError); on a GPU also every id in ``[0, num_rows)`` (IndexError; the
    CPU core checks ids itself, in its one pass). ``offs=None``: ids only."""
    n_ids, n_bags = int(flat.shape[0]), 0 if offs is None else int(offs.shape[0])
    if dev is None:
        if n_bags == 0:
            return
        steps = np.diff(offs)
        down = int(np.argmax(steps < 0)) + 1 if steps.size and (steps < 0).any() else -1
        bad, first, last = -1, int(offs[0]), int(offs[-1])
    else:
        bad, down, first, last = _cuda_check(flat, num_rows, offs, dev)
    if n_bags:
        if first != 0:
            raise ValueError(f"offsets must start at 0, got offsets[0] = {first}")
        if down >= 0:
            raise ValueError(
                f"offsets must be non-decreasing, got offsets[{down}] = {int(offs[down])} "
                f"< offsets[{down - 1}] = {int(offs[down - 1])}"
            )
        if last > n_ids:
            raise ValueError(f"offsets[{n_bags - 1}] = {last} is beyond len(ids) = {n_ids}")
    if bad >= 0:
        raise IndexError(f"ids contains id {int(flat[bad])}, outside [0, {num_rows})")


def _weights(weights: Any, dtype: Any, ids_shape: Tuple[int, ...], mode: str, dev: Any) -> Any:
    if weights is None:
        return None
    if mode != "sum":
        raise ValueError(f"per-sample weights are only supported with mode='sum', got mode={mode!r}")
    w = weights if dev is not None and is_torch_tensor(weights) else to_numpy(weights, "weights")
    if dtype_name(w) != dtype_name(dtype):
        raise TypeError(f"weights must have dtype {dtype_name(dtype)} (the table's dtype), got {dtype_name(w)}")
    if tuple(w.shape) != tuple(ids_shape):
        raise ValueError(f"weights must have the shape of ids {tuple(ids_shape)}, got {tuple(w.shape)}")
    w = as_float_array(w, "weights", len(ids_shape), finite=False, device=dev).reshape(-1)
    _check_finite(w, "weights")
    return w


def _check_finite(a: Any, name: str) -> None:
    """ValueError naming the first NaN/inf. Fast path on the CPU: a finite sum
    proves every element finite (NaN and inf propagate); only a non-finite sum
    (a bad value, or an overflow) pays for the exact element-wise scan."""
    if isinstance(a, np.ndarray):
        if a.size == 0:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            total = a.sum()
        if np.isfinite(total):
            return
    check_finite(a, name)


def _writable(x: Any, name: str, ndim: int) -> np.ndarray:
    """The caller's own buffer as a numpy view (never a copy) for in-place updates."""
    a = to_numpy(x, name)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {a.shape}")
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


def gather(
    table: Any, ids: Any, num_threads: Optional[int] = None, device: Optional[str] = None
) -> Any:
    """Rows of ``table`` at ``ids``: ``table[ids]`` with shape ``ids.shape + (d,)``.

    Parameters
    ----------
    table : array [num_rows, d], float32 or float64
    ids : integer array of any shape; every id in ``[0, num_rows)``
    num_threads : None (OpenMP default), -1 (all cores) or n > 0
    device : None (follow the inputs), "cpu", "cuda" or "cuda:N" (see the module docs)
    """
    dev = _gpu.resolve_device(device, table=table, ids=ids)
    t = _table(table, dev)
    flat, shape = _ids(ids, dev)
    threads = resolve_num_threads(num_threads)
    if dev is None:
        out = _core.embedding_gather(t, flat, threads)  # checks the ids in its pass
        return like_input(out.reshape(shape + (t.shape[1],)), table, ids)
    _check_values(flat, None, t.shape[0], dev)
    return _cuda_gather(t, flat, dev).reshape(shape + (t.shape[1],))


def embedding_bag(
    table: Any,
    ids: Any,
    offsets: Any = None,
    weights: Any = None,
    mode: str = "sum",
    num_threads: Optional[int] = None,
    device: Optional[str] = None,
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
    device : None (follow the inputs), "cpu", "cuda" or "cuda:N" (see the module docs)

    Returns
    -------
    array [n_bags, d] of the table's dtype
    """
    mode = _mode(mode)
    dev = _gpu.resolve_device(device, table=table, ids=ids, offsets=offsets, weights=weights)
    t = _table(table, dev)
    flat, offs, shape = _bags(ids, offsets, dev)
    _check_values(flat, offs, t.shape[0], dev)
    w = _weights(weights, t.dtype, shape, mode, dev)
    threads = resolve_num_threads(num_threads)
    if dev is None:
        out = _core.embedding_bag_forward(t, flat, offs, w, mode, threads)
        return like_input(out, table, ids, offsets, weights)
    return _cuda_embedding_bag(t, flat, offs, w, mode, dev)


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
    device: Optional[str] = None,
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
    device : None (follow the inputs), "cpu", "cuda" or "cuda:N" (see the module docs)
    """
    mode = _mode(mode)
    dev = _gpu.resolve_device(
        device, grad_out=grad_out, ids=ids, offsets=offsets, weights=weights
    )
    g = as_float_array(grad_out, "grad_out", 2, finite=False, device=dev)
    n = _num_rows(num_rows)
    flat, offs, shape = _bags(ids, offsets, dev)
    _check_values(flat, offs, n, dev)
    if g.shape[0] != offs.shape[0]:
        raise ValueError(f"grad_out has {g.shape[0]} rows but there are {offs.shape[0]} bags")
    w = _weights(weights, g.dtype, shape, mode, dev)
    threads = resolve_num_threads(num_threads)
    if dev is not None:
        return _cuda_backward(g, flat, offs, n, w, mode, bool(sparse), dev)
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
    device: Optional[str] = None,
) -> Any:
    """Gradient of a weighted ``mode="sum"`` :func:`embedding_bag` w.r.t. its weights.

    ``out[j] = dot(grad_out[bag(j)], table[ids[j]])``, with the shape of
    ``ids`` (torch's ``per_sample_weights.grad``). ``device`` as for
    :func:`embedding_bag`.
    """
    dev = _gpu.resolve_device(device, grad_out=grad_out, table=table, ids=ids, offsets=offsets)
    t = _table(table, dev)
    g = as_float_array(grad_out, "grad_out", 2, finite=False, device=dev)
    if dtype_name(g) != dtype_name(t):
        raise TypeError(f"grad_out must have dtype {dtype_name(t)} (the table's dtype), got {dtype_name(g)}")
    flat, offs, shape = _bags(ids, offsets, dev)
    _check_values(flat, offs, t.shape[0], dev)
    if tuple(g.shape) != (offs.shape[0], t.shape[1]):
        raise ValueError(
            f"grad_out must have shape ({offs.shape[0]}, {t.shape[1]}) (bags, table width), "
            f"got {tuple(g.shape)}"
        )
    threads = resolve_num_threads(num_threads)
    if dev is not None:
        return _cuda_weight_grad(g, t, flat, offs, dev).reshape(shape)
    out = _core.embedding_bag_weight_grad(g, t, flat, offs, threads)
    return like_input(out.reshape(shape), grad_out, table, ids, offsets)


# ---------------------------------------------------------------------------
# CUDA launchers: inputs already read and checked above, on `dev`; outputs
# allocated with torch there; kernels on the caller's current stream.


def _cuda_check(flat: Any, num_rows: int, offs: Any, dev: Any) -> Tuple[int, int, int, int]:
    """One kernel and one synchronisation for every id/offset check:
    (first bad id position or -1, first decreasing offset or -1, offsets[0], offsets[-1])."""
    import torch

    n_ids, n_bags = int(flat.numel()), 0 if offs is None else int(offs.numel())
    if n_ids == 0 and n_bags == 0:
        return -1, -1, 0, 0
    mod = _gpu.cuda_module()
    result = torch.empty(4, dtype=torch.int64, device=dev)
    if offs is None:  # ids only (gather)
        mod.embedding_check_ids(_gpu.ptr(flat), n_ids, num_rows, _gpu.ptr(result), *_gpu.launch_context(dev))
        return int(result[0]), -1, 0, 0
    mod.embedding_check(_gpu.ptr(flat), n_ids, num_rows, _gpu.ptr(offs) if n_bags else 0, n_bags,
                        _gpu.ptr(result), *_gpu.launch_context(dev))
    bad, down, first, last = result.tolist()
    return bad, down, (first if n_bags else 0), (last if n_bags else 0)


def _kernel(name: str, dtype: Any) -> Any:
    suffix = "f32" if dtype_name(dtype) == "float32" else "f64"
    return getattr(_gpu.cuda_module(), f"{name}_{suffix}")


def _cuda_gather(t: Any, flat: Any, dev: Any) -> Any:
    import torch

    num_rows, d = t.shape
    out = torch.empty((flat.numel(), d), dtype=t.dtype, device=dev)
    _kernel("embedding_gather", t.dtype)(
        _gpu.ptr(t), num_rows, d, _gpu.ptr(flat), flat.numel(), _gpu.ptr(out), *_gpu.launch_context(dev),
    )
    return out


def _cuda_embedding_bag(t: Any, flat: Any, offs: Any, w: Any, mode: str, dev: Any) -> Any:
    import torch

    num_rows, d = t.shape
    n_bags = offs.numel()
    out = torch.empty((n_bags, d), dtype=t.dtype, device=dev)
    _kernel("embedding_bag_forward", t.dtype)(
        _gpu.ptr(t), num_rows, d, _gpu.ptr(flat), flat.numel(), _gpu.ptr(offs), n_bags,
        _gpu.ptr(w), mode == "mean", _gpu.ptr(out), *_gpu.launch_context(dev),
    )
    return out


def _cuda_backward(g: Any, flat: Any, offs: Any, n: int, w: Any, mode: str, sparse: bool, dev: Any) -> Any:
    import torch

    n_bags, d = g.shape
    n_ids = flat.numel()
    if n_ids == 0:
        if sparse:
            return (torch.empty(0, dtype=torch.int64, device=dev),
                    torch.empty((0, d), dtype=g.dtype, device=dev))
        return torch.zeros((n, d), dtype=g.dtype, device=dev)
    mod = _gpu.cuda_module()
    where = _gpu.launch_context(dev)
    layout = mod.embedding_group_layout(n_ids)
    ws = torch.empty(layout["words"], dtype=torch.int64, device=dev)
    mod.embedding_group(_gpu.ptr(flat), n_ids, _gpu.ptr(offs), n_bags, n, _gpu.ptr(ws), *where)
    reduce = _kernel("embedding_bag_backward", g.dtype)
    if sparse:
        n_unique = int(ws[layout["n_unique"]])
        rows = ws[layout["rows"]: layout["rows"] + n_unique].clone()
        values = torch.empty((n_unique, d), dtype=g.dtype, device=dev)
        reduce(_gpu.ptr(g), n_bags, d, _gpu.ptr(offs), n_ids, _gpu.ptr(w), mode == "mean",
               _gpu.ptr(ws), n_unique, False, n, _gpu.ptr(values), *where)
        return rows, values
    grad = torch.empty((n, d), dtype=g.dtype, device=dev)
    reduce(_gpu.ptr(g), n_bags, d, _gpu.ptr(offs), n_ids, _gpu.ptr(w), mode == "mean",
           _gpu.ptr(ws), n_ids, True, n, _gpu.ptr(grad), *where)
    return grad


def _cuda_weight_grad(g: Any, t: Any, flat: Any, offs: Any, dev: Any) -> Any:
    import torch

    num_rows, d = t.shape
    n_bags = offs.numel()
    out = torch.empty(flat.numel(), dtype=t.dtype, device=dev)
    _kernel("embedding_bag_weight_grad", t.dtype)(
        _gpu.ptr(g), n_bags, _gpu.ptr(t), num_rows, d, _gpu.ptr(flat), flat.numel(),
        _gpu.ptr(offs), _gpu.ptr(out), *_gpu.launch_context(dev),
    )
    return out


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
