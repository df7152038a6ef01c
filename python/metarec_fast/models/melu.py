"""MeLU (Lee et al., KDD 2019): feature embeddings + MLP decision layers.

Users and items are described only by side features, which is what lets the
model score a user or an item it never saw. The inner loop adapts only the
decision layers (MeLU's "local update"); the embeddings are the shared body.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .base import LOSSES, MetaModel


class MeLU(MetaModel):
    """MeLU's architecture with configurable features and widths.

    Args:
        item_categorical: ``[n_items, C]`` integer codes of single-valued item
            features (e.g. age certificate, director), column ``j`` in
            ``[0, item_cardinalities[j])``.
        item_cardinalities: number of codes of each of those columns.
        item_multi: optional multi-valued item features (e.g. genres) as
            ``(indptr, codes)`` CSR over items, codes in ``[0, multi_cardinality)``;
            pooled by their mean embedding.
        multi_cardinality: number of multi-valued codes.
        user_cardinalities: number of codes of each categorical user feature;
            a task's user features are a ``[len(user_cardinalities)]`` integer
            vector (``TaskBatch.user_features``).
        embedding_dim: width of every feature embedding (MeLU: 32).
        hidden: widths of the decision layers (MeLU: (64, 64)).
        loss: ``"mse"`` (ratings) or ``"logistic"`` (implicit feedback).
        rating_offset: added to the output so that training starts near the
            mean rating.
    """

    def __init__(
        self,
        item_categorical: np.ndarray,
        item_cardinalities: Sequence[int],
        user_cardinalities: Sequence[int],
        item_multi: tuple[np.ndarray, np.ndarray] | None = None,
        multi_cardinality: int = 0,
        embedding_dim: int = 32,
        hidden: Sequence[int] = (64, 64),
        loss: str = "mse",
        rating_offset: float = 0.0,
        random_state: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if random_state is not None:
            torch.manual_seed(random_state)
        self.loss = loss
        cat = torch.as_tensor(np.asarray(item_categorical), dtype=torch.int64)
        if cat.ndim != 2 or cat.shape[1] != len(item_cardinalities):
            raise ValueError(
                f"item_categorical must be [n_items, {len(item_cardinalities)}], got {tuple(cat.shape)}"
            )
        for j, card in enumerate(item_cardinalities):
            if cat.numel() and (cat[:, j].min() < 0 or cat[:, j].max() >= card):
                raise IndexError(f"item_categorical column {j} has codes outside [0, {card})")
        self.n_items = int(cat.shape[0])
        self.register_buffer("item_codes", cat, persistent=False)
        self.item_embeddings = nn.ModuleList(
            nn.Embedding(c, embedding_dim, dtype=dtype) for c in item_cardinalities
        )
        self.user_embeddings = nn.ModuleList(
            nn.Embedding(c, embedding_dim, dtype=dtype) for c in user_cardinalities
        )
        width = embedding_dim * (len(item_cardinalities) + len(user_cardinalities))
        if item_multi is not None:
            indptr, codes = (np.asarray(a, dtype=np.int64) for a in item_multi)
            if indptr.shape[0] != self.n_items + 1:
                raise ValueError(f"item_multi indptr must have {self.n_items + 1} entries")
            if codes.size and (codes.min() < 0 or codes.max() >= multi_cardinality):
                raise IndexError(f"item_multi codes outside [0, {multi_cardinality})")
            lengths = np.diff(indptr)
            max_len = max(int(lengths.max(initial=0)), 1)
            padded = np.zeros((self.n_items, max_len), dtype=np.int64)
            mask = np.zeros((self.n_items, max_len))
            rows = np.repeat(np.arange(self.n_items), lengths)
            cols = np.arange(codes.size) - np.repeat(indptr[:-1], lengths)
            padded[rows, cols] = codes
            mask[rows, cols] = 1.0
            self.register_buffer("multi_codes", torch.as_tensor(padded), persistent=False)
            self.register_buffer("multi_mask", torch.as_tensor(mask, dtype=dtype), persistent=False)
            self.multi_embedding = nn.Embedding(multi_cardinality, embedding_dim, dtype=dtype)
            width += embedding_dim
        else:
            self.multi_embedding = None
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h, dtype=dtype), nn.ReLU()]
            width = h
        self.decision = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1, dtype=dtype)
        self.rating_offset = float(rating_offset)
        self.adapted_names = tuple(
            n for n, _ in self.named_parameters() if n.startswith(("decision.", "out."))
        )
        self.penalised_names = tuple(n for n in self.adapted_names if n.endswith("weight"))

    @classmethod
    def from_features(
        cls,
        item_features: Any,
        user_features: Any,
        year_bucket: int = 5,
        **kwargs: Any,
    ) -> tuple["MeLU", np.ndarray]:
        """Build MeLU from a dataset's :class:`~metarec_fast.data.Features`.

        Item inputs: every categorical item feature, the first multi-valued one
        (e.g. genres) pooled by mean, and a ``year`` (or ``release_date``)
        numeric feature bucketed into ``year_bucket``-year bins, as MeLU
        embeds the release year. User inputs: every categorical user feature.
        Returns ``(model, user_codes)`` where ``user_codes [n_users, F]`` is
        the ``user_features`` array to give the trainer and scorer.
        """
        from .features import categorical_codes

        codes, cards = categorical_codes(item_features)
        columns, cardinalities = [codes], list(cards)
        year = item_features.numeric.get("year")
        if year is not None:
            y = np.asarray(year, dtype=np.float64).reshape(-1)
            ok = np.isfinite(y)
            lo = np.nanmin(y) if ok.any() else 0.0
            bucket = np.where(ok, (y - lo) // year_bucket, -1).astype(np.int64)
            n_b = int(bucket.max()) + 2 if ok.any() else 1
            columns.append(np.where(bucket < 0, n_b - 1, bucket)[:, None])
            cardinalities.append(n_b)
        item_cat = np.concatenate(columns, axis=1)
        multi = next(iter(item_features.multi.items()), None)
        user_codes, user_cards = categorical_codes(user_features)
        model = cls(item_cat, cardinalities, user_cards,
                    item_multi=None if multi is None else multi[1],
                    multi_cardinality=0 if multi is None else item_features.cardinality(multi[0]),
                    **kwargs)
        return model, user_codes

    def forward(
        self, items: torch.Tensor, user_features: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        parts = []
        codes = self.item_codes[items]
        for j, emb in enumerate(self.item_embeddings):
            parts.append(emb(codes[..., j]))
        if self.multi_embedding is not None:
            mask = self.multi_mask[items]
            pooled = (self.multi_embedding(self.multi_codes[items]) * mask.unsqueeze(-1)).sum(-2)
            parts.append(pooled / mask.sum(-1, keepdim=True).clamp_min(1.0))
        if self.user_embeddings:
            if user_features is None:
                raise ValueError("MeLU needs the users' categorical features (TaskBatch.user_features)")
            ucodes = user_features.to(torch.int64)
            for j, emb in enumerate(self.user_embeddings):
                parts.append(emb(ucodes[..., j]).expand(*items.shape, -1))
        x = torch.cat(parts, dim=-1)
        return self.out(self.decision(x)).squeeze(-1) + self.rating_offset
