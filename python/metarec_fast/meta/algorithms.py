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

from ..models.base import MetaModel, pointwise_loss, query_objective_losses
from .batch import TaskBatch
from .inner import adapt, query_losses

ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd")
ENGINES = ("auto", "cpp", "torch")
LINEAR_HEAD = ("head_p", "head_b")
TASK_WEIGHTINGS = ("task", "interaction")


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
        engine: ``"cpp"`` runs the inner loop and its exact backward in C++
            (linear-head models such as :class:`~metarec_fast.models.MetaMF`
            adapting ``(head_p, head_b)``), ``"torch"`` uses torch.func (any
            model), ``"auto"`` picks ``"cpp"`` whenever it applies. On a model
            whose tensors are on a CUDA device, ``"cpp"`` runs the CUDA kernels
            (RuntimeError when metarec-fast was built without CUDA).
        task_weighting: how the meta-objective averages the tasks' query losses:
            ``"task"`` (every task counts equally, the usual meta-learning
            objective) or ``"interaction"`` (weighted by query-set size, i.e. the
            pooled query loss that MAE/RMSE over all query interactions measure).

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
        engine: str = "auto",
        task_weighting: str = "task",
    ) -> None:
        super().__init__()
        if task_weighting not in TASK_WEIGHTINGS:
            raise ValueError(f"task_weighting must be one of {TASK_WEIGHTINGS}, got {task_weighting!r}")
        self.task_weighting = task_weighting
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
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
        cpp_ok = hasattr(model, "item_representations") and set(names) == set(LINEAR_HEAD)
        if engine == "cpp" and not cpp_ok:
            raise ValueError(
                f"engine='cpp' needs a linear-head model adapting {LINEAR_HEAD}; "
                f"{type(model).__name__} adapting {names} needs engine='torch'"
            )
        self.engine = "cpp" if (engine == "auto" and cpp_ok) else ("torch" if engine == "auto" else engine)
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
        """Adapted parameters of every task (leading dimension = tasks).

        With the C++ engine the result carries no gradient (use :meth:`forward`
        for the meta-objective).
        """
        steps = self.inner_steps if steps is None else steps
        if self.engine == "cpp":
            from .cpp_engine import linear_head_trajectory

            p0, b0, alpha_p, alpha_b = self._linear_head_inputs(batch)
            H, c = self.model.item_representations()
            traj = linear_head_trajectory(p0, b0, alpha_p, alpha_b, H, c, batch, steps,
                                          self.l2, self.model.loss)
            d = H.shape[1]
            return {"head_p": traj[:, -1, :d], "head_b": traj[:, -1, d]}
        return adapt(
            self.model, batch, steps, self.inner_lr(), l2=self.l2,
            names=self.adapted_names, first_order=self.first_order,
        )

    def _linear_head_inputs(self, batch: TaskBatch):
        """(p0, b0, alpha_p, alpha_b) for the C++ engine: shared or per-task theta_0."""
        model = self.model
        if getattr(model, "init_net", None) is not None or getattr(model, "encoder", None) is not None:
            init = model.initial_adapted(LINEAR_HEAD, batch)
            p0, b0 = init["head_p"], init["head_b"]
        else:
            p0, b0 = model.head_p, model.head_b
        if self.inner_lrs is not None:
            lrs = dict(zip(self.adapted_names, self.inner_lrs))
            return p0, b0, lrs["head_p"], lrs["head_b"]
        return p0, b0, self.base_lr, self.base_lr

    def forward(self, batch: TaskBatch) -> torch.Tensor:
        """Meta-objective: mean query loss over tasks that have a query set."""
        if self.engine == "cpp":
            losses, has_query = self._cpp_query_losses(batch)
        else:
            losses, has_query = query_losses(self.model, self.adapt(batch), batch, with_flags=True)
        return self._reduce(losses, has_query, batch)

    def _reduce(self, losses: torch.Tensor, has_query: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        """Weighted mean of per-task query losses (see ``task_weighting``)."""
        if self.task_weighting == "interaction":
            weights = batch.query_mask.sum(-1).to(device=losses.device, dtype=losses.dtype)
        else:
            weights = has_query
        return (losses * weights).sum() / weights.sum().clamp_min(1.0)

    def _cpp_query_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        from .cpp_engine import linear_head_query_predictions

        p0, b0, alpha_p, alpha_b = self._linear_head_inputs(batch)
        H, c = self.model.item_representations()
        pred, target, rows = linear_head_query_predictions(
            p0, b0, alpha_p, alpha_b, H, c, batch, self.inner_steps, self.l2, self.model.loss,
            second_order=not self.first_order,
        )
        b = batch.n_tasks
        if self.model.query_objective != "pointwise":
            return query_objective_losses(self.model.loss, self.model.query_objective, pred, target, rows, b,
                                          n_items=getattr(self.model, "n_items", None))
        per_entry = pointwise_loss(self.model.loss, pred, target)
        sums = torch.zeros(b, dtype=pred.dtype, device=pred.device).index_add(0, rows, per_entry)
        # Query-set sizes depend on the batch only: counted once per batch,
        # dtype and device (cached on the batch, which is not modified in place).
        key = (pred.dtype, str(pred.device))
        cached = batch.__dict__.get("_query_counts")
        if cached is None or cached[0] != key:
            counts = torch.bincount(rows, minlength=b).to(pred.dtype)
            cached = (key, (counts.clamp_min(1.0), (counts > 0).to(pred.dtype)))
            batch.__dict__["_query_counts"] = cached
        divisor, has_query = cached[1]
        return sums / divisor, has_query

    def meta_backward(self, batch: TaskBatch) -> float:
        """Accumulate the meta-gradient of ``batch`` into ``.grad``; return the meta-loss."""
        if self.algorithm != "reptile":
            loss = self(batch)
            loss.backward()
            return float(loss.detach())
        init = self.model.initial_adapted(self.adapted_names, batch)
        theta_t = {n: t.detach() for n, t in self.adapt(batch).items()}
        losses, has_query = query_losses(self.model, theta_t, batch, with_flags=True)
        body_loss = self._reduce(losses, has_query, batch)
        b = batch.n_tasks
        # d(surrogate)/d(theta_0(u)) = (theta_0(u) - theta_T(u)) / B: Reptile's direction,
        # carried through a conditioned initialisation by autograd.
        surrogate = sum(
            (init[n] * (init[n].detach() - theta_t[n]) / b).sum() for n in self.adapted_names
        )
        (body_loss + surrogate).backward()
        return float(body_loss.detach())
