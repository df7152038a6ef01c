"""Batched inner loops for linear heads, in C++ (no torch needed) or CUDA.

This is the fast path of DESIGN.md's model family: per user, ``T`` gradient
steps on ``theta = (p, b)`` of ``y_hat = p . h_i + b + c_i`` over the support
set, then predictions for the query items. :mod:`metarec_fast.serving` uses
it to adapt new users; :mod:`metarec_fast.meta.cpp_engine` wraps it (and its
exact backward) as a torch autograd Function for meta-training.

One wrapper for both devices: inputs are read and checked once (numpy on the
CPU, torch tensors with ``device="cuda"`` or CUDA inputs; device rules in
:mod:`metarec_fast._gpu`), then ``_core`` or ``_cuda`` runs the inner loop.
:func:`cuda_linear_head_forward` / :func:`cuda_linear_head_backward` are the
tensor-level CUDA launchers the autograd Function uses on a CUDA model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core, _gpu
from .._config import resolve_num_threads
from .._validation import CSR, as_csr, as_float_array, as_index_array, check_finite, dtype_name, is_torch_tensor

LOSSES = ("mse", "logistic")


@dataclass
class LinearHeadResult:
    """Adapted heads and query predictions of a batch of users.

    numpy arrays, or torch CUDA tensors on the device the adaptation ran on.

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
    device: str | None = None,
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
        device: None (follow the inputs: CUDA tensors run on their GPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"`` (inputs are copied there; the result holds
            torch CUDA tensors). ``RuntimeError`` when built without CUDA.
    """
    dev = _gpu.resolve_device(device, **_device_inputs(
        H=H, c=c, support=support, p0=p0, b0=b0, alpha=alpha, alpha_b=alpha_b, query=query))
    H = as_float_array(H, "H", 2, device=dev)
    dtype = H.dtype
    n_items, d = H.shape
    c = as_float_array(c, "c", 1, dtype=dtype, device=dev)
    if c.shape[0] != n_items:
        raise ValueError(f"c must have {n_items} entries (one per row of H), got {c.shape[0]}")
    steps, l2, loss = check_inner_loop(steps, l2, loss)
    n_users = _n_rows(support)
    s_indptr, s_items, s_targets = _csr(support, "support", n_users, n_items, True, dev, dtype)
    if query is None:
        q_indptr, q_items = _empty_query(n_users, dev)
    else:
        q_indptr, q_items, _ = _csr(query, "query", n_users, n_items, False, dev, dtype)
    p0 = _cast(as_float_array(p0, "p0", (1, 2), device=dev), dtype)
    b0 = _vector(b0, "b0", dtype, dev)
    per_user = p0.ndim == 2
    want_p = (n_users, d) if per_user else (d,)
    if tuple(p0.shape) != want_p or b0.shape[0] != (n_users if per_user else 1):
        raise ValueError(
            f"p0/b0 must be [{d}] and a scalar (shared) or [{n_users}, {d}] and [{n_users}] "
            f"(per user), got {tuple(p0.shape)} and {tuple(b0.shape)}"
        )
    alpha_p = _vector(alpha, "alpha", dtype, dev)
    if alpha_p.shape[0] not in (1, d):
        raise ValueError(f"alpha must be a scalar or have {d} entries, got {alpha_p.shape[0]}")
    if alpha_b is None:
        if alpha_p.shape[0] != 1 and d != 1:
            raise ValueError("alpha_b is required when alpha is per parameter")
        alpha_b = float(alpha_p[0])
    threads = resolve_num_threads(num_threads)
    p0 = p0.reshape(-1 if per_user else 1, d)
    if dev is None:
        trajectory, query_pred = _core.linear_head_forward(
            H, c, s_indptr, s_items, s_targets, q_indptr, q_items, p0, b0, per_user, alpha_p,
            float(alpha_b), int(steps), float(l2), loss, threads,
        )
    else:
        tasks = {"s_indptr": s_indptr, "s_items": s_items, "s_targets": s_targets,
                 "q_indptr": q_indptr, "q_items": q_items}
        trajectory, query_pred = cuda_linear_head_forward(
            H, c, tasks, p0, b0, per_user, alpha_p, float(alpha_b), steps, l2, loss)
    last = trajectory[:, -1, :]
    return LinearHeadResult(p=last[:, :d], b=last[:, d], query_pred=query_pred, trajectory=trajectory)


def _cast(a: Any, dtype: Any) -> Any:
    """``a`` (numpy or torch) converted to ``dtype`` of the same library (no copy when equal)."""
    return a.astype(dtype, copy=False) if isinstance(a, np.ndarray) else a.to(dtype)


def _empty_query(n_users: int, dev: Any) -> tuple[Any, Any]:
    indptr, items = np.zeros(n_users + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if dev is None:
        return indptr, items
    import torch

    return torch.from_numpy(indptr).to(dev), torch.from_numpy(items).to(dev)


def _vector(x: Any, name: str, dtype: Any, dev: Any) -> Any:
    """A scalar or array as a flat, finite ``dtype`` array (numpy) or tensor on ``dev``."""
    if dev is not None and is_torch_tensor(x):
        import torch

        t = x.detach()
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a number or a float array, got {dtype_name(t)}")
        v = t.to(device=dev, dtype=dtype).reshape(-1).contiguous()
    else:
        np_dtype = np.dtype(dtype_name(dtype))
        v = np.ascontiguousarray(np.asarray(x, dtype=np_dtype).reshape(-1))
        if dev is not None:
            import torch

            v = torch.from_numpy(v).to(dev)
    check_finite(v, name)
    return v


def _n_rows(x: Any) -> int:
    if hasattr(x, "shape") and hasattr(x, "indptr"):
        return int(x.shape[0])
    if isinstance(x, tuple) and len(x) >= 2:
        indptr = x[0] if hasattr(x[0], "shape") else np.asarray(x[0])  # CUDA tensors stay put
        return int(indptr.shape[0]) - 1
    raise TypeError(
        f"support must be a scipy.sparse CSR matrix or an (indptr, items, targets) tuple, "
        f"got {type(x).__name__}"
    )


# ---------------------------------------------------------------------- CUDA


def _device_inputs(**inputs: Any) -> dict[str, Any]:
    """The array arguments for :func:`_gpu.resolve_device` (CSR tuples split
    into their parts; Python scalars and None left out: they live nowhere)."""
    out: dict[str, Any] = {}
    for name, x in inputs.items():
        if x is None or isinstance(x, (bool, int, float, np.generic)):
            continue
        if isinstance(x, tuple):
            for part, value in zip(("indptr", "items", "targets"), x):
                if value is not None:
                    out[f"{name}.{part}"] = value
        else:
            out[name] = x
    return out


def _csr(x: Any, name: str, n_users: int, n_items: int, with_targets: bool,
         dev: Any, dtype: Any) -> tuple[Any, Any, Any]:
    """(indptr, items, targets or None) as int64 / ``dtype`` arrays, or tensors on ``dev``.

    Input on the host (scipy CSR, numpy arrays, CPU tensors) is validated there
    by ``as_csr`` (then copied to ``dev``). CUDA tensors stay where they are:
    the CUDA kernels check offsets and ids on the device, with the CPU
    kernel's messages (ValueError / IndexError).
    """
    on_device = dev is not None and isinstance(x, tuple) and any(_gpu.is_cuda_tensor(v) for v in x)
    if not on_device:
        csr = _task_csr(x, name, n_users, n_items, with_targets=with_targets)
        parts = [csr.indptr, csr.indices, None]
        if with_targets:
            parts[2] = np.ascontiguousarray(csr.data.astype(np.dtype(dtype_name(dtype)), copy=False))
        if dev is None:
            return parts[0], parts[1], parts[2]
        import torch

        return tuple(None if p is None else torch.from_numpy(p).to(dev) for p in parts)  # type: ignore[return-value]
    if len(x) not in (2, 3):
        raise TypeError(f"{name} must be an (indptr, items{', targets' if with_targets else ''}) tuple")
    indptr = as_index_array(x[0], f"{name}.indptr", device=dev)
    items = as_index_array(x[1], f"{name}.indices", device=dev)  # ids: checked by the kernel
    if indptr.shape[0] != n_users + 1:
        raise ValueError(f"{name}.indptr must have {n_users + 1} entries, got {indptr.shape[0]}")
    targets = None
    if with_targets:
        if len(x) != 3 or x[2] is None:
            raise ValueError(f"{name} needs targets: a CSR matrix with data or (indptr, items, targets)")
        targets = as_float_array(x[2], f"{name}.data", 1, device=dev).to(dtype)
        if targets.shape[0] != items.shape[0]:
            raise ValueError(f"{name}.data has {targets.shape[0]} entries, indices {items.shape[0]}")
    return indptr, items, targets


def _cuda_batch(H: Any, c: Any, tasks: dict[str, Any], p0: Any, b0: Any, per_user: bool,
                alpha_p: Any, alpha_b: float, steps: int, l2: float, loss: str) -> dict[str, Any]:
    """The LinearHeadBatch fields for the CUDA module (device pointers + host scalars)."""
    d = int(H.shape[1])
    return {
        "H": _gpu.ptr(H), "c": _gpu.ptr(c), "n_items": int(H.shape[0]), "d": d,
        "n_users": int(tasks["s_indptr"].shape[0]) - 1,
        "support_indptr": _gpu.ptr(tasks["s_indptr"]), "support_items": _gpu.ptr(tasks["s_items"]),
        "support_targets": _gpu.ptr(tasks["s_targets"]),
        "query_indptr": _gpu.ptr(tasks["q_indptr"]), "query_items": _gpu.ptr(tasks["q_items"]),
        "p0": _gpu.ptr(p0), "b0": _gpu.ptr(b0), "per_user_theta0": bool(per_user),
        "alpha_p": _gpu.ptr(alpha_p), "alpha_per_parameter": int(alpha_p.numel()) == d and d > 1,
        "alpha_b": float(alpha_b), "steps": int(steps), "l2": float(l2), "loss": str(loss),
    }


def _check_launch_args(H: Any, c: Any, tasks: dict[str, Any], p0: Any, b0: Any, per_user: bool,
                       alpha_p: Any) -> None:
    """Shapes, dtypes, devices and contiguity of the launchers' tensors (a bad
    pointer would be undefined behaviour on the GPU, so this is not optional)."""
    import torch

    if H.ndim != 2:
        raise ValueError(f"H must be 2-d, got shape {tuple(H.shape)}")
    if dtype_name(H) not in ("float32", "float64"):
        raise TypeError(f"H must be float32 or float64, got {H.dtype}")
    n_items, d = H.shape
    n_users = tasks["s_indptr"].shape[0] - 1
    n_theta = n_users if per_user else 1
    want = {
        "c": (c, H.dtype, (n_items,)),
        "p0": (p0, H.dtype, (n_theta, d)),
        "b0": (b0, H.dtype, (n_theta,)),
        "alpha_p": (alpha_p, H.dtype, None),
        "s_indptr": (tasks["s_indptr"], torch.int64, (n_users + 1,)),
        "q_indptr": (tasks["q_indptr"], torch.int64, (n_users + 1,)),
        "s_items": (tasks["s_items"], torch.int64, None),
        "q_items": (tasks["q_items"], torch.int64, None),
        "s_targets": (tasks["s_targets"], H.dtype, tuple(tasks["s_items"].shape)),
    }
    for name, (t, dtype, shape) in want.items():
        if t.dtype != dtype:
            raise TypeError(f"{name} must have dtype {dtype} like H, got {t.dtype}")
        if t.device != H.device:
            raise ValueError(f"{name} is on {t.device}, H on {H.device}")
        if shape is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if tasks["s_items"].ndim != 1 or tasks["q_items"].ndim != 1:
        raise ValueError("support and query items must be 1-d")
    if alpha_p.numel() not in (1, d):
        raise ValueError(f"alpha_p must have 1 or {d} entries, got {alpha_p.numel()}")
    if not (H.is_contiguous() and c.is_contiguous()):
        raise ValueError("H and c must be contiguous")


def cuda_linear_head_forward(H: Any, c: Any, tasks: dict[str, Any], p0: Any, b0: Any, per_user: bool,
                             alpha_p: Any, alpha_b: float, steps: int, l2: float,
                             loss: str) -> tuple[Any, Any]:
    """The inner loop on H's GPU: ``(trajectory [n_users, steps+1, d+1], query_pred [nnz_q])``.

    ``tasks`` holds the CSR arrays as CUDA tensors (``s_indptr``, ``s_items``,
    ``s_targets``, ``q_indptr``, ``q_items``); ``p0`` is ``[n_theta, d]``,
    ``b0`` ``[n_theta]``, ``alpha_p`` ``[1]`` or ``[d]``, all contiguous on H's
    device with H's dtype. Runs on the current stream.
    """
    mod = _gpu.cuda_module()
    import torch

    _check_launch_args(H, c, tasks, p0, b0, per_user, alpha_p)
    n_users, d = int(tasks["s_indptr"].shape[0]) - 1, int(H.shape[1])
    trajectory = torch.empty((n_users, steps + 1, d + 1), dtype=H.dtype, device=H.device)
    query_pred = torch.empty(int(tasks["q_items"].shape[0]), dtype=H.dtype, device=H.device)
    mod.linear_head_forward(
        dtype_name(H), _cuda_batch(H, c, tasks, p0, b0, per_user, alpha_p, alpha_b, steps, l2, loss),
        int(tasks["s_items"].shape[0]), int(tasks["q_items"].shape[0]),
        _gpu.ptr(trajectory), _gpu.ptr(query_pred), *_gpu.launch_context(H.device),
    )
    return trajectory, query_pred


def cuda_linear_head_backward(H: Any, c: Any, tasks: dict[str, Any], p0: Any, b0: Any, per_user: bool,
                              alpha_p: Any, alpha_b: float, steps: int, l2: float, loss: str,
                              trajectory: Any, grad_query_pred: Any, second_order: bool,
                              alpha_grad: bool = True) -> dict[str, Any]:
    """Exact gradients of ``sum(grad_query_pred * query_pred)`` on the GPU.

    Same arguments as :func:`cuda_linear_head_forward` plus its trajectory;
    returns CUDA tensors ``{"p0": [n_theta, d], "b0": [n_theta], "alpha_p": [1]
    or [d], "alpha_b": [1], "H": [n_items, d], "c": [n_items]}`` (alpha zeros
    unless ``alpha_grad``).
    """
    mod = _gpu.cuda_module()
    import torch

    _check_launch_args(H, c, tasks, p0, b0, per_user, alpha_p)
    n_users, d = int(tasks["s_indptr"].shape[0]) - 1, int(H.shape[1])
    grad_query_pred = grad_query_pred.to(dtype=H.dtype).contiguous()
    if tuple(trajectory.shape) != (n_users, steps + 1, d + 1) or trajectory.dtype != H.dtype \
            or trajectory.device != H.device or not trajectory.is_contiguous():
        raise ValueError("trajectory does not come from this batch's forward")
    if tuple(grad_query_pred.shape) != tuple(tasks["q_items"].shape) or grad_query_pred.device != H.device:
        raise ValueError("grad_query_pred must have one entry per query item, on H's device")
    kw = dict(dtype=H.dtype, device=H.device)
    n_alpha = d if (alpha_p.numel() == d and d > 1) else 1
    out = {
        "p0": torch.empty(tuple(p0.shape), **kw), "b0": torch.empty(tuple(b0.shape), **kw),
        "alpha_p": torch.empty(n_alpha, **kw), "alpha_b": torch.empty(1, **kw),
        "H": torch.empty(tuple(H.shape), **kw), "c": torch.empty(tuple(c.shape), **kw),
    }
    mod.linear_head_backward(
        dtype_name(H), _cuda_batch(H, c, tasks, p0, b0, per_user, alpha_p, alpha_b, steps, l2, loss),
        int(tasks["s_items"].shape[0]), int(tasks["q_items"].shape[0]),
        _gpu.ptr(trajectory), _gpu.ptr(grad_query_pred), bool(second_order), bool(alpha_grad),
        {k: _gpu.ptr(v) for k, v in out.items()}, *_gpu.launch_context(H.device),
    )
    return out
