"""``engine="cpp"``: the C++ linear-head inner loop as one torch autograd Function.

Forward runs all tasks' inner loops in C++ and returns the query predictions;
backward returns exact gradients for ``theta_0``, the inner learning rates,
the item representations ``H`` and the offsets ``c`` (second order, or first
order for FOMAML / Reptile), so the gradient continues into the body.

When the model's tensors are on a CUDA device, the same Function (one for
both devices, the launcher chosen by H's device) runs the CUDA kernels (:mod:`metarec_fast.ops.adapt`'s ``cuda_linear_head_*``): the
task CSR arrays move to that device once per batch and everything else stays
there. Without the CUDA kernels this raises ``RuntimeError`` ("built without
CUDA"); it never falls back to the CPU.
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


class _CpuLauncher:
    """The C++ kernels of ``_core``: numpy in, tensors out (tasks: numpy CSR arrays)."""

    @staticmethod
    def forward(p0: torch.Tensor, b0: torch.Tensor, alpha_p: torch.Tensor, alpha_b: Any, H: torch.Tensor,
                c: torch.Tensor, tasks: dict[str, Any], steps: int, l2: float, loss: str,
                num_threads: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        args = (
            _np(H), _np(c), tasks["s_indptr"], tasks["s_items"], tasks["s_targets"],
            tasks["q_indptr"], tasks["q_items"], _np(p0).reshape(-1, H.shape[1]),
            _np(b0).reshape(-1), p0.ndim == 2, _np(alpha_p).reshape(-1), float(alpha_b),
            steps, l2, loss,
        )
        trajectory, pred = _core.linear_head_forward(*args, num_threads)
        return torch.from_numpy(pred), torch.from_numpy(trajectory), (args, trajectory)

    @staticmethod
    def backward(saved: Any, grad_pred: torch.Tensor, second_order: bool, alpha_grad: bool,
                 num_threads: int) -> dict[str, torch.Tensor]:
        args, trajectory = saved
        g = _core.linear_head_backward(*args, trajectory, _np(grad_pred), second_order,
                                       alpha_grad=alpha_grad, num_threads=num_threads)
        out = {k: torch.from_numpy(v) for k, v in g.items() if k != "alpha_b"}
        out["alpha_b"] = torch.tensor(g["alpha_b"], dtype=grad_pred.dtype)
        return out


class _CudaLauncher:
    """The CUDA kernels (:mod:`metarec_fast.ops.adapt`'s launchers): tensors stay
    on the GPU (tasks: CSR tensors there)."""

    @staticmethod
    def forward(p0: torch.Tensor, b0: torch.Tensor, alpha_p: torch.Tensor, alpha_b: Any, H: torch.Tensor,
                c: torch.Tensor, tasks: dict[str, Any], steps: int, l2: float, loss: str,
                num_threads: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        from ..ops.adapt import cuda_linear_head_forward

        d = H.shape[1]
        args = dict(
            H=H.detach().contiguous(), c=c.detach().contiguous(), tasks=tasks,
            p0=p0.detach().reshape(-1, d).contiguous(), b0=b0.detach().reshape(-1).contiguous(),
            per_user=p0.ndim == 2, alpha_p=alpha_p.detach().reshape(-1).contiguous(),
            alpha_b=float(alpha_b), steps=steps, l2=l2, loss=loss,
        )
        trajectory, pred = cuda_linear_head_forward(**args)
        return pred, trajectory, (args, trajectory)

    @staticmethod
    def backward(saved: Any, grad_pred: torch.Tensor, second_order: bool, alpha_grad: bool,
                 num_threads: int) -> dict[str, torch.Tensor]:
        from ..ops.adapt import cuda_linear_head_backward

        args, trajectory = saved
        return cuda_linear_head_backward(**args, trajectory=trajectory, grad_query_pred=grad_pred,
                                         second_order=second_order, alpha_grad=alpha_grad)


class _LinearHeadFunction(torch.autograd.Function):
    """The inner loop and its exact backward, on H's device: one Function, the
    launcher chosen by device (every fix lands on both)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        p0: torch.Tensor,
        b0: torch.Tensor,
        alpha_p: torch.Tensor,
        alpha_b: Any,
        H: torch.Tensor,
        c: torch.Tensor,
        tasks: dict[str, Any],
        steps: int,
        l2: float,
        loss: str,
        second_order: bool,
        num_threads: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        launcher = _CudaLauncher if _on_cuda(H) else _CpuLauncher
        pred, traj, ctx.saved = launcher.forward(p0, b0, alpha_p, alpha_b, H, c, tasks, steps, l2, loss,
                                                 num_threads)
        ctx.launcher = launcher
        ctx.meta = (second_order, num_threads, p0.shape, b0.shape, alpha_p.shape,
                    alpha_b.shape if torch.is_tensor(alpha_b) else None)
        ctx.mark_non_differentiable(traj)
        # The trajectory never receives a gradient: without this, autograd
        # zero-fills a [B, T + 1, d + 1] tensor for it on every backward call.
        ctx.set_materialize_grads(False)
        return pred, traj

    @staticmethod
    def backward(ctx: Any, grad_pred: Any, _grad_traj: Any):  # type: ignore[override]
        if grad_pred is None:  # only the trajectory was used: nothing flows back
            return (None,) * 12
        second_order, num_threads, p_shape, b_shape, a_shape, ab_shape = ctx.meta
        alpha_grad = bool(ctx.needs_input_grad[2] or ctx.needs_input_grad[3])
        g = ctx.launcher.backward(ctx.saved, grad_pred, second_order, alpha_grad, num_threads)
        return (
            g["p0"].reshape(p_shape),
            g["b0"].reshape(b_shape),
            g["alpha_p"].reshape(a_shape) if ctx.needs_input_grad[2] else None,
            g["alpha_b"].reshape(ab_shape) if ctx.needs_input_grad[3] else None,
            g["H"],
            g["c"],
            None, None, None, None, None, None,
        )


def _on_cuda(H: torch.Tensor) -> bool:
    """Whether the CUDA kernels run: the model's item representations are on a GPU."""
    return bool(H.is_cuda)


def _cuda_inputs(p0: torch.Tensor, b0: torch.Tensor, alpha_p: Any, alpha_b: Any, H: torch.Tensor,
                 c: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Checks that every tensor is on H's device with H's dtype (never moved
    silently); the learning rates as a tensor there (alpha_b may stay a float)."""
    from .. import _gpu

    _gpu.cuda_module()  # RuntimeError "built without CUDA" before anything else
    device, dtype = H.device, H.dtype
    named = {"p0": p0, "b0": b0, "c": c, "alpha_p": alpha_p, "alpha_b": alpha_b}
    for name, t in named.items():
        if not torch.is_tensor(t):
            continue
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but the item representations H are on {device}; "
                             "move the whole model (and the learner) to one device")
        if t.dtype != dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but H has {dtype}")
    if not torch.is_tensor(alpha_p):
        alpha_p = torch.full((), float(alpha_p), dtype=dtype, device=device)
    return alpha_p, alpha_b


def batch_to_device_csr(batch: TaskBatch, dtype: torch.dtype,
                        device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:func:`batch_to_csr` for the CUDA engine: the CSR arrays (and each query
    entry's task index) as tensors on ``device``, built once per batch and
    device (cached on the batch; a TaskBatch is not modified in place)."""
    key = (str(device), dtype)
    cached = batch.__dict__.get("_device_csr")
    if cached is not None and cached[0] == key:
        return cached[1]
    if batch.csr is not None:  # one copy for the ids, one for the targets
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        csr = batch.csr
        int_parts = [np.asarray(csr[k], dtype=np.int64) for k in ("s_indptr", "s_items", "q_indptr", "q_items")]
        lengths = np.diff(int_parts[2])
        int_parts.append(np.repeat(np.arange(batch.n_tasks, dtype=np.int64), lengths))
        ints = torch.from_numpy(np.concatenate(int_parts)).to(device)
        float_parts = [np.asarray(csr[k], dtype=np_dtype) for k in ("s_targets", "q_targets")]
        floats = torch.from_numpy(np.concatenate(float_parts)).to(device)
        sizes = [len(a) for a in int_parts]
        s_indptr, s_items, q_indptr, q_items, q_rows = torch.split(ints, sizes)
        s_targets, q_targets = torch.split(floats, [len(a) for a in float_parts])
        out = {"s_indptr": s_indptr, "s_items": s_items, "s_targets": s_targets,
               "q_indptr": q_indptr, "q_items": q_items, "q_targets": q_targets}
    else:  # un-pad where the padded tensors are, then move
        out = {}
        q_rows = None
        for side, prefix in (("support", "s"), ("query", "q")):
            mask = getattr(batch, f"{side}_mask") > 0
            counts = mask.sum(1)
            indptr = torch.zeros(batch.n_tasks + 1, dtype=torch.int64, device=mask.device)
            indptr[1:] = torch.cumsum(counts, 0)
            out[f"{prefix}_indptr"] = indptr.to(device)
            out[f"{prefix}_items"] = getattr(batch, f"{side}_items")[mask].to(device=device, dtype=torch.int64)
            out[f"{prefix}_targets"] = getattr(batch, f"{side}_ratings")[mask].to(device=device, dtype=dtype)
            if side == "query":
                q_rows = torch.repeat_interleave(torch.arange(batch.n_tasks, device=mask.device), counts)
        q_rows = q_rows.to(device)
    out = {k: v.contiguous() for k, v in out.items()}
    batch.__dict__["_device_csr"] = (key, (out, q_rows))
    return out, q_rows


def batch_to_csr(batch: TaskBatch, dtype: torch.dtype) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Padded task batch -> CSR arrays for the kernel, plus each query entry's task index.

    Built once per batch and dtype (cached on the batch, like
    :func:`batch_to_device_csr`; a TaskBatch is not modified in place), so
    repeated meta-gradients on one batch skip the conversion. The arrays are
    read-only to their users."""
    cached = batch.__dict__.get("_cpu_csr")
    if cached is not None and cached[0] == dtype:
        return cached[1]
    result = _batch_to_csr(batch, dtype)
    batch.__dict__["_cpu_csr"] = (dtype, result)
    return result


def _batch_to_csr(batch: TaskBatch, dtype: torch.dtype) -> tuple[dict[str, np.ndarray], torch.Tensor]:
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
    tasks, targets, q_rows, alpha_p, alpha_b = _inputs(p0, b0, alpha_p, alpha_b, H, c, batch)
    pred, _ = _LinearHeadFunction.apply(
        p0, b0, alpha_p, alpha_b, H, c, tasks, steps, float(l2), loss, second_order,
        resolve_num_threads(num_threads),
    )
    return pred, targets, q_rows


def linear_head_trajectory(
    p0: torch.Tensor, b0: torch.Tensor, alpha_p: Any, alpha_b: Any, H: torch.Tensor, c: torch.Tensor,
    batch: TaskBatch, steps: int, l2: float, loss: str, num_threads: int | None = None,
) -> torch.Tensor:
    """``[B, steps + 1, d + 1]``: every task's ``theta_t`` (no gradient)."""
    tasks, _, _, alpha_p, alpha_b = _inputs(p0, b0, alpha_p, alpha_b, H, c, batch)
    _, traj = _LinearHeadFunction.apply(
        p0.detach(), b0.detach(), alpha_p.detach(), alpha_b.detach() if torch.is_tensor(alpha_b) else alpha_b,
        H.detach(), c.detach(), tasks, steps, float(l2), loss, False, resolve_num_threads(num_threads),
    )
    return traj


def _inputs(p0: torch.Tensor, b0: torch.Tensor, alpha_p: Any, alpha_b: Any, H: torch.Tensor, c: torch.Tensor,
            batch: TaskBatch) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """(task CSR for H's device, query targets, task of each query entry, alpha_p, alpha_b)."""
    dtype = H.dtype
    if _on_cuda(H):
        alpha_p, alpha_b = _cuda_inputs(p0, b0, alpha_p, alpha_b, H, c)
        tasks, q_rows = batch_to_device_csr(batch, dtype, H.device)
        return tasks, tasks["q_targets"], q_rows, alpha_p, alpha_b
    tasks, q_rows = batch_to_csr(batch, dtype)
    targets = torch.from_numpy(tasks["q_targets"])
    return tasks, targets, q_rows, torch.as_tensor(alpha_p, dtype=dtype), torch.as_tensor(alpha_b, dtype=dtype)
