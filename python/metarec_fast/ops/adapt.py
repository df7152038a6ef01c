"""Batched inner loops for linear heads, in C++ (no torch needed).

This is the fast path of DESIGN.md's model family: per user, ``T`` gradient
steps on ``theta = (p, b)`` of ``y_hat = p . h_i + b + c_i`` over the support
set, then predictions for the query items. :mod:`metarec_fast.serving` uses
it to adapt new users; :mod:`metarec_fast.meta.cpp_engine` wraps it (and its
exact backward) as a torch autograd Function for meta-training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core
from .._config import resolve_num_threads
from .._validation import CSR, as_csr, as_float_array, check_finite

LOSSES = ("mse", "logistic")


@dataclass
class LinearHeadResult:
    """Adapted heads and query predictions of a batch of users.

    Attributes:
        p: ``[n_users, d]`` adapted weight vectors ``p_T``.
        b: ``[n_users]`` adapted biases ``b_T``.
        query_pred: predictions for the query items, in the query CSR's order.
        trajectory: ``[n_users, steps + 1, d + 1]`` every ``theta_t`` (kept for backward).
    """

    p: np.ndarray
    b: np.ndarray
    query_pred: np.ndarray
    trajectory: np.ndarray


def check_inner_loop(steps: Any, l2: Any, loss: Any) -> tuple[int, float, str]:
    """Validate the inner-loop settings shared by training and serving."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not np.isfinite(l2) or l2 < 0:
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    return int(steps), float(l2), str(loss)


def _task_csr(x: Any, name: str, n_users: int, n_items: int, with_targets: bool) -> CSR:
    # Keep the caller's order: query predictions come back aligned with it.
    csr = as_csr(x, name, n_users, n_items, with_data=with_targets, sort_rows=False)
    if with_targets and csr.data is None:
        raise ValueError(f"{name} needs targets: a CSR matrix with data or (indptr, items, targets)")
    return csr


def linear_head_adapt(
    H: Any,
    c: Any,
    support: Any,
    p0: Any,
    b0: Any,
    alpha: Any = 0.1,
    alpha_b: float | None = None,
    steps: int = 5,
    l2: float = 0.0,
    loss: str = "mse",
    query: Any = None,
    num_threads: int | None = None,
) -> LinearHeadResult:
    """Adapt one linear head per user on its support set.

    Args:
        H: ``[n_items, d]`` item representations (float32 or float64; sets the dtype).
        c: ``[n_items]`` item offsets (item bias + global bias).
        support: per-user support sets with targets: a scipy CSR matrix
            ``(n_users, n_items)`` whose data are the targets, or a tuple
            ``(indptr, items, targets)``.
        p0, b0: the starting head, shared (``[d]``, scalar) or per user
            (``[n_users, d]``, ``[n_users]``).
        alpha: inner learning rate, a scalar or ``[d]`` (per parameter of ``p``).
        alpha_b: the bias's learning rate (default: ``alpha`` if it is a scalar,
            else required).
        steps: number of inner steps (>= 0).
        l2: L2 strength on ``p`` in the support objective.
        loss: ``"mse"`` or ``"logistic"`` (targets in [0, 1], predictions are logits).
        query: optional per-user query items, CSR or ``(indptr, items)``.
        num_threads: None = OpenMP default, -1 = all cores, n = exactly n.
    """
    H = as_float_array(H, "H", 2)
    dtype = H.dtype
    n_items, d = H.shape
    c = as_float_array(c, "c", 1, dtype=dtype)
    if c.shape[0] != n_items:
        raise ValueError(f"c must have {n_items} entries (one per row of H), got {c.shape[0]}")
    steps, l2, loss = check_inner_loop(steps, l2, loss)
    n_users = _n_rows(support)
    s = _task_csr(support, "support", n_users, n_items, with_targets=True)
    s_targets = s.data.astype(dtype, copy=False)
    if query is None:
        q = CSR(np.zeros(n_users + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), None)
    else:
        q = _task_csr(query, "query", n_users, n_items, with_targets=False)
    p0 = as_float_array(p0, "p0", (1, 2)).astype(dtype, copy=False)
    b0 = np.ascontiguousarray(np.asarray(b0, dtype=dtype).reshape(-1))
    check_finite(b0, "b0")
    per_user = p0.ndim == 2
    want_p = (n_users, d) if per_user else (d,)
    if p0.shape != want_p or b0.shape[0] != (n_users if per_user else 1):
        raise ValueError(
            f"p0/b0 must be [{d}] and a scalar (shared) or [{n_users}, {d}] and [{n_users}] "
            f"(per user), got {p0.shape} and {b0.shape}"
        )
    alpha_p = np.ascontiguousarray(np.asarray(alpha, dtype=dtype).reshape(-1))
    check_finite(alpha_p, "alpha")
    if alpha_p.shape[0] not in (1, d):
        raise ValueError(f"alpha must be a scalar or have {d} entries, got {alpha_p.shape[0]}")
    if alpha_b is None:
        if alpha_p.shape[0] != 1 and d != 1:
            raise ValueError("alpha_b is required when alpha is per parameter")
        alpha_b = float(alpha_p[0])
    result = _core.linear_head_forward(
        H, c, s.indptr, s.indices, s_targets, q.indptr, q.indices,
        p0.reshape(-1 if per_user else 1, d), b0, per_user, alpha_p, float(alpha_b),
        int(steps), float(l2), loss, resolve_num_threads(num_threads),
    )
    trajectory, query_pred = result
    last = trajectory[:, -1, :]
    return LinearHeadResult(p=last[:, :d], b=last[:, d], query_pred=query_pred, trajectory=trajectory)


def _n_rows(x: Any) -> int:
    if hasattr(x, "shape") and hasattr(x, "indptr"):
        return int(x.shape[0])
    if isinstance(x, tuple) and len(x) >= 2:
        return int(np.asarray(x[0]).shape[0]) - 1
    raise TypeError(
        f"support must be a scipy.sparse CSR matrix or an (indptr, items, targets) tuple, "
        f"got {type(x).__name__}"
    )
