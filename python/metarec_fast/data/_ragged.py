"""Vectorised helpers for ragged (CSR-style) arrays: gather rows, pad, rank within rows.

No Python loop over rows anywhere: every helper works with ``np.repeat`` /
``np.cumsum`` over the whole batch.
"""

from __future__ import annotations

import numpy as np


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """``indptr`` (int64, ``len(lengths) + 1`` entries, starting at 0) for row lengths."""
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return indptr


def gather_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Select ``rows`` of a CSR structure.

    Returns ``(new_indptr, positions)``: ``new_indptr`` is re-based to start at
    0 and ``positions`` indexes the original value arrays, so that
    ``values[positions]`` are the selected rows' values, concatenated in the
    order of ``rows``. A row id of ``-1`` selects an empty row.
    """
    rows = np.asarray(rows, dtype=np.int64)
    valid = rows >= 0
    safe = np.where(valid, rows, 0)
    last = len(indptr) - 1
    starts = np.where(valid, indptr[np.minimum(safe, last)], 0)
    lengths = np.where(valid, indptr[np.minimum(safe + 1, last)] - starts, 0)
    new_indptr = offsets_from_lengths(lengths)
    total = int(new_indptr[-1])
    positions = np.arange(total, dtype=np.int64)
    if total:
        positions += np.repeat(starts - new_indptr[:-1], lengths)
    return new_indptr, positions


def row_of(indptr: np.ndarray) -> np.ndarray:
    """For each stored entry, the row it belongs to (int64)."""
    n_rows = len(indptr) - 1
    return np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))


def pad_positions(indptr: np.ndarray, max_len: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Row and column of every entry in a padded ``(n_rows, max_len)`` layout.

    Entries beyond ``max_len`` in a row are cut (the caller decides whether
    that is an error). Returns ``(keep, cols, width)`` where ``keep`` is a
    boolean mask over entries and ``cols`` their column.
    """
    lengths = np.diff(indptr)
    width = int(lengths.max()) if len(lengths) else 0
    if max_len is not None:
        width = int(max_len)
    rows = row_of(indptr)
    cols = np.arange(int(indptr[-1]), dtype=np.int64) - indptr[:-1][rows]
    keep = cols < width
    return keep, cols, width


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort + compare; faster than ``np.unique`` for large int arrays)."""
    a = np.sort(a)
    if len(a) < 2:
        return a
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def factorize(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(uniques, codes)``: sorted distinct values and each entry's index among them."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    new = np.ones(len(a), dtype=bool)
    if len(a) > 1:
        new[1:] = s[1:] != s[:-1]
    codes = np.empty(len(a), dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return s[new], codes
