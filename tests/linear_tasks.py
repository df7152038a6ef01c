"""Synthetic meta-learning tasks with a known answer, shared by the trainer and distributed tests."""

from __future__ import annotations

import numpy as np
import torch

from metarec_fast.meta import TaskBatch

N_ITEMS, DIM = 60, 3


def linear_tasks(n_tasks: int, seed: int, dtype: torch.dtype = torch.float64,
                 ragged: bool = False) -> TaskBatch:
    """Users rate by p_u . h_i + 3 with p_u around a shared centre; 5 support and 10 query
    items each (``ragged``: query sizes vary and some are empty)."""
    g = np.random.default_rng(seed)
    H = np.random.default_rng(123).normal(size=(N_ITEMS, DIM))
    centre = np.array([1.0, -0.5, 0.5])
    sup, qry = [], []
    for t in range(n_tasks):
        p = centre + 0.3 * g.normal(size=DIM)
        items = g.choice(N_ITEMS, 15, replace=False)
        r = H[items] @ p + 3.0
        n_q = (0 if t % 7 == 3 else 10 - t % 5) if ragged else 10
        sup.append((items[:5].tolist(), r[:5].tolist()))
        qry.append((items[5:5 + n_q].tolist(), r[5:5 + n_q].tolist()))
    return TaskBatch.from_lists(sup, qry, dtype=dtype)
