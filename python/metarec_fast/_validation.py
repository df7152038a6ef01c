"""Input validation shared by every public wrapper.

The compiled core takes strict C-contiguous arrays of one dtype. These helpers
turn user input (numpy arrays, CPU torch tensors, scipy CSR matrices, lists)
into exactly that, converting at most once, and raise the documented
exceptions naming the offending argument and value:

* ``TypeError``  -- wrong dtype or container type,
* ``ValueError`` -- wrong shape or length, NaN/inf, bad offsets, bad ``k``,
* ``IndexError`` -- an id outside ``[0, n)`` (the first bad one is named).

torch is never imported here: a tensor is recognised by its type's module.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_torch_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor`` without importing torch."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _tensor_to_numpy(x: Any, name: str) -> np.ndarray:
    if x.device.type != "cpu":
        raise ValueError(
            f"{name} is on device {x.device}, but this function runs on the CPU; "
            "pass a CPU tensor or a numpy array"
        )
    return x.detach().resolve_conj().resolve_neg().numpy()


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Any array-like (numpy, CPU tensor, nested list) as a numpy array, no copy if possible."""
    if isinstance(x, np.ndarray):
        return x
    if is_torch_tensor(x):
        return _tensor_to_numpy(x, name)
    if hasattr(x, "tocsr") or hasattr(x, "toarray"):
        raise TypeError(f"{name} must be a dense array, got a sparse matrix")
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc


def like_input(result: np.ndarray, *inputs: Any) -> Any:
    """Return ``result`` as a torch tensor when any input was one, else as is."""
    if any(is_torch_tensor(x) for x in inputs):
        import torch  # lazily: only when the caller already uses torch

        return torch.from_numpy(np.ascontiguousarray(result))
    return result


def _check_ndim(a: np.ndarray, name: str, ndim: int | Sequence[int]) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if a.ndim not in allowed:
        want = " or ".join(f"{d}-d" for d in allowed)
        raise ValueError(f"{name} must be {want}, got shape {a.shape}")


def as_float_array(
    x: Any,
    name: str,
    ndim: int | Sequence[int],
    dtype: np.dtype | type | None = None,
    finite: bool = True,
) -> np.ndarray:
    """A C-contiguous float32/float64 array.

    ``dtype=None`` keeps the input's float dtype (TypeError for anything
    else); a given ``dtype`` requires exactly that dtype. ``finite`` rejects
    NaN and +-inf with a ValueError naming the first position.
    """
    a = to_numpy(x, name)
    if dtype is None:
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    else:
        want = np.dtype(dtype)
        if a.dtype != want:
            raise TypeError(f"{name} must have dtype {want}, got {a.dtype}")
    _check_ndim(a, name, ndim)
    a = np.ascontiguousarray(a)
    if finite:
        check_finite(a, name)
    return a


def check_finite(a: np.ndarray, name: str, allow_inf: bool = False) -> None:
    """ValueError naming the first NaN (or inf unless ``allow_inf``) in ``a``."""
    if a.size == 0:
        return
    bad = np.isnan(a) if allow_inf else ~np.isfinite(a)
    if bad.any():
        pos = np.unravel_index(int(np.argmax(bad)), a.shape)
        where = pos[0] if len(pos) == 1 else tuple(int(p) for p in pos)
        kind = "NaN" if allow_inf else "NaN or inf"
        raise ValueError(f"{name} contains {kind} at index {where} (value {a[pos]})")


def as_index_array(
    x: Any,
    name: str,
    n: int | None = None,
    ndim: int | Sequence[int] = 1,
    dtype: type = np.int64,
) -> np.ndarray:
    """A C-contiguous integer array with every id in ``[0, n)`` (if ``n`` is given).

    Any integer dtype is accepted and converted once; floats and bools raise
    TypeError, an id out of range raises IndexError naming the first one.
    """
    a = to_numpy(x, name)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    _check_ndim(a, name, ndim)
    a = np.ascontiguousarray(a, dtype=dtype)
    if n is not None and a.size:
        bad = (a < 0) | (a >= n)
        if bad.any():
            first = int(a.reshape(-1)[int(np.argmax(bad.reshape(-1)))])
            raise IndexError(f"{name} contains id {first}, outside [0, {n})")
    return a


