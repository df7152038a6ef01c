"""Meta-learners as :class:`~metarec_fast.evaluation.Scorer` s: adapt, then score the catalogue."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .algorithms import MetaLearner
from .batch import TaskBatch
from .inner import task_predictions


class MetaScorer:
    """Wraps a trained :class:`MetaLearner` (or :class:`MetaTrainer`) for evaluation.

    ``score(tasks)`` adapts to every task's support set and scores every item:
    linear heads go through the C++ serving path (:class:`~metarec_fast.serving.Recommender`),
    other models through the torch.func engine.
    """

    def __init__(self, learner: Any, name: str | None = None, user_features: Any = None,
                 item_batch: int = 4096) -> None:
        if hasattr(learner, "learner"):  # a MetaTrainer
            user_features = learner.user_features if user_features is None else user_features
            learner = learner.learner
        if not isinstance(learner, MetaLearner):
            raise TypeError(f"expected a MetaLearner or MetaTrainer, got {type(learner).__name__}")
        self.learner = learner
        self.model = learner.model
        self.name = name or f"{type(self.model).__name__.lower()}-{learner.algorithm}"
        self.predicts_ratings = self.model.loss == "mse"
        self.user_features = user_features
        self.item_batch = item_batch

    def score(self, tasks: Any) -> np.ndarray:
        dtype = next(self.model.parameters()).dtype
        if self.learner.engine == "cpp":
            from ..serving import Recommender

            rec = Recommender.from_model(self.model, self.learner, dtype=np.float64)
            s = tasks.support
            uf = None
            if getattr(self.model, "init_net", None) is not None:
                if self.user_features is None:
                    raise ValueError(f"{self.name} conditions on user features; pass user_features")
                uf = np.asarray(self.user_features)[np.asarray(tasks.users, dtype=np.int64)]
            states = rec.adapt((s.indptr, s.items, s.ratings), user_features=uf)
            return states.p @ rec.item_vectors.T + states.b[:, None] + rec.item_offsets[None, :]
        batch = TaskBatch.from_tasks(tasks, dtype=dtype, user_features=self.user_features)
        with torch.no_grad():
            adapted = self.learner.adapt(batch)
            adapted = {k: v.detach() for k, v in adapted.items()}
            n_items = tasks.n_items
            out = np.empty((len(tasks), n_items))
            for start in range(0, n_items, self.item_batch):
                items = torch.arange(start, min(start + self.item_batch, n_items))
                items = items.unsqueeze(0).expand(len(tasks), -1)
                out[:, start:start + items.shape[1]] = task_predictions(
                    self.model, adapted, items, batch.user_features).numpy()
        return out
