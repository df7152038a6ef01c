"""Top-k selection with exclusions: over explicit scores, or fused with the
inner products that produce them (the score matrix is never materialised)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from .._config import resolve_num_threads
from .._validation import (
    as_csr,
    as_float_array,
    check_finite,
    check_k,
    like_input,
)

__all__ = ["topk", "topk_dot"]

_NO_EXCLUDE = np.zeros(0, dtype=np.int64)


def _exclusion(exclude: Any, n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    if exclude is None:
        return _NO_EXCLUDE, _NO_EXCLUDE
    csr = as_csr(exclude, "exclude", n_rows, n_cols)
    return csr.indptr, csr.indices


def _suffix(dtype: np.dtype) -> str:
    return "f32" if dtype == np.float32 else "f64"


def topk(
    scores: Any,
    k: int,
    exclude: Any = None,
    num_threads: int | None = None,
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
        Results never depend on it.

    Returns
    -------
    (ids, scores):
        ``int64`` and ``float32`` arrays of shape ``(n_queries, k)`` sorted by
        descending score; equal scores are ordered by ascending item id. Rows
        with fewer than ``k`` candidates are padded with id ``-1`` and score
        ``-inf``. Torch tensors come back when ``scores`` was a tensor.
    """
    # NaN is detected by the kernel during its scan (ValueError naming the
    # first position), which saves a full extra pass over the scores.
    s = as_float_array(scores, "scores", 2, finite=False)
    k = check_k(k)
    nt = resolve_num_threads(num_threads)
    indptr, indices = _exclusion(exclude, s.shape[0], s.shape[1])
    fn = getattr(_core, "topk_" + _suffix(s.dtype))
    ids, vals = fn(s, k, indptr, indices, nt)
    return like_input(ids, scores), like_input(vals, scores)


def _dot_inputs(queries: Any, items: Any, item_bias: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    q = as_float_array(queries, "queries", 2)
    it = as_float_array(items, "items", 2, finite=False)
    if it.dtype != q.dtype:
        raise TypeError(f"items must have dtype {q.dtype} like queries, got {it.dtype}")
    # NaN/inf in items is detected by the kernel while it packs them (a
    # ValueError naming the first position), saving a pass over the catalogue.
    if q.shape[1] != it.shape[1]:
        raise ValueError(
            f"queries and items must have the same number of columns d, got "
            f"queries {q.shape} (d={q.shape[1]}) and items {it.shape} (d={it.shape[1]})"
        )
    b = None
    if item_bias is not None:
        b = as_float_array(item_bias, "item_bias", 1, finite=False)
        if b.dtype != q.dtype:
            raise TypeError(f"item_bias must have dtype {q.dtype} like queries, got {b.dtype}")
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

    Returns
    -------
    (ids, scores):
        As :func:`topk`. Scores are computed in the input precision (bias
        first, then fused multiply-adds over ``d``), so they may differ from
        ``queries @ items.T + item_bias`` in the last bits; the ids equal
        ``topk`` of the explicit scores up to such rounding ties.
    """
    q, it, b = _dot_inputs(queries, items, item_bias)
    k = check_k(k)
    nt = resolve_num_threads(num_threads)
    indptr, indices = _exclusion(exclude, q.shape[0], it.shape[0])
    fn = getattr(_core, "topk_dot_" + _suffix(q.dtype))
    ids, vals = fn(q, it, k, b, indptr, indices, nt)
    return like_input(ids, queries, items), like_input(vals, queries, items)


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