def check_k(k: Any, name: str = "k") -> int:
    """``k`` as a positive Python int."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"{name} must be positive, got {k}")
    return int(k)


class CSR(NamedTuple):
    """Validated compressed sparse rows: ``indptr`` int64 (n_rows + 1), ``indices`` int64,
    optional ``data``; every row's indices sorted ascending."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray | None


def as_csr(
    x: Any,
    name: str,
    n_rows: int,
    n_cols: int,
    with_data: bool = False,
    data_dtype: type = np.float64,
    sort_rows: bool = True,
) -> CSR:
    """Validate a scipy.sparse CSR matrix or an ``(indptr, indices)`` pair.

    Checks: ``indptr`` has ``n_rows + 1`` entries, starts at 0, never
    decreases and ends at ``len(indices)`` (ValueError); every index lies in
    ``[0, n_cols)`` (IndexError). With ``sort_rows``, rows with unsorted
    indices are sorted (a copy); without it the given order is kept (for
    outputs aligned with the input). Duplicates within a row are kept.
    """
    data = None
    if hasattr(x, "tocsr") and hasattr(x, "indptr"):
        if getattr(x, "format", "csr") != "csr":
            raise TypeError(f"{name} must be a CSR matrix, got format {x.format!r}; call .tocsr()")
        if x.shape[0] != n_rows or x.shape[1] > n_cols:
            raise ValueError(f"{name} must have shape ({n_rows}, {n_cols}), got {x.shape}")
        indptr, indices = x.indptr, x.indices
        if with_data:
            data = x.data
    elif isinstance(x, tuple) and len(x) in (2, 3):
        indptr, indices = x[0], x[1]
        if with_data and len(x) == 3:
            data = x[2]
    else:
        raise TypeError(
            f"{name} must be a scipy.sparse CSR matrix or an (indptr, indices) tuple, "
            f"got {type(x).__name__}"
        )
    indptr = as_index_array(indptr, f"{name}.indptr")
    indices = as_index_array(indices, f"{name}.indices")
    if indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name}.indptr must have {n_rows + 1} entries, got {indptr.shape[0]}")
    if indptr[0] != 0:
        raise ValueError(f"{name}.indptr must start at 0, got {indptr[0]}")
    steps = np.diff(indptr)
    if (steps < 0).any():
        row = int(np.argmax(steps < 0))
        raise ValueError(f"{name}.indptr decreases at row {row} ({indptr[row]} -> {indptr[row + 1]})")
    if indptr[-1] != indices.shape[0]:
        raise ValueError(
            f"{name}.indptr ends at {indptr[-1]} but {name}.indices has {indices.shape[0]} entries"
        )
    if indices.size:
        bad = (indices < 0) | (indices >= n_cols)
        if bad.any():
            first = int(indices[int(np.argmax(bad))])
            raise IndexError(f"{name} contains column {first}, outside [0, {n_cols})")
    if data is not None:
        data = as_float_array(data, f"{name}.data", 1, finite=True).astype(data_dtype, copy=False)
        if data.shape[0] != indices.shape[0]:
            raise ValueError(f"{name}.data has {data.shape[0]} entries, indices {indices.shape[0]}")
    # Sort each row's indices when needed (kernels rely on ascending order).
    if sort_rows and indices.size > 1:
        row_of = np.repeat(np.arange(n_rows), steps)
        unsorted = (np.diff(indices) < 0) & (row_of[1:] == row_of[:-1])
        if unsorted.any():
            order = np.lexsort((indices, row_of))
            indices = indices[order]
            if data is not None:
                data = data[order]
    return CSR(indptr, indices, data)
