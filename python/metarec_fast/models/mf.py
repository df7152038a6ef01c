"""MetaMF: item embeddings + a per-user linear head adapted in the inner loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from .base import LOSSES, QUERY_OBJECTIVES, MetaModel

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

    With ``support_encoder=True``, ``theta_0`` is *amortised*: computed from the
    support set itself by a learned set encoder (FISM / CNP / MAMO style), then
    refined by the inner steps. The support items are pooled from their own
    table ``encoder_table`` (:func:`support_features`: the mean of the items'
    vectors and, for ratings, the residual-weighted mean plus a shrunk mean
    residual), and a linear map ``encoder`` (zero-initialised, so training
    starts from the plain model) turns the pooled vector into a shift of
    ``(p, b)``. Every piece is differentiable, so the meta-gradient that the
    inner loop (C++ or torch) returns for a per-user ``theta_0`` flows into the
    encoder.

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
        support_encoder: bool = False,
        query_objective: str = "pointwise",
    ) -> None:
        super().__init__()
        if n_items <= 0:
            raise ValueError(f"n_items must be positive, got {n_items}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if query_objective not in QUERY_OBJECTIVES:
            raise ValueError(f"query_objective must be one of {QUERY_OBJECTIVES}, got {query_objective!r}")
        if query_objective != "pointwise" and loss != "logistic":
            raise ValueError(f"query_objective={query_objective!r} ranks logits: it needs loss='logistic'")
        self.loss = loss
        self.query_objective = query_objective
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
        self.support_encoder = bool(support_encoder)
        if self.support_encoder:
            self.encoder_table = nn.Parameter(torch.randn(n_items, dim, generator=gen, **kw) * init_scale)
            self.encoder = nn.Linear(support_feature_dim(dim, loss), dim + 1, **kw)
            nn.init.zeros_(self.encoder.weight)
            nn.init.zeros_(self.encoder.bias)
            if loss == "mse":
                with torch.no_grad():  # b starts at the shrunk mean residual (a bias model's user bias)
                    self.encoder.weight[dim, 2 * dim] = 1.0
        else:
            self.encoder_table = None
            self.encoder = None

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
        shift = None
        if self.init_net is not None:
            if batch.user_features is None:
                raise ValueError("this MetaMF conditions theta_0 on user features; the batch has none")
            shift = self.init_net(batch.user_features.to(self.head_p.dtype))
        if self.encoder is not None:
            _, c = self.item_representations()
            x = support_features(self.encoder_table, c, batch.support_items, batch.support_ratings,
                                 batch.support_mask, self.loss)
            enc = self.encoder(x)
            shift = enc if shift is None else shift + enc
        if shift is None:
            return init
        if "head_p" in init:
            init["head_p"] = init["head_p"] + shift[:, : self.dim]
        if "head_b" in init:
            init["head_b"] = init["head_b"] + shift[:, self.dim]
        return init

    @classmethod
    def from_pretrained(
        cls,
        source: Any = None,
        *,
        item_embedding: Any = None,
        item_offset: Any = None,
        head_p: Any = None,
        head_b: float | None = None,
        loss: str = "mse",
        user_feature_dim: int | None = None,
        dim: int | None = None,
        init_scale: float = 0.1,
        random_state: int | None = None,
        dtype: torch.dtype = torch.float32,
        support_encoder: bool = False,
        query_objective: str = "pointwise",
    ) -> "MetaMF":
        """A MetaMF whose body (and head) start from a non-meta model ("meta-fine-tuning").

        ``source`` may be a fitted :class:`~metarec_fast.baselines.PretrainFinetune`
        (item vectors ``H``, offsets ``c``, mean user ``(p0, b0)``), a fitted
        :class:`~metarec_fast.baselines.BiasBaseline` (offsets ``mu + b_i``; the
        item table then starts random with scale ``init_scale`` and ``dim``
        columns) or None; the keyword arrays override what ``source`` provides:
        ``item_embedding [n_items, d]``, ``item_offset [n_items]`` (item bias +
        global bias; the global bias is set to its mean), ``head_p [d]``, ``head_b``.
        """
        import numpy as np

        H = c = p0 = None
        b0 = None
        if source is not None:
            if hasattr(source, "H") and hasattr(source, "c"):
                H, c, p0, b0 = source.H, source.c, source.p0, source.b0
            elif hasattr(source, "item_bias") and hasattr(source, "mu"):
                c = float(source.mu) + np.asarray(source.item_bias, dtype=np.float64)
            else:
                raise TypeError(
                    f"cannot read a pretrained model from {type(source).__name__}; pass a fitted "
                    "PretrainFinetune or BiasBaseline, or the arrays as keywords"
                )
        H = item_embedding if item_embedding is not None else H
        c = item_offset if item_offset is not None else c
        p0 = head_p if head_p is not None else p0
        b0 = head_b if head_b is not None else b0
        if H is None and c is None:
            raise ValueError("from_pretrained needs item_embedding and/or item_offset (or a source)")
        H = None if H is None else np.asarray(H, dtype=np.float64)
        c = None if c is None else np.asarray(c, dtype=np.float64)
        if H is not None and H.ndim != 2:
            raise ValueError(f"item_embedding must be [n_items, d], got shape {H.shape}")
        if c is not None and c.ndim != 1:
            raise ValueError(f"item_offset must be [n_items], got shape {c.shape}")
        if H is not None and c is not None and H.shape[0] != c.shape[0]:
            raise ValueError(f"item_embedding has {H.shape[0]} items, item_offset {c.shape[0]}")
        n_items = H.shape[0] if H is not None else c.shape[0]
        d = H.shape[1] if H is not None else (dim or 32)
        if H is not None and dim is not None and dim != d:
            raise ValueError(f"dim={dim} but the pretrained item_embedding has {d} columns")
        for name, arr in (("item_embedding", H), ("item_offset", c)):
            if arr is not None and not np.isfinite(arr).all():
                raise ValueError(f"{name} has NaN or infinite values")
        mu = float(c.mean()) if c is not None else 0.0
        model = cls(n_items, dim=d, loss=loss, user_feature_dim=user_feature_dim, init_scale=init_scale,
                    global_bias=mu, random_state=random_state, dtype=dtype,
                    support_encoder=support_encoder, query_objective=query_objective)
        with torch.no_grad():
            if H is not None:
                model.item_embedding.copy_(torch.as_tensor(H, dtype=dtype))
                if model.encoder_table is not None:  # pool the pretrained item factors
                    model.encoder_table.copy_(torch.as_tensor(H, dtype=dtype))
            if c is not None:
                model.item_bias.copy_(torch.as_tensor(c - mu, dtype=dtype))
            if p0 is not None:
                p0 = torch.as_tensor(np.asarray(p0, dtype=np.float64), dtype=dtype)
                if p0.shape != (d,):
                    raise ValueError(f"head_p must have shape ({d},), got {tuple(p0.shape)}")
                model.head_p.copy_(p0)
            if b0 is not None:
                model.head_b.fill_(float(b0))
        return model


#: Prior strength of the shrunk mean residual ``sum(r - c) / (n + SHRINK)``.
SUPPORT_SHRINK = 5.0


def support_feature_dim(dim: int, loss: str) -> int:
    """Width of :func:`support_features`' output for an encoder table of ``dim`` columns."""
    return dim if loss == "logistic" else 2 * dim + 1


