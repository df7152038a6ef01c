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

    A ``loss="logistic"`` model adapts on its support items as positives
    (target 1, whatever their rating), plus ``support_negatives`` sampled
    non-support items per task as target-0 entries (default: what the
    :class:`MetaTrainer` used; drawn with ``random_state`` / ``negative_method``).
    """

    def __init__(self, learner: Any, name: str | None = None, user_features: Any = None,
                 item_batch: int = 4096, support_negatives: int | None = None,
                 negative_method: str | None = None, random_state: Any = 0) -> None:
        if hasattr(learner, "learner"):  # a MetaTrainer
            user_features = learner.user_features if user_features is None else user_features
            if support_negatives is None:
                support_negatives = learner.support_negatives
            if negative_method is None:
                negative_method = learner.negative_method
            self.positive_threshold = learner.positive_threshold
            self._popularity = learner._popularity
            learner = learner.learner
        if not isinstance(learner, MetaLearner):
            raise TypeError(f"expected a MetaLearner or MetaTrainer, got {type(learner).__name__}")
        self.learner = learner
        self.model = learner.model
        self.name = name or f"{type(self.model).__name__.lower()}-{learner.algorithm}"
        self.predicts_ratings = self.model.loss == "mse"
        self.user_features = user_features
        self.item_batch = item_batch
        self.support_negatives = int(support_negatives or 0)
        if self.support_negatives and self.model.loss != "logistic":
            raise ValueError("support_negatives need a model with loss='logistic'")
        self.negative_method = negative_method or "uniform"
        if not hasattr(self, "_popularity"):
            self._popularity = None
        if not hasattr(self, "positive_threshold"):
            self.positive_threshold = None
        self.random_state = random_state
        #: The trainer's best validation loss, when the scorer was built from a fitted trainer's run.
        self.validation_loss: float | None = None

    def _support_negatives(self, tasks: Any) -> np.ndarray | None:
        if not self.support_negatives:
            return None
        from ..data.sampling import sample_negatives

        s = tasks.support
        return sample_negatives((s.indptr, s.items), tasks.n_items, self.support_negatives,
                                method=self.negative_method, popularity=self._popularity,
                                random_state=self.random_state)

    def _support_csr(self, tasks: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The support sets the inner loop sees: implicit targets and negatives for logistic models."""
        s = tasks.support
        if self.model.loss != "logistic":
            return s.indptr, s.items, s.ratings
        neg = self._support_negatives(tasks)
        lengths = np.diff(np.asarray(s.indptr, dtype=np.int64))
        n_neg = 0 if neg is None else neg.shape[1]
        indptr = np.concatenate([[0], np.cumsum(lengths + n_neg)]).astype(np.int64)
        items = np.empty(int(indptr[-1]), dtype=np.int64)
        targets = np.zeros(int(indptr[-1]), dtype=np.float64)
        pos = np.arange(len(s.items)) + np.repeat(indptr[:-1] - s.indptr[:-1], lengths)
        items[pos] = s.items
        targets[pos] = 1.0 if self.positive_threshold is None else (s.ratings >= self.positive_threshold)
        if n_neg:
            npos = (indptr[:-1] + lengths)[:, None] + np.arange(n_neg)[None, :]
            items[npos.ravel()] = neg.ravel()
        return indptr, items, targets
    def score(self, tasks: Any) -> np.ndarray:
        dtype = next(self.model.parameters()).dtype
        if self.learner.engine == "cpp":
            from ..serving import Recommender

            rec = Recommender.from_model(self.model, self.learner, dtype=np.float64)
            uf = None
            if getattr(self.model, "init_net", None) is not None:
                if self.user_features is None:
                    raise ValueError(f"{self.name} conditions on user features; pass user_features")
                uf = np.asarray(self.user_features)[np.asarray(tasks.users, dtype=np.int64)]
            states = rec.adapt(self._support_csr(tasks), user_features=uf)
            return states.p @ rec.item_vectors.T + states.b[:, None] + rec.item_offsets[None, :]
        batch = TaskBatch.from_tasks(tasks, dtype=dtype, user_features=self.user_features)
        if self.model.loss == "logistic":
            batch = batch.with_negatives(None, self._support_negatives(tasks),
                                         positive_threshold=self.positive_threshold)
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
