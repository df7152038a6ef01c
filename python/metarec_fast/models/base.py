"""What a model must provide for the meta-learners to adapt it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from ..ops.adapt import LOSSES  # one list of losses for training and serving

if TYPE_CHECKING:
    from ..meta.batch import TaskBatch


class MetaModel(nn.Module):
    """Base class of the models the meta-learners adapt.

    A subclass implements :meth:`forward` for *one task* (a 1-d tensor of item
    ids, optionally the user's feature vector) and names the parameters the
    inner loop adapts by default (:attr:`adapted_names`, the "head"). The
    inner loop substitutes per-task values for those parameters through
    ``torch.func.functional_call`` and vectorises over tasks with ``vmap``.

    Attributes:
        adapted_names: parameters adapted per task by default (ANIL/MeLU style).
        penalised_names: adapted parameters that carry the inner-loop L2 penalty.
        loss: ``"mse"`` for explicit ratings or ``"logistic"`` for implicit
            feedback (targets 0/1, predictions are logits).
        query_objective: the meta-objective on each task's query set:
            ``"pointwise"`` (``loss`` per interaction), or for logistic models the
            ranking objectives ``"softmax"`` (sampled softmax: each positive
            against all of the task's query entries) and ``"bpr"`` (every
            positive against every negative), see :func:`query_objective_losses`.
    """

    adapted_names: tuple[str, ...] = ()
    penalised_names: tuple[str, ...] = ()
    loss: str = "mse"
    query_objective: str = "pointwise"

    def forward(  # pragma: no cover - abstract
        self, items: torch.Tensor, user_features: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def initial_adapted(
        self, names: tuple[str, ...], batch: "TaskBatch"
    ) -> dict[str, torch.Tensor]:
        """Per-task starting values ``theta_0`` (leading task dimension ``B``).

        The default broadcasts the shared meta-learned parameters; models with
        user-conditioned initialisation override it. The result must stay
        differentiable with respect to the meta-parameters.
        """
        params = dict(self.named_parameters())
        b = batch.n_tasks
        return {n: params[n].unsqueeze(0).expand(b, *params[n].shape) for n in names}


def pointwise_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-interaction loss: squared error, or logistic loss on logits."""
    if kind == "mse":
        return (pred - target) ** 2
    if kind == "logistic":
        return nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none")
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")


QUERY_OBJECTIVES = ("pointwise", "softmax", "bpr")


def query_objective_losses(kind: str, objective: str, pred: torch.Tensor, target: torch.Tensor,
                           rows: torch.Tensor, n_tasks: int,
                           n_items: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task query losses ``[B]`` and a ``[B]`` 0/1 "has a query" flag.

    ``pred``/``target``/``rows``: the query entries of all tasks, flat (``rows`` =
    task of each entry, non-decreasing: each task's entries are contiguous).
    ``"pointwise"``: the mean of :func:`pointwise_loss`.
    ``"softmax"``: ``mean over positives p of logsumexp(task's preds) - pred_p``
    (multinomial likelihood of the positives). With ``n_items``, the task's
    negatives are taken as a uniform sample of its ``n_items - n_pos``
    non-positive items and their logits get ``+log((n_items - n_pos) / n_neg)``
    (the logQ correction), so the loss estimates the full-catalogue softmax.
    ``"bpr"``: ``mean over (positive, negative) pairs of softplus(pred_n - pred_p)``.
    Positives are entries with target > 0; a task without one (or, for BPR,
    without a negative) contributes 0 and has_query = 0.
    """
    dtype, device = pred.dtype, pred.device
    counts = torch.bincount(rows, minlength=n_tasks)
    if objective == "pointwise":
        sums = torch.zeros(n_tasks, dtype=dtype, device=device).index_add(0, rows, pointwise_loss(kind, pred, target))
        return sums / counts.clamp_min(1).to(dtype), (counts > 0).to(dtype)
    if objective not in QUERY_OBJECTIVES:
        raise ValueError(f"query_objective must be one of {QUERY_OBJECTIVES}, got {objective!r}")
    is_pos = target > 0
    if objective == "softmax":
        scores, _ = _pad_tasks(pred, rows, None, n_tasks, fill=-math.inf)
        pos, _ = _pad_tasks(is_pos.to(dtype), rows, None, n_tasks)
        n_pos = pos.sum(1)
        if n_items is not None:
            n_neg = counts.to(dtype) - n_pos
            shift = torch.log((n_items - n_pos).clamp_min(1.0) / n_neg.clamp_min(1.0))
            scores = scores + (1.0 - pos) * shift.unsqueeze(1)
        lse = torch.logsumexp(scores, 1, keepdim=True)
        per_pos = torch.where(pos > 0, lse - scores, torch.zeros((), dtype=dtype, device=device))
        return per_pos.sum(1) / n_pos.clamp_min(1.0), (n_pos > 0).to(dtype)
    # Positives and negatives padded apart: pairs[t, p, n] = softplus(s_n - s_p).
    s_pos, m_pos = _pad_tasks(pred, rows, is_pos, n_tasks)
    s_neg, m_neg = _pad_tasks(pred, rows, ~is_pos, n_tasks)
    pairs = nn.functional.softplus(s_neg.unsqueeze(1) - s_pos.unsqueeze(2))
    weight = m_pos.unsqueeze(2) * m_neg.unsqueeze(1)
    n_pairs = weight.sum((1, 2))
    return (pairs * weight).sum((1, 2)) / n_pairs.clamp_min(1.0), (n_pairs > 0).to(dtype)


def _pad_tasks(values: torch.Tensor, rows: torch.Tensor, keep: torch.Tensor | None, n_tasks: int,
               fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept entries of each task (``rows`` non-decreasing) as ``[B, L]`` with ``fill``
    in the padding, and the 0/1 mask of real entries."""
    if keep is not None:
        values, rows = values[keep], rows[keep]
    n = torch.bincount(rows, minlength=n_tasks)
    col = torch.arange(rows.shape[0], device=values.device) - (torch.cumsum(n, 0) - n)[rows]
    width = int(n.max()) if rows.numel() else 0
    padded = torch.full((n_tasks, width), fill, dtype=values.dtype, device=values.device)
    mask = torch.zeros((n_tasks, width), dtype=values.dtype, device=values.device)
    return padded.index_put((rows, col), values), mask.index_put((rows, col), torch.ones_like(values))
