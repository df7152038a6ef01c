"""MAML (exact second order), first-order MAML, Reptile and Meta-SGD.

Each is a :class:`MetaLearner` around a :class:`~metarec_fast.models.MetaModel`;
"adapt only these parameters" (ANIL / MeLU) is the ``adapt`` argument of any of
them (default: the model's head). One call to :meth:`MetaLearner.meta_backward`
computes the meta-gradient of a meta-batch into the ``.grad`` of the
meta-parameters; an ordinary torch optimiser then takes the outer step.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..models.base import MetaModel
from .batch import TaskBatch
from .inner import adapt, query_losses

ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd")


class MetaLearner(nn.Module):
    """A meta-learning algorithm bound to a model.

    Args:
        model: the model whose initialisation is meta-learned.
        algorithm: ``"maml"`` (second-order, exact), ``"fomaml"`` (first-order),
            ``"reptile"`` or ``"metasgd"`` (per-parameter inner learning rates,
            meta-learned, second-order).
        inner_steps: inner gradient steps ``T`` (>= 0; Reptile needs >= 1).
        inner_lr: the inner learning rate ``alpha`` (Meta-SGD's initial value).
        l2: inner-loop L2 on the model's penalised head parameters.
        adapt: names of the parameters adapted per task (default: the model's
            ``adapted_names``); everything else is the shared body.

    Reptile's outer gradient for ``theta_0`` is ``theta_0 - theta_T`` averaged
    over tasks (so plain SGD with learning rate ``eps`` is Reptile's
    ``theta_0 += eps * (theta_T - theta_0)``); the body, which the inner loop
    does not adapt, receives the first-order query-loss gradient at ``theta_T``.
    """

    def __init__(
        self,
        model: MetaModel,
        algorithm: str = "maml",
        inner_steps: int = 5,
        inner_lr: float = 0.1,
        l2: float = 0.0,
        adapt: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 0:
            raise ValueError(f"inner_steps must be an int >= 0, got {inner_steps!r}")
        if algorithm == "reptile" and inner_steps == 0:
            raise ValueError("reptile needs inner_steps >= 1 (its update is theta_T - theta_0)")
        if not inner_lr > 0:
            raise ValueError(f"inner_lr must be positive, got {inner_lr!r}")
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}")
        names = tuple(adapt) if adapt is not None else tuple(model.adapted_names)
        params = dict(model.named_parameters())
        missing = [n for n in names if n not in params]
        if missing or not names:
            raise ValueError(
                f"parameters to adapt {missing or names} not found in {type(model).__name__}; "
                f"it has {sorted(params)}"
            )
        self.model = model
        self.algorithm = algorithm
        self.inner_steps = inner_steps
        self.l2 = float(l2)
        self.adapted_names = names
        self.base_lr = float(inner_lr)
        if algorithm == "metasgd":
            # One learnable rate per adapted scalar, initialised at inner_lr.
            self.inner_lrs = nn.ParameterList(
                [nn.Parameter(torch.full_like(params[n].detach(), float(inner_lr))) for n in names]
            )
        else:
            self.inner_lrs = None

    @property
    def first_order(self) -> bool:
        return self.algorithm in ("fomaml", "reptile")

    def inner_lr(self) -> float | dict[str, torch.Tensor]:
        """The inner learning rate(s) as :func:`~metarec_fast.meta.inner.adapt` takes them."""
        if self.inner_lrs is None:
            return self.base_lr
        return dict(zip(self.adapted_names, self.inner_lrs))

    def adapt(self, batch: TaskBatch, steps: int | None = None) -> dict[str, torch.Tensor]:
        """Adapted parameters of every task (leading dimension = tasks)."""
        return adapt(
            self.model,
            batch,
            self.inner_steps if steps is None else steps,
            self.inner_lr(),
            l2=self.l2,
            names=self.adapted_names,
            first_order=self.first_order,
        )

    def forward(self, batch: TaskBatch) -> torch.Tensor:
        """Meta-objective: mean query loss over tasks that have a query set."""
        losses = query_losses(self.model, self.adapt(batch), batch)
        has_query = (batch.query_mask.sum(-1) > 0).to(losses.dtype)
        return (losses * has_query).sum() / has_query.sum().clamp_min(1.0)

    def meta_backward(self, batch: TaskBatch) -> float:
        """Accumulate the meta-gradient of ``batch`` into ``.grad``; return the meta-loss."""
        if self.algorithm != "reptile":
            loss = self(batch)
            loss.backward()
            return float(loss.detach())
        init = self.model.initial_adapted(self.adapted_names, batch)
        theta_t = adapt(
            self.model, batch, self.inner_steps, self.inner_lr(), l2=self.l2,
            names=self.adapted_names, first_order=True, init=init,
        )
        theta_t = {n: t.detach() for n, t in theta_t.items()}
        losses = query_losses(self.model, theta_t, batch)
        has_query = (batch.query_mask.sum(-1) > 0).to(losses.dtype)
        body_loss = (losses * has_query).sum() / has_query.sum().clamp_min(1.0)
        b = batch.n_tasks
        # d(surrogate)/d(theta_0(u)) = (theta_0(u) - theta_T(u)) / B: Reptile's direction,
        # carried through a conditioned initialisation by autograd.
        surrogate = sum(
            (init[n] * (init[n].detach() - theta_t[n]) / b).sum() for n in self.adapted_names
        )
        (body_loss + surrogate).backward()
        return float(body_loss.detach())
