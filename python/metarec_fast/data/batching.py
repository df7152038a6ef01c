"""Slicing task sets into batches for the trainer and the C++ kernels, without Python loops over users.

Two layouts of the support (or query) interactions of a batch of tasks:

* :class:`CSRBatch`: ``indptr`` (int64, re-based to 0), ``items`` (int32),
  ``ratings`` (float32), ``timestamps`` (int64 or None), one row per task;
* :class:`PaddedBatch`: ``items`` (int64, ``(B, L)``), ``ratings`` (float32),
  ``mask`` (bool, True on real entries), ``lengths``; padding uses item
  ``pad_item`` (default 0) and rating 0, so ``torch.func.vmap`` can run one
  program over every task with the mask zeroing the padded terms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import numpy as np

from ._ragged import gather_rows, pad_positions

if TYPE_CHECKING:  # pragma: no cover
    from .features import Features
    from .splits import TaskPart, TaskSet


class CSRBatch(NamedTuple):
    """Interactions of a batch of tasks, CSR by task (``indptr`` re-based to start at 0)."""

    indptr: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray | None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


class PaddedBatch(NamedTuple):
    """Interactions of a batch of tasks as ``(B, L)`` arrays with a mask."""

    items: np.ndarray
    ratings: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray

    def to_torch(self, device: Any = None) -> tuple[Any, Any, Any]:
        """``(items int64, ratings float32, mask bool)`` as torch tensors (torch imported lazily)."""
        import torch

        return (torch.from_numpy(self.items).to(device), torch.from_numpy(self.ratings).to(device),
                torch.from_numpy(self.mask).to(device))


class TaskArrays(NamedTuple):
    """A batch of tasks as numpy arrays: positions in the task set, dense user ids, support and
    query (the torch trainer's :class:`~metarec_fast.meta.TaskBatch` is built from it)."""

    tasks: np.ndarray
    users: np.ndarray
    support: CSRBatch | PaddedBatch
    query: CSRBatch | PaddedBatch
    user_features: "Features | None"


def _task_index(idx: Any, n_tasks: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.dtype == np.bool_:
        if idx.shape != (n_tasks,):
            raise ValueError(f"a boolean task mask must have shape ({n_tasks},), got {idx.shape}")
        return np.flatnonzero(idx)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"task indices must be integers, got {idx.dtype}")
    idx = idx.astype(np.int64).reshape(-1)
    if idx.min() < -n_tasks or idx.max() >= n_tasks:
        bad = idx[(idx < -n_tasks) | (idx >= n_tasks)][0]
        raise IndexError(f"task index {bad} is outside [0, {n_tasks})")
    return np.where(idx < 0, idx + n_tasks, idx)


def batch_csr(part: "TaskPart", idx: Any) -> CSRBatch:
    """The interactions of tasks ``idx`` as a CSR batch (re-based ``indptr``)."""
    idx = _task_index(idx, len(part))
    indptr, pos = gather_rows(part.indptr, idx)
    ts = part.timestamps[pos] if part.timestamps is not None else None
    return CSRBatch(indptr, part.items[pos], part.ratings[pos], ts)


def csr_to_padded(batch: CSRBatch, max_len: int | None = None, pad_item: int = 0,
                  truncate: bool = False) -> PaddedBatch:
    """Pad a CSR batch into ``(B, L)`` arrays; ``L`` = the longest row, or ``max_len``.

    A row longer than ``max_len`` raises ValueError unless ``truncate`` (then
    its first ``max_len`` entries are kept).
    """
    lengths = np.diff(batch.indptr)
    if max_len is not None:
        if max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {max_len}")
        if not truncate and lengths.size and lengths.max() > max_len:
            raise ValueError(
                f"a task has {int(lengths.max())} interactions, more than max_len={max_len}; pass truncate=True"
            )
    keep, cols, width = pad_positions(batch.indptr, max_len)
    b = len(lengths)
    rows = np.repeat(np.arange(b), lengths)[keep]
    cols = cols[keep]
    items = np.full((b, width), pad_item, dtype=np.int64)
    ratings = np.zeros((b, width), dtype=np.float32)
    mask = np.zeros((b, width), dtype=bool)
    items[rows, cols] = batch.items[keep]
    ratings[rows, cols] = batch.ratings[keep]
    mask[rows, cols] = True
    return PaddedBatch(items, ratings, mask, np.minimum(lengths, width).astype(np.int64))


def batch_padded(part: "TaskPart", idx: Any, max_len: int | None = None, pad_item: int = 0,
                 truncate: bool = False) -> PaddedBatch:
    """The interactions of tasks ``idx`` as padded ``(B, L)`` arrays with a mask."""
    return csr_to_padded(batch_csr(part, idx), max_len, pad_item, truncate)


def make_batch(
    tasks: "TaskSet",
    idx: Any,
    padded: bool = True,
    max_support: int | None = None,
    max_query: int | None = None,
    pad_item: int = 0,
    truncate: bool = False,
) -> TaskArrays:
    """Support and query of tasks ``idx`` (padded, or CSR when ``padded=False``) with their users."""
    idx = _task_index(idx, len(tasks))
    if padded:
        s = batch_padded(tasks.support, idx, max_support, pad_item, truncate)
        q = batch_padded(tasks.query, idx, max_query, pad_item, truncate)
    else:
        s, q = batch_csr(tasks.support, idx), batch_csr(tasks.query, idx)
    uf = tasks.user_features.take(idx) if tasks.user_features is not None else None
    return TaskArrays(idx, tasks.users[idx], s, q, uf)


def iter_batches(
    tasks: "TaskSet",
    batch_size: int,
    shuffle: bool = True,
    random_state: Any = None,
    padded: bool = True,
    drop_last: bool = False,
    **kwargs: Any,
) -> Iterator[TaskArrays]:
    """Batches of ``batch_size`` tasks (seeded shuffle), each from :func:`make_batch`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(tasks)
    order = np.random.default_rng(random_state).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield make_batch(tasks, order[start:start + batch_size], padded=padded, **kwargs)
