"""What a model must provide for the meta-learners to adapt it."""

from __future__ import annotations

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
    """

    adapted_names: tuple[str, ...] = ()
    penalised_names: tuple[str, ...] = ()
    loss: str = "mse"

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
