"""MetaMF: item embeddings + a per-user linear head adapted in the inner loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from .base import LOSSES, MetaModel

if TYPE_CHECKING:
    from ..meta.batch import TaskBatch


class MetaMF(MetaModel):
    """Matrix factorisation whose user side is learned to adapt.

    Prediction for item ``i`` with head ``(p, b)``::

        y_hat = p . h_i + b + c_i,   h_i = item_embedding[i],
        c_i = item_bias[i] + global_bias

    (a logit for ``loss="logistic"``). The body (``item_embedding``,
    ``item_bias``, ``global_bias``) is shared; the head ``(head_p, head_b)`` is
    the meta-learned initialisation ``theta_0`` of every user's model. With
    ``user_feature_dim`` set, ``theta_0`` is conditioned on the user's features
    (``theta_0(u) = head + W x_u``, as MAMO/TaNP do), so that a new user starts
    from a model that already reflects what is known about them.

    This is the model family the C++ fast path covers (DESIGN.md).
    """

    adapted_names = ("head_p", "head_b")
    penalised_names = ("head_p",)

    def __init__(
        self,
        n_items: int,
        dim: int = 32,
        loss: str = "mse",
        user_feature_dim: int | None = None,
        init_scale: float = 0.1,
        global_bias: float = 0.0,
        random_state: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if n_items <= 0:
            raise ValueError(f"n_items must be positive, got {n_items}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        self.n_items = n_items
        self.dim = dim
        gen = torch.Generator().manual_seed(random_state) if random_state is not None else None
        kw = dict(dtype=dtype)
        self.item_embedding = nn.Parameter(torch.randn(n_items, dim, generator=gen, **kw) * init_scale)
        self.item_bias = nn.Parameter(torch.zeros(n_items, **kw))
        self.global_bias = nn.Parameter(torch.tensor(float(global_bias), **kw))
        self.head_p = nn.Parameter(torch.randn(dim, generator=gen, **kw) * init_scale)
        self.head_b = nn.Parameter(torch.zeros((), **kw))
        self.user_feature_dim = user_feature_dim
        if user_feature_dim:
            # Zero-initialised so training starts from the unconditioned model.
            self.init_net = nn.Linear(user_feature_dim, dim + 1, **kw)
            nn.init.zeros_(self.init_net.weight)
            nn.init.zeros_(self.init_net.bias)
        else:
            self.init_net = None

    def item_representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(H [n_items, d], c [n_items])``: what the C++ kernels and serving consume."""
        return self.item_embedding, self.item_bias + self.global_bias

    def forward(
        self, items: torch.Tensor, user_features: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        h = self.item_embedding[items]
        c = self.item_bias[items] + self.global_bias
        return h @ self.head_p + self.head_b + c

    def initial_adapted(
        self, names: tuple[str, ...], batch: "TaskBatch"
    ) -> dict[str, torch.Tensor]:
        init = super().initial_adapted(names, batch)
        if self.init_net is None:
            return init
        if batch.user_features is None:
            raise ValueError("this MetaMF conditions theta_0 on user features; the batch has none")
        shift = self.init_net(batch.user_features.to(self.head_p.dtype))
        if "head_p" in init:
            init["head_p"] = init["head_p"] + shift[:, : self.dim]
        if "head_b" in init:
            init["head_b"] = init["head_b"] + shift[:, self.dim]
        return init
