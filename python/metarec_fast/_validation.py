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


def dtype_name(x: Any) -> str:
    """The dtype of an array, tensor or dtype as messages spell it (``"float32"``,
    ``"int64"``, ``"bool"``), whatever the library (torch is not imported)."""
    if is_torch_tensor(x):
        x = x.dtype
    elif isinstance(x, np.ndarray):
        return str(x.dtype)
    if type(x).__module__ == "torch":  # a torch.dtype
        return str(x).replace("torch.", "")
    return str(np.dtype(x))


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in a.shape)


def _check_ndim(a: Any, name: str, ndim: int | Sequence[int]) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if a.ndim not in allowed:
        want = " or ".join(f"{d}-dimensional" for d in allowed)
        raise ValueError(f"{name} must be {want}, got shape {_shape(a)}")


def _read(x: Any, name: str, device: Any) -> Any:
    """A torch tensor as is when ``device`` is given (nothing moves yet), else
    anything array-like as a numpy array."""
    if device is not None and is_torch_tensor(x):
        return x.detach()
    return to_numpy(x, name)


def _placed(a: Any, device: Any, torch_dtype: Any = None) -> Any:
    """``a`` C-contiguous: a numpy array (``device=None``) or a torch tensor on ``device``."""
    if device is None:
        return np.ascontiguousarray(a)
    import torch  # only on a device path: the caller already uses torch

    t = a if is_torch_tensor(a) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=device, dtype=torch_dtype).contiguous()


def as_float_array(
    x: Any,
    name: str,
    ndim: int | Sequence[int],
    dtype: Any = None,
    finite: bool = True,
    device: Any = None,
) -> Any:
    """A C-contiguous float32/float64 array: numpy, or with ``device`` (a
    ``torch.device``) a torch tensor on that device.

    ``dtype=None`` keeps the input's float dtype (TypeError for anything
    else); a given ``dtype`` (numpy or torch) requires exactly that dtype.
    ``finite`` rejects NaN and +-inf with a ValueError naming the first
    position. Numpy arrays and tensors are read alike, with the same messages
    on every device.
    """
    a = _read(x, name, device)
    have = dtype_name(a)
    if dtype is None:
        if have not in ("float32", "float64"):
            raise TypeError(f"{name} must have dtype float32 or float64, got {have}")
    elif have != dtype_name(dtype):
        raise TypeError(f"{name} must have dtype {dtype_name(dtype)}, got {have}")
    _check_ndim(a, name, ndim)
    a = _placed(a, device)
    if finite:
        check_finite(a, name)
    return a


def check_finite(a: Any, name: str, allow_inf: bool = False) -> None:
    """ValueError naming the first NaN (or inf unless ``allow_inf``) in ``a``
    (a numpy array or a torch tensor on any device)."""
    if is_torch_tensor(a):
        if a.numel() == 0:
            return
        import torch

        bad_t = torch.isnan(a) if allow_inf else ~torch.isfinite(a)
        if not bool(bad_t.any()):  # one reduction (and one synchronisation on a GPU)
            return
        flat = int(torch.nonzero(bad_t.reshape(-1))[0])
        pos = np.unravel_index(flat, _shape(a))
        value: Any = float(a.reshape(-1)[flat])
    else:
        if a.size == 0:
            return
        bad = np.isnan(a) if allow_inf else ~np.isfinite(a)
        if not bad.any():
            return
        pos = np.unravel_index(int(np.argmax(bad)), a.shape)
        value = a[pos]
    where = int(pos[0]) if len(pos) == 1 else tuple(int(p) for p in pos)
    kind = "NaN" if allow_inf else "NaN or inf"
    raise ValueError(f"{name} contains {kind} at index {where} (value {value})")


def _is_integer(a: Any) -> bool:
    """Integer dtype: bool is not, an empty array of another dtype is."""
    name = dtype_name(a)
    if name == "bool":
        return False
    if is_torch_tensor(a):
        return not (a.dtype.is_floating_point or a.dtype.is_complex) or a.numel() == 0
    return bool(np.issubdtype(a.dtype, np.integer)) or a.size == 0


def as_index_array(
    x: Any,
    name: str,
    n: int | None = None,
    ndim: int | Sequence[int] = 1,
    dtype: type = np.int64,
    device: Any = None,
) -> Any:
    """A C-contiguous integer array with every id in ``[0, n)`` (if ``n`` is given):
    numpy, or with ``device`` an int64 torch tensor on that device.

    Any integer dtype is accepted and converted once; floats and bools raise
    TypeError, an id out of range raises IndexError naming the first one.
    """
    a = _read(x, name, device)
    if not _is_integer(a):
        raise TypeError(f"{name} must have an integer dtype, got {dtype_name(a)}")
    _check_ndim(a, name, ndim)
    if device is None:
        a = np.ascontiguousarray(a, dtype=dtype)
    else:
        import torch

        a = _placed(a, device, torch.int64)
    if n is not None:
        check_ids(a, name, n)
    return a


def check_ids(ids: Any, name: str, n: int) -> None:
    """IndexError naming the first id outside ``[0, n)`` (numpy or torch, any device)."""
    bad = (ids < 0) | (ids >= n)
    if not bool(bad.any()):
        return
    flat = bad.reshape(-1)
    pos = int(flat.nonzero()[0][0]) if isinstance(flat, np.ndarray) else int(flat.nonzero()[0])
    raise IndexError(f"{name} contains id {int(ids.reshape(-1)[pos])}, outside [0, {n})")


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
