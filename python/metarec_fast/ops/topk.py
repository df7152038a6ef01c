"""Top-k selection with exclusions: over explicit scores, or fused with the
inner products that produce them (the score matrix is never materialised).

Both run on the CPU (C++/OpenMP) or, with CUDA tensors or ``device="cuda"``,
on the GPU (module ``metarec_fast._cuda``; device rules in
``metarec_fast._gpu``). The GPU keeps at most 1024 items per row
(``min(k, n_items) <= 1024``, else ``ValueError``) and fewer than 2^31 - 1
items; conventions and exceptions are otherwise the CPU's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core, _gpu
from .._config import resolve_num_threads
from .._validation import (
    as_csr,
    as_float_array,
    check_finite,
    check_k,
    dtype_name,
    like_input,
)

__all__ = ["topk", "topk_dot"]

_NO_EXCLUDE = np.zeros(0, dtype=np.int64)


def _exclusion(exclude: Any, n_rows: int, n_cols: int, device: Any = None) -> tuple[Any, Any]:
    """The exclusion pattern ``(indptr, indices)``, validated and rows sorted by
    ``as_csr`` (once, for either device; the kernels re-check it only to stay
    in bounds). ``device``: copied there as int64 tensors (CUDA tensors given as
    ``(indptr, indices)`` go to the host for the check and come back; ``None``
    stands for no exclusions there)."""
    if exclude is None:
        return (_NO_EXCLUDE, _NO_EXCLUDE) if device is None else (None, None)
    if device is not None and isinstance(exclude, tuple):
        exclude = tuple(x.cpu() if _gpu.is_cuda_tensor(x) else x for x in exclude)
    csr = as_csr(exclude, "exclude", n_rows, n_cols)
    if device is None:
        return csr.indptr, csr.indices
    import torch

    return torch.from_numpy(csr.indptr).to(device), torch.from_numpy(csr.indices).to(device)


def _suffix(dtype: Any) -> str:
    """Kernel name suffix for a numpy or torch float dtype."""
    return "f32" if dtype_name(dtype) == "float32" else "f64"


def _exclude_device(exclude: Any) -> Any:
    """An ``(indptr, indices)`` pair of CUDA tensors, for device resolution."""
    if isinstance(exclude, tuple) and len(exclude) in (2, 3):
        return next((x for x in exclude[:2] if _gpu.is_cuda_tensor(x)), None)
    return None


def _cuda_outputs(n_rows: int, k: int, device: Any) -> tuple[Any, Any]:
    import torch

    ids = torch.empty((n_rows, k), dtype=torch.int64, device=device)
    vals = torch.empty((n_rows, k), dtype=torch.float32, device=device)
    return ids, vals


def _launch_topk(s: Any, k: int, exclude: Any, device: Any, slices: int = 0) -> tuple[Any, Any]:
    """The CUDA launch for checked scores ``s`` on ``device``."""
    n, m = int(s.shape[0]), int(s.shape[1])
    indptr, indices = _exclusion(exclude, n, m, device)
    nnz = 0 if indices is None else int(indices.shape[0])
    ids, vals = _cuda_outputs(n, k, device)
    fn = getattr(_gpu.cuda_module(), "topk_" + _suffix(s.dtype))
    fn(_gpu.ptr(s), n, m, k, _gpu.ptr(indptr), _gpu.ptr(indices), nnz, _gpu.ptr(ids),
       _gpu.ptr(vals), *_gpu.launch_context(device), slices)
    return ids, vals


def _launch_topk_dot(q: Any, it: Any, k: int, b: Any, exclude: Any, device: Any,
                     slices: int = 0) -> tuple[Any, Any]:
    """The CUDA launch for inputs checked by :func:`_dot_inputs` on ``device``."""
    nq, ni, d = int(q.shape[0]), int(it.shape[0]), int(q.shape[1])
    indptr, indices = _exclusion(exclude, nq, ni, device)
    nnz = 0 if indices is None else int(indices.shape[0])
    ids, vals = _cuda_outputs(nq, k, device)
    fn = getattr(_gpu.cuda_module(), "topk_dot_" + _suffix(q.dtype))
    fn(_gpu.ptr(q), nq, _gpu.ptr(it), ni, d, _gpu.ptr(b), k, _gpu.ptr(indptr), _gpu.ptr(indices),
       nnz, _gpu.ptr(ids), _gpu.ptr(vals), *_gpu.launch_context(device), slices)
    return ids, vals


def topk(
    scores: Any,
    k: int,
    exclude: Any = None,
    num_threads: int | None = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """The ``k`` highest scores of each row, best first.

    Parameters
    ----------
    scores:
        ``(n_queries, n_items)`` float32 or float64 array (numpy or CPU torch
        tensor). ``+-inf`` is allowed (an item scored ``-inf`` still comes
        before padding); NaN raises ``ValueError``.
    k:
        Number of items per row (``k`` may exceed ``n_items``).
    exclude:
        Items to leave out per row: a ``scipy.sparse`` CSR matrix
        ``(n_queries, n_items)`` or an ``(indptr, indices)`` pair. Unsorted
        rows and duplicates are fine.
    num_threads:
        ``None`` (OpenMP default), ``-1`` (all cores) or a positive count.
        Results never depend on it. Ignored on the GPU.
    device:
        ``None`` (follow the inputs: CUDA tensors run on their GPU), ``"cpu"``,
        ``"cuda"`` or ``"cuda:N"`` (numpy / CPU inputs are copied there). See
        ``metarec_fast._gpu`` for the rules; the GPU keeps at most 1024 items
        per row.

    Returns
    -------
    (ids, scores):
        ``int64`` and ``float32`` arrays of shape ``(n_queries, k)`` sorted by
        descending score; equal scores are ordered by ascending item id. Rows
        with fewer than ``k`` candidates are padded with id ``-1`` and score
        ``-inf``. Torch tensors come back when ``scores`` was a tensor; torch
        CUDA tensors whenever the GPU ran.
    """
    dev = _gpu.resolve_device(device, scores=scores, exclude=_exclude_device(exclude))
    # NaN is detected by the kernel during its scan (ValueError naming the
    # first position), which saves a full extra pass over the scores.
    s = as_float_array(scores, "scores", 2, finite=False, device=dev)
    k = check_k(k)
    nt = resolve_num_threads(num_threads)  # same argument errors on every device
    if dev is not None:
        return _launch_topk(s, k, exclude, dev)
    indptr, indices = _exclusion(exclude, s.shape[0], s.shape[1])
    fn = getattr(_core, "topk_" + _suffix(s.dtype))
    ids, vals = fn(s, k, indptr, indices, nt)
    return like_input(ids, scores), like_input(vals, scores)


def _dot_inputs(queries: Any, items: Any, item_bias: Any, device: Any = None) -> tuple[Any, Any, Any]:
    """Queries, items and bias read and checked once, for either device."""
    q = as_float_array(queries, "queries", 2, device=device)
    # NaN/inf in items: the CPU kernel finds it while it packs them (a
    # ValueError naming the first position), saving a pass over the catalogue;
    # the CUDA kernel does not scan them, so on a GPU one reduction does here.
    it = as_float_array(items, "items", 2, finite=False, device=device)
    if dtype_name(it) != dtype_name(q):
        raise TypeError(f"items must have dtype {dtype_name(q)} like queries, got {dtype_name(it)}")
    if device is not None:
        check_finite(it, "items")
    if q.shape[1] != it.shape[1]:
        raise ValueError(
            f"queries and items must have the same number of columns d, got "
            f"queries {tuple(q.shape)} (d={q.shape[1]}) and items {tuple(it.shape)} (d={it.shape[1]})"
        )
    b = None
    if item_bias is not None:
        b = as_float_array(item_bias, "item_bias", 1, finite=False, device=device)
        if dtype_name(b) != dtype_name(q):
            raise TypeError(f"item_bias must have dtype {dtype_name(q)} like queries, got {dtype_name(b)}")
        check_finite(b, "item_bias")
        if b.shape[0] != it.shape[0]:
            raise ValueError(
                f"item_bias must have one entry per item ({it.shape[0]}), got {b.shape[0]}"
            )
    return q, it, b


def topk_dot(
    queries: Any,
    items: Any,
    k: int,
    item_bias: Any = None,
    exclude: Any = None,
    num_threads: int | None = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Top-k of ``queries @ items.T + item_bias`` without building that matrix.

    Tiles of queries x items are scored in registers by a SIMD micro-kernel
    chosen at run time (AVX-512, AVX2+FMA or portable; see
    ``metarec_fast._core.simd_level()``, ``METAREC_SIMD``) and scanned
    against each query's current k-th score, so memory stays
    ``O(n_items * d + n_queries * k)``.

    Parameters
    ----------
    queries:
        ``(n_queries, d)`` float32 or float64 (numpy or CPU torch tensor).
    items:
        ``(n_items, d)``, same dtype as ``queries`` (``TypeError`` otherwise).
    k:
        Number of items per query (may exceed ``n_items``).
    item_bias:
        Optional ``(n_items,)`` offset added to every score, same dtype.
    exclude:
        Items to leave out per query: a CSR matrix ``(n_queries, n_items)``
        or an ``(indptr, indices)`` pair.
    num_threads:
        ``None`` (OpenMP default), ``-1`` (all cores) or a positive count.
        Ignored on the GPU.
    device:
        As :func:`topk`. On the GPU a fused CUDA kernel scores tiles of
        queries x items in registers and keeps candidates above each query's
        current k-th score (at most 1024 per query).

    Returns
    -------
    (ids, scores):
        As :func:`topk`. Scores are computed in the input precision (bias
        first, then fused multiply-adds over ``d``), so they may differ from
        ``queries @ items.T + item_bias`` in the last bits; the ids equal
        ``topk`` of the explicit scores up to such rounding ties.
    """
    dev = _gpu.resolve_device(device, queries=queries, items=items, item_bias=item_bias,
                              exclude=_exclude_device(exclude))
    q, it, b = _dot_inputs(queries, items, item_bias, dev)
    k = check_k(k)
    nt = resolve_num_threads(num_threads)
    if dev is not None:
        return _launch_topk_dot(q, it, k, b, exclude, dev)
    indptr, indices = _exclusion(exclude, q.shape[0], it.shape[0])
    fn = getattr(_core, "topk_dot_" + _suffix(q.dtype))
    ids, vals = fn(q, it, k, b, indptr, indices, nt)
    return like_input(ids, queries, items), like_input(vals, queries, items)


