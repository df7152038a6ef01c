"""A meta-batch of tasks as padded torch tensors (the torch engine's input)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import numpy as np
import torch


@dataclass
class TaskBatch:
    """Support and query sets of ``B`` tasks, padded to a common length.

    Every ``*_items`` tensor holds item ids (int64, padding = 0 with mask 0),
    ``*_ratings`` the targets (explicit ratings, or 0/1 labels for implicit
    feedback with sampled negatives), ``*_mask`` 1.0 for real entries and 0.0
    for padding. ``users`` are the dense user ids of the tasks (used by
    models with user-conditioned initialisation); ``user_features`` an
    optional float tensor ``[B, F]``.
    """

    support_items: torch.Tensor
    support_ratings: torch.Tensor
    support_mask: torch.Tensor
    query_items: torch.Tensor
    query_ratings: torch.Tensor
    query_mask: torch.Tensor
    users: Optional[torch.Tensor] = None
    user_features: Optional[torch.Tensor] = None
    # The same tasks as CSR numpy arrays, when built from a TaskSet: the C++
    # engine reads these directly instead of un-padding the tensors.
    csr: Optional[dict] = None

    def __post_init__(self) -> None:
        b = self.support_items.shape[0]
        for f in fields(self):
            if f.name == "csr":
                continue
            value = getattr(self, f.name)
            if value is not None and value.shape[0] != b:
                raise ValueError(
                    f"TaskBatch.{f.name} has {value.shape[0]} tasks, support_items has {b}"
                )
        for side in ("support", "query"):
            shapes = {getattr(self, f"{side}_{k}").shape for k in ("items", "ratings", "mask")}
            if len(shapes) != 1:
                raise ValueError(f"TaskBatch {side} items/ratings/mask shapes differ: {shapes}")

    @property
    def n_tasks(self) -> int:
        return int(self.support_items.shape[0])

    def to(self, *args: Any, **kwargs: Any) -> "TaskBatch":
        """Move every tensor (``.to`` semantics; item ids and masks keep their dtype class)."""
        out: dict[str, Any] = {"csr": self.csr}
        for f in fields(self):
            if f.name == "csr":
                continue
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = None
            elif value.is_floating_point():
                out[f.name] = value.to(*args, **kwargs)
            else:
                device = kwargs.get("device", next((a for a in args if not isinstance(a, torch.dtype)), None))
                out[f.name] = value.to(device) if device is not None else value
        return TaskBatch(**out)

    def select(self, indices: Any) -> "TaskBatch":
        """The sub-batch of the tasks at ``indices`` (any index torch accepts)."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return TaskBatch(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[index])
                for f in fields(self)
                if f.name != "csr"
            }
        )

    def with_negatives(self, query_negatives: Any = None, support_negatives: Any = None,
                       positive_threshold: float | None = None) -> "TaskBatch":
        """Implicit-feedback view: every real entry becomes a positive (target 1) and
        the sampled negatives (``[B, n]`` item ids each, or None) are appended to the
        query / support sets as target-0 entries (mask 1). With ``positive_threshold``,
        only entries rated at least that are positives, the others target 0 (explicit
        ratings judged as the evaluation's relevance threshold does). Vectorised.
        """

        def side(items: torch.Tensor, ratings: torch.Tensor, mask: torch.Tensor, neg: Any):
            pos = mask.clone()  # 1 on real entries, 0 on padding
            if positive_threshold is not None:
                pos = pos * (ratings >= positive_threshold).to(pos.dtype)
            if neg is None:
                return items, pos, mask
            neg = torch.as_tensor(neg).to(torch.int64)
            if neg.ndim != 2 or neg.shape[0] != self.n_tasks:
                raise ValueError(f"negatives must be [{self.n_tasks}, n], got {tuple(neg.shape)}")
            zeros = torch.zeros(neg.shape, dtype=ratings.dtype)
            return (torch.cat([items, neg], 1), torch.cat([pos, zeros], 1),
                    torch.cat([mask, torch.ones(neg.shape, dtype=mask.dtype)], 1))

        s = side(self.support_items, self.support_ratings, self.support_mask, support_negatives)
        q = side(self.query_items, self.query_ratings, self.query_mask, query_negatives)
        return TaskBatch(*s, *q, users=self.users, user_features=self.user_features)

    @classmethod
    def from_tasks(
        cls,
        tasks: Any,
        idx: Any = None,
        dtype: torch.dtype = torch.float32,
        user_features: Any = None,
    ) -> "TaskBatch":
        """The tasks ``idx`` (default: all) of a :class:`~metarec_fast.data.TaskSet`,
        padded to this batch's longest support and query set.

        ``user_features``: optional ``[n_users, F]`` array indexed by the dataset's
        dense user ids (e.g. :func:`metarec_fast.models.features.one_hot` of
        ``data.user_features``); each task gets its user's row.
        """
        import numpy as np

        idx = np.arange(len(tasks)) if idx is None else np.asarray(idx)
        arrays = tasks.batch(idx, padded=True)

        def side(part: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return (
                torch.from_numpy(np.ascontiguousarray(part.items, dtype=np.int64)),
                torch.from_numpy(part.ratings).to(dtype),
                torch.from_numpy(part.mask).to(dtype),
            )

        uf = None
        if user_features is not None:
            uf = torch.as_tensor(np.asarray(user_features)[np.asarray(arrays.users, dtype=np.int64)])
            uf = uf.to(dtype) if uf.is_floating_point() else uf
        users = torch.from_numpy(np.asarray(arrays.users, dtype=np.int64))
        rows = tasks.batch(idx, padded=False)
        csr = {}
        for prefix, sub in (("s", rows.support), ("q", rows.query)):
            csr[f"{prefix}_indptr"] = np.asarray(sub.indptr, dtype=np.int64)
            csr[f"{prefix}_items"] = np.asarray(sub.items, dtype=np.int64)
            csr[f"{prefix}_targets"] = np.asarray(sub.ratings)
        return cls(*side(arrays.support), *side(arrays.query), users=users, user_features=uf, csr=csr)

    @classmethod
    def from_lists(
        cls,
        support: list[tuple[list[int], list[float]]],
        query: list[tuple[list[int], list[float]]],
        users: list[int] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> "TaskBatch":
        """Build a batch from per-task ``(item_ids, ratings)`` lists (tests, small examples)."""
        if len(support) != len(query):
            raise ValueError(f"{len(support)} support sets but {len(query)} query sets")

        def pad(sets: list[tuple[list[int], list[float]]]):
            width = max([len(items) for items, _ in sets] + [1])
            items = torch.zeros(len(sets), width, dtype=torch.int64)
            ratings = torch.zeros(len(sets), width, dtype=dtype)
            mask = torch.zeros(len(sets), width, dtype=dtype)
            for row, (it, rt) in enumerate(sets):
                if len(it) != len(rt):
                    raise ValueError(f"task {row}: {len(it)} items but {len(rt)} ratings")
                items[row, : len(it)] = torch.as_tensor(it, dtype=torch.int64)
                ratings[row, : len(rt)] = torch.as_tensor(rt, dtype=dtype)
                mask[row, : len(it)] = 1.0
            return items, ratings, mask

        def csr(sets: list[tuple[list[int], list[float]]], prefix: str) -> dict[str, np.ndarray]:
            lengths = [len(items) for items, _ in sets]
            return {
                f"{prefix}_indptr": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                f"{prefix}_items": np.asarray([i for items, _ in sets for i in items], dtype=np.int64),
                f"{prefix}_targets": np.asarray([r for _, rt in sets for r in rt], dtype=np.float64),
            }

        s = pad(support)
        q = pad(query)
        u = torch.as_tensor(users, dtype=torch.int64) if users is not None else None
        return cls(*s, *q, users=u, csr={**csr(support, "s"), **csr(query, "q")})