def support_features(table: torch.Tensor, offsets: torch.Tensor, items: torch.Tensor,
                     targets: torch.Tensor, mask: torch.Tensor, loss: str) -> torch.Tensor:
    """Pooled support-set features ``[B, F]`` for an amortised ``theta_0``.

    Padded support sets (``items``/``targets``/``mask`` ``[B, n]``). With
    ``loss="logistic"`` only the positives (target > 0) are pooled: the mean of
    their rows of ``table``. With ratings: ``[mean_i e_i, mean_i (r_i - c_i) e_i,
    sum_i (r_i - c_i) / (n + SUPPORT_SHRINK)]`` where ``c_i`` = ``offsets[i]``
    (item bias + global bias), so the encoder sees which items a user chose and
    how they deviate from the items' usual ratings. An empty set pools to zeros.
    :meth:`~metarec_fast.serving.Recommender.initial_state` computes the same in
    numpy with the embedding-bag kernel.
    """
    mask = mask.to(table.dtype)
    e = table[items]
    if loss == "logistic":
        w = mask * (targets > 0).to(table.dtype)
        return (w.unsqueeze(-1) * e).sum(1) / w.sum(1, keepdim=True).clamp_min(1.0)
    n = mask.sum(1, keepdim=True)
    resid = (targets.to(table.dtype) - offsets[items]) * mask
    mean_e = (mask.unsqueeze(-1) * e).sum(1) / n.clamp_min(1.0)
    mean_re = (resid.unsqueeze(-1) * e).sum(1) / n.clamp_min(1.0)
    shrunk = resid.sum(1, keepdim=True) / (n + SUPPORT_SHRINK)
    return torch.cat([mean_e, mean_re, shrunk], 1)