def _topk_cuda(scores: Any, k: int, exclude: Any, device: Any, slices: int = 0) -> tuple[Any, Any]:
    """Testing aid: :func:`topk` on ``device`` with the column split forced (``slices``)."""
    s = as_float_array(scores, "scores", 2, finite=False, device=device)
    return _launch_topk(s, check_k(k), exclude, device, slices)


def _topk_dot_cuda(queries: Any, items: Any, k: int, item_bias: Any, exclude: Any, device: Any,
                   slices: int = 0) -> tuple[Any, Any]:
    """Testing aid: :func:`topk_dot` on ``device`` with the item split forced (``slices``)."""
    q, it, b = _dot_inputs(queries, items, item_bias, device)
    return _launch_topk_dot(q, it, check_k(k), b, exclude, device, slices)


def _topk_dot_simd(
    queries: Any,
    items: Any,
    k: int,
    simd: str,
    item_bias: Any = None,
    exclude: Any = None,
    num_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Testing aid: :func:`topk_dot` forced onto one SIMD level."""
    q, it, b = _dot_inputs(queries, items, item_bias)
    k = check_k(k)
    indptr, indices = _exclusion(exclude, q.shape[0], it.shape[0])
    fn = getattr(_core, "topk_dot_" + _suffix(q.dtype))
    return fn(q, it, k, b, indptr, indices, resolve_num_threads(num_threads), simd)


def _dot_scores(
    queries: Any, items: Any, item_bias: Any = None, simd: str = "", num_threads: int | None = None
) -> np.ndarray:
    """Testing aid: the dense scores with exactly :func:`topk_dot`'s arithmetic."""
    q, it, b = _dot_inputs(queries, items, item_bias)
    fn = getattr(_core, "_dot_scores_" + _suffix(q.dtype))
    return fn(q, it, b, resolve_num_threads(num_threads), simd)
