"""``engine="cpp"``: the C++ linear-head inner loop as one torch autograd Function.

Forward runs all tasks' inner loops in C++ and returns the query predictions;
backward returns exact gradients for ``theta_0``, the inner learning rates,
the item representations ``H`` and the offsets ``c`` (second order, or first
order for FOMAML / Reptile), so the gradient continues into the body.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _core
from .._config import resolve_num_threads
from .batch import TaskBatch


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


class _LinearHeadFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        p0: torch.Tensor,
        b0: torch.Tensor,
        alpha_p: torch.Tensor,
        alpha_b: torch.Tensor,
        H: torch.Tensor,
        c: torch.Tensor,
        tasks: dict[str, np.ndarray],
        steps: int,
        l2: float,
        loss: str,
        second_order: bool,
        num_threads: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        per_user = p0.ndim == 2
        args = (
            _np(H), _np(c), tasks["s_indptr"], tasks["s_items"], tasks["s_targets"],
            tasks["q_indptr"], tasks["q_items"], _np(p0).reshape(-1, H.shape[1]),
            _np(b0).reshape(-1), per_user, _np(alpha_p).reshape(-1), float(alpha_b),
            steps, l2, loss,
        )
        trajectory, pred = _core.linear_head_forward(*args, num_threads)
        ctx.args = args
        ctx.trajectory = trajectory
        ctx.meta = (second_order, num_threads, p0.shape, b0.shape, alpha_p.shape)
        traj = torch.from_numpy(trajectory)
        ctx.mark_non_differentiable(traj)
        return torch.from_numpy(pred), traj

    @staticmethod
    def backward(ctx: Any, grad_pred: torch.Tensor, _grad_traj: Any):  # type: ignore[override]
        second_order, num_threads, p_shape, b_shape, a_shape = ctx.meta
        alpha_grad = bool(ctx.needs_input_grad[2] or ctx.needs_input_grad[3])
        g = _core.linear_head_backward(
            *ctx.args, ctx.trajectory, _np(grad_pred), second_order,
            alpha_grad=alpha_grad, num_threads=num_threads,
        )
        dtype = grad_pred.dtype
        alpha_b = torch.tensor(g["alpha_b"], dtype=dtype)
        return (
            torch.from_numpy(g["p0"]).reshape(p_shape),
            torch.from_numpy(g["b0"]).reshape(b_shape),
            torch.from_numpy(g["alpha_p"]).reshape(a_shape) if ctx.needs_input_grad[2] else None,
            alpha_b if ctx.needs_input_grad[3] else None,
            torch.from_numpy(g["H"]),
            torch.from_numpy(g["c"]),
            None, None, None, None, None, None,
        )


def batch_to_csr(batch: TaskBatch, dtype: torch.dtype) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Padded task batch -> CSR arrays for the kernel, plus each query entry's task index."""
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    if batch.csr is not None:  # built from a TaskSet: no un-padding needed
        out = dict(batch.csr)
        for key in ("s_targets", "q_targets"):
            out[key] = np.ascontiguousarray(out[key], dtype=np_dtype)
        lengths = np.diff(out["q_indptr"])
        return out, torch.from_numpy(np.repeat(np.arange(batch.n_tasks), lengths))
    out: dict[str, np.ndarray] = {}
    q_rows = None
    for side, prefix in (("support", "s"), ("query", "q")):
        mask = getattr(batch, f"{side}_mask") > 0
        counts = mask.sum(1)
        indptr = torch.zeros(batch.n_tasks + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(counts, 0)
        out[f"{prefix}_indptr"] = indptr.numpy()
        out[f"{prefix}_items"] = np.ascontiguousarray(getattr(batch, f"{side}_items")[mask].numpy())
        out[f"{prefix}_targets"] = _np(getattr(batch, f"{side}_ratings")[mask].to(dtype))
        if side == "query":
            q_rows = torch.repeat_interleave(torch.arange(batch.n_tasks), counts)
    return out, q_rows


def linear_head_query_predictions(
    p0: torch.Tensor,
    b0: torch.Tensor,
    alpha_p: torch.Tensor | float,
    alpha_b: torch.Tensor | float,
    H: torch.Tensor,
    c: torch.Tensor,
    batch: TaskBatch,
    steps: int,
    l2: float,
    loss: str,
    second_order: bool = True,
    num_threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query predictions of every task after ``steps`` inner steps, via C++.

    Returns ``(pred [nnz(query)], query_targets [nnz(query)], task index of each
    query entry)``, plus gradients to every tensor argument through autograd.
    ``p0``/``b0`` are shared (``[d]``, ``[]``) or per task (``[B, d]``, ``[B]``).
    """
    dtype = H.dtype
    tasks, q_rows = batch_to_csr(batch, dtype)
    alpha_p = torch.as_tensor(alpha_p, dtype=dtype)
    alpha_b = torch.as_tensor(alpha_b, dtype=dtype)
    pred, _ = _LinearHeadFunction.apply(
        p0, b0, alpha_p, alpha_b, H, c, tasks, steps, float(l2), loss, second_order,
        resolve_num_threads(num_threads),
    )
    targets = torch.from_numpy(tasks["q_targets"])
    return pred, targets, q_rows


def linear_head_trajectory(
    p0: torch.Tensor, b0: torch.Tensor, alpha_p: Any, alpha_b: Any, H: torch.Tensor, c: torch.Tensor,
    batch: TaskBatch, steps: int, l2: float, loss: str, num_threads: int | None = None,
) -> torch.Tensor:
    """``[B, steps + 1, d + 1]``: every task's ``theta_t`` (no gradient)."""
    dtype = H.dtype
    tasks, _ = batch_to_csr(batch, dtype)
    alpha_p = torch.as_tensor(alpha_p, dtype=dtype)
    _, traj = _LinearHeadFunction.apply(
        p0.detach(), b0.detach(), alpha_p.detach(), torch.as_tensor(alpha_b, dtype=dtype),
        H.detach(), c.detach(), tasks, steps, float(l2), loss, False, resolve_num_threads(num_threads),
    )
    return traj
