"""The reference inner loop (``engine="torch"``), batched over tasks with torch.func.

For each task ``u`` of a meta-batch, starting from ``theta_0(u)``::

    theta_{t+1} = theta_t - alpha * grad_theta [ mean_{i in S_u} loss(f(i; theta_t), y_i)
                                                 + l2/2 * ||theta_t[penalised]||^2 ]

``vmap`` vectorises over tasks (padding is masked out), ``grad`` gives the
per-task gradient, and because torch.func composes with autograd the adapted
parameters stay differentiable with respect to ``theta_0``, ``alpha`` and the
body: the second-order MAML gradient is exact. ``first_order=True`` detaches
the inner gradients (first-order MAML / Reptile).
"""

from __future__ import annotations

from typing import Mapping, Union

import torch
from torch.func import functional_call, grad, vmap

from ..models.base import MetaModel, pointwise_loss, query_objective_losses
from .batch import TaskBatch

InnerLR = Union[float, torch.Tensor, Mapping[str, torch.Tensor]]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` along the last axis (0 for an empty set)."""
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def _body_params(model: MetaModel, adapted: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if n not in adapted}


def task_predictions(
    model: MetaModel,
    adapted: Mapping[str, torch.Tensor],
    items: torch.Tensor,
    user_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predictions ``[B, n]`` for each task's items under its own adapted parameters."""
    names = tuple(adapted)
    body = _body_params(model, names)

    def one(theta: dict[str, torch.Tensor], it: torch.Tensor, uf: torch.Tensor | None) -> torch.Tensor:
        return functional_call(model, (body, theta), (it,), {"user_features": uf})

    in_uf = 0 if user_features is not None else None
    return vmap(one, in_dims=(0, 0, in_uf))(dict(adapted), items, user_features)


def adapt(
    model: MetaModel,
    batch: TaskBatch,
    steps: int,
    inner_lr: InnerLR,
    l2: float = 0.0,
    names: tuple[str, ...] | None = None,
    first_order: bool = False,
    init: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``steps`` inner gradient steps on every task's support set.

    Args:
        model: the model; only the parameters in ``names`` are adapted.
        batch: the tasks (padded support sets with masks).
        steps: number of inner steps ``T >= 0``.
        inner_lr: scalar ``alpha``, or one tensor per adapted parameter (Meta-SGD),
            shaped like that parameter.
        l2: inner-loop L2 strength on ``model.penalised_names``.
        names: parameters to adapt (default ``model.adapted_names``).
        first_order: detach the inner gradients (FOMAML / Reptile).
        init: per-task starting values (default ``model.initial_adapted``).

    Returns:
        The adapted parameters, each with a leading task dimension ``B``.
    """
    names = tuple(names or model.adapted_names)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    theta = dict(init) if init is not None else model.initial_adapted(names, batch)
    if steps == 0:
        return theta
    body = _body_params(model, names)
    penalised = tuple(n for n in names if n in model.penalised_names)
    kind = model.loss

    def support_loss(
        th: dict[str, torch.Tensor],
        items: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        uf: torch.Tensor | None,
    ) -> torch.Tensor:
        pred = functional_call(model, (body, th), (items,), {"user_features": uf})
        loss = masked_mean(pointwise_loss(kind, pred, target), mask)
        if l2 and penalised:
            loss = loss + 0.5 * l2 * sum((th[n] ** 2).sum() for n in penalised)
        return loss

    in_uf = 0 if batch.user_features is not None else None
    per_task_grad = vmap(grad(support_loss), in_dims=(0, 0, 0, 0, in_uf))
    for _ in range(steps):
        g = per_task_grad(
            theta, batch.support_items, batch.support_ratings, batch.support_mask, batch.user_features
        )
        new = {}
        for n in names:
            step = g[n].detach() if first_order else g[n]
            lr = inner_lr[n] if isinstance(inner_lr, Mapping) else inner_lr
            new[n] = theta[n] - lr * step
        theta = new
    return theta


def query_losses(
    model: MetaModel, adapted: Mapping[str, torch.Tensor], batch: TaskBatch, with_flags: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-task query loss ``[B]`` at the adapted parameters (0 for an empty query),
    under the model's ``query_objective``; with ``with_flags`` also the ``[B]``
    0/1 flags of the tasks that count (a query set, positives for ranking objectives)."""
    pred = task_predictions(model, adapted, batch.query_items, batch.user_features)
    if model.query_objective == "pointwise":
        losses = masked_mean(pointwise_loss(model.loss, pred, batch.query_ratings), batch.query_mask)
        return (losses, (batch.query_mask.sum(-1) > 0).to(losses.dtype)) if with_flags else losses
    rows, cols = torch.nonzero(batch.query_mask > 0, as_tuple=True)
    losses, flags = query_objective_losses(model.loss, model.query_objective, pred[rows, cols],
                                           batch.query_ratings[rows, cols], rows, batch.n_tasks,
                                           n_items=getattr(model, "n_items", None))
    return (losses, flags) if with_flags else losses
