"""MetaTrainer: the outer loop (meta-batches, optimiser, validation, checkpoints)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

from .._checkpoint import CHECKPOINT_FORMAT, load_state, save_state
from ..models.base import MetaModel
from .algorithms import MetaLearner
from .batch import TaskBatch
from .inner import query_losses

logger = logging.getLogger("metarec_fast")

OPTIMIZERS = ("adam", "sgd")
CHECKPOINT_VERSION = 2  # of state_dict(); 1 was 0.1.0's (the same dict, stored as a pickle)


class DivergenceError(RuntimeError):
    """The meta-loss became NaN or infinite."""


def _n_tasks(tasks: Any) -> int:
    return tasks.n_tasks if isinstance(tasks, TaskBatch) else len(tasks)


def _generator(random_state: Any) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


class MetaTrainer:
    """Meta-trains a model with one of the algorithms of :mod:`metarec_fast.meta`.

    Args:
        model: the model to meta-train (e.g. :class:`~metarec_fast.models.MetaMF`).
        algorithm: ``"maml"``, ``"fomaml"``, ``"reptile"`` or ``"metasgd"``.
        inner_steps, inner_lr, l2, adapt: the inner loop (see :class:`MetaLearner`).
        outer_lr: the outer optimiser's learning rate.
        optimizer: ``"adam"`` or ``"sgd"``.
        meta_batch_size: tasks per outer step.
        clip_grad: clip the meta-gradient's global norm to this value (None: no clipping).
        engine: inner-loop engine: ``"cpp"`` (C++ with exact gradients, linear
            heads), ``"torch"`` (torch.func, any model) or ``"auto"`` (cpp when it applies).
        random_state: seeds task shuffling (int, numpy Generator or None). With a
            seed, a run on the CPU is deterministic.
        user_features: ``[n_users, F]`` side features by dense user id, for models
            that condition on them (MeLU, MetaMF with ``user_feature_dim``).
        weight_decay: L2 weight decay (the outer optimiser's) on the body, i.e.
            every meta-parameter except the adapted head, its conditioned
            initialisation and Meta-SGD's learning rates.
        body_lr: the outer learning rate of the body (default ``outer_lr``); a
            smaller one suits a body started from a pretrained model.
        negatives: implicit-feedback training (models with ``loss="logistic"``):
            every support/query interaction becomes a positive (target 1) and
            ``negatives`` items per task, outside its support and query sets,
            are appended to the query set as target-0 entries
            (:meth:`TaskBatch.with_negatives`), freshly sampled every batch
            (validation batches use a fixed seed).
        support_negatives: as ``negatives``, appended to the support set (the
            inner loop then sees negatives too; outside the support set only).
            A :class:`MetaScorer` of this trainer samples them at test time too.
        negative_method: ``"uniform"`` or ``"popularity"`` (training counts).
        task_weighting: ``"task"`` or ``"interaction"`` (see :class:`MetaLearner`).
        positive_threshold: with ``negatives`` on explicit ratings, only
            interactions rated at least this are positives (target 1), the
            others are target 0 (None: every interaction is a positive).
        support_sizes: task augmentation. Every epoch, each training task is cut
            again (:meth:`TaskSet.resplit <metarec_fast.data.TaskSet.resplit>`):
            support = its first ``K`` interactions, ``K`` drawn from these sizes,
            query = the rest. More distinct tasks per training user, and a model
            that has seen every support size it will meet. None: the split's tasks.

    After :meth:`fit`, :attr:`history` holds one dict per epoch
    (``epoch``, ``train_loss``, ``val_loss``, ``seconds``).
    """

    def __init__(
        self,
        model: MetaModel,
        algorithm: str = "maml",
        inner_steps: int = 5,
        inner_lr: float = 0.1,
        l2: float = 0.0,
        adapt: Iterable[str] | None = None,
        outer_lr: float = 1e-3,
        optimizer: str = "adam",
        meta_batch_size: int = 32,
        clip_grad: float | None = None,
        engine: str = "auto",
        random_state: Any = None,
        user_features: Any = None,
        weight_decay: float = 0.0,
        body_lr: float | None = None,
        negatives: int = 0,
        support_negatives: int = 0,
        negative_method: str = "uniform",
        task_weighting: str = "task",
        support_sizes: Iterable[int] | None = None,
        positive_threshold: float | None = None,
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if isinstance(meta_batch_size, bool) or not isinstance(meta_batch_size, int) or meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be a positive int, got {meta_batch_size!r}")
        if not outer_lr > 0:
            raise ValueError(f"outer_lr must be positive, got {outer_lr!r}")
        if clip_grad is not None and not clip_grad > 0:
            raise ValueError(f"clip_grad must be positive or None, got {clip_grad!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if body_lr is not None and not body_lr > 0:
            raise ValueError(f"body_lr must be positive or None, got {body_lr!r}")
        for name, value in (("negatives", negatives), ("support_negatives", support_negatives)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if negative_method not in ("uniform", "popularity"):
            raise ValueError(f"negative_method must be 'uniform' or 'popularity', got {negative_method!r}")
        if (negatives or support_negatives) and model.loss != "logistic":
            raise ValueError(
                f"negatives need a model with loss='logistic' (implicit feedback); this one has {model.loss!r}"
            )
        if support_sizes is not None:
            support_sizes = tuple(int(k) for k in support_sizes)
            if not support_sizes or min(support_sizes) < 1:
                raise ValueError(f"support_sizes must be ints >= 1, got {support_sizes!r}")
        self.support_sizes = support_sizes
        if positive_threshold is not None and not math.isfinite(positive_threshold):
            raise ValueError(f"positive_threshold must be a finite number or None, got {positive_threshold!r}")
        self.positive_threshold = positive_threshold
        self.learner = MetaLearner(model, algorithm, inner_steps, inner_lr, l2, adapt, engine,
                                   task_weighting=task_weighting)
        self.model = model
        self.meta_batch_size = meta_batch_size
        self.clip_grad = clip_grad
        self.negatives, self.support_negatives = int(negatives), int(support_negatives)
        self.negative_method = negative_method
        self._popularity: Optional[np.ndarray] = None
        params = [p for p in self.learner.parameters() if p.requires_grad]
        if weight_decay or body_lr is not None:
            head_ids = {id(p) for n, p in model.named_parameters()
                        if n in self.learner.adapted_names or n.startswith("init_net.")}
            head_ids |= {id(p) for p in (self.learner.inner_lrs or [])}
            head = [p for p in params if id(p) in head_ids]
            body = [p for p in params if id(p) not in head_ids]
            groups: Any = [{"params": head, "weight_decay": 0.0},
                           {"params": body, "weight_decay": float(weight_decay),
                            "lr": float(body_lr if body_lr is not None else outer_lr)}]
            groups = [g for g in groups if g["params"]]
        else:
            groups = params
        if optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=outer_lr)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=outer_lr)
        self.rng = _generator(random_state)
        self.user_features = user_features
        self.dtype = next(model.parameters()).dtype
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.best_val = math.inf
        self.best_state: Optional[dict[str, torch.Tensor]] = None
        self._stale = 0  # epochs since the best validation loss

    # -- one step ---------------------------------------------------------
    def step(self, batch: TaskBatch) -> float:
        """One outer step on ``batch``; returns the meta-loss before the step."""
        self.optimizer.zero_grad(set_to_none=True)
        return self._apply_meta_gradient(self.learner.meta_backward(batch))

    def _apply_meta_gradient(self, loss: float) -> float:
        """With the meta-gradient in ``.grad``: divergence check, clipping, optimiser step."""
        if not math.isfinite(loss):
            raise DivergenceError(f"meta-loss is {loss} at epoch {self.epoch + 1}")
        if self.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.learner.parameters(), self.clip_grad)
        self.optimizer.step()
        return loss

    def _train_step(self, tasks: Any, idx: Any) -> float:
        """One outer step on the tasks ``idx`` of the epoch's order (a hook for
        :class:`~metarec_fast.distributed.DistributedMetaTrainer`)."""
        return self.step(self.batch(tasks, idx))

    def batch(self, tasks: Any, idx: Any, random_state: Any = None) -> TaskBatch:
        """Tasks ``idx`` of a :class:`~metarec_fast.data.TaskSet` (or a TaskBatch) as a TaskBatch.

        With ``negatives``/``support_negatives``, a TaskSet's batch gets sampled
        negatives (drawn with ``random_state``, default the trainer's generator).
        The batch is on the model's device.
        """
        if isinstance(tasks, TaskBatch):
            return self._on_model_device(tasks.select(idx))
        batch = TaskBatch.from_tasks(tasks, idx, dtype=self.dtype, user_features=self.user_features)
        if not (self.negatives or self.support_negatives or self.positive_threshold is not None):
            return self._on_model_device(batch)
        batch = self._with_negatives(tasks, idx, batch, self.rng if random_state is None else random_state)
        return self._on_model_device(batch)

    def _on_model_device(self, batch: TaskBatch) -> TaskBatch:
        """The batch on the model's device (batches are built on the CPU; a model
        moved to a GPU gets its batches there, and engine="cpp" then runs the
        CUDA kernels)."""
        device = next(self.model.parameters()).device
        return batch if device.type == "cpu" else batch.to(device)

    def _with_negatives(self, tasks: Any, idx: Any, batch: TaskBatch, rng: Any) -> TaskBatch:
        from ..data.sampling import sample_negatives

        sub = tasks.subset(np.asarray(idx, dtype=np.int64))
        if self.negative_method == "popularity" and self._popularity is None:
            self._popularity = np.bincount(np.concatenate([tasks.support.items, tasks.query.items]),
                                           minlength=tasks.n_items)
        kw = dict(method=self.negative_method, popularity=self._popularity, random_state=rng)
        q_neg = sub.sample_negatives(self.negatives, **kw) if self.negatives else None
        s_neg = None
        if self.support_negatives:
            s_neg = sample_negatives((sub.support.indptr, sub.support.items), tasks.n_items,
                                     self.support_negatives, **kw)
        return batch.with_negatives(q_neg, s_neg, positive_threshold=self.positive_threshold)

    def validation_loss(self, tasks: Any, batch_size: int = 256) -> float:
        """Mean query loss after adaptation, over tasks that have a query set
        (weighted by query size with ``task_weighting="interaction"``)."""
        total, count = 0.0, 0.0
        n = _n_tasks(tasks)
        rng = np.random.default_rng(12345)  # the same negatives every epoch
        with torch.no_grad():
            for start in range(0, n, batch_size):
                batch = self.batch(tasks, np.arange(start, min(start + batch_size, n)), random_state=rng)
                losses, has_query = query_losses(self.model, self.learner.adapt(batch), batch,
                                                 with_flags=True)
                has_query = has_query > 0
                if self.learner.task_weighting == "interaction":
                    w = batch.query_mask.sum(-1).to(losses.dtype)
                    total += float((losses * w).sum())
                    count += float(w.sum())
                    continue
                total += float(losses[has_query].sum())
                count += float(has_query.sum())
        return total / max(count, 1.0)

    # -- the loop ---------------------------------------------------------
    def _check_fit_args(self, train_tasks: Any, val_tasks: Any, epochs: Any) -> None:
        """The argument checks at the start of :meth:`fit` (ValueError)."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if _n_tasks(train_tasks) == 0:
            raise ValueError("train_tasks is empty")
        self._check_id_space(train_tasks, val_tasks)

    def fit(
        self,
        train_tasks: Any,
        val_tasks: Any = None,
        epochs: int = 10,
        show_progress: bool = True,
        callback: Callable[[dict[str, float]], Any] | None = None,
        patience: int | None = None,
        checkpoint: str | Path | None = None,
        min_delta: float = 0.0,
    ) -> "MetaTrainer":
        """Meta-train for ``epochs`` passes over ``train_tasks``.

        ``train_tasks``/``val_tasks`` are :class:`~metarec_fast.data.TaskSet` s
        (padded per meta-batch) or ready :class:`TaskBatch` es.

        With ``val_tasks``, the validation loss is computed after every epoch and
        the best parameters are restored at the end; ``patience`` stops after
        that many epochs without an improvement larger than ``min_delta``. ``checkpoint`` is written
        atomically after every epoch (resume with :meth:`load_checkpoint`).
        ``callback(record)`` is called after each epoch; returning ``False``
        stops training.
        """
        self._check_fit_args(train_tasks, val_tasks, epochs)
        from tqdm.auto import tqdm

        n = _n_tasks(train_tasks)
        if self.negative_method == "popularity" and self._popularity is None and not isinstance(
                train_tasks, TaskBatch):
            self._popularity = np.bincount(
                np.concatenate([train_tasks.support.items, train_tasks.query.items]),
                minlength=train_tasks.n_items)
        n_batches = math.ceil(n / self.meta_batch_size)
        bar = tqdm(total=(epochs - self.epoch) * n_batches, disable=not show_progress, desc="meta-train")
        try:
            while self.epoch < epochs:
                start = time.perf_counter()
                order = self.rng.permutation(n)
                epoch_tasks = train_tasks
                if self.support_sizes is not None and not isinstance(train_tasks, TaskBatch):
                    epoch_tasks = train_tasks.resplit(self.support_sizes, self.rng)
                losses = []
                for b in range(n_batches):
                    idx = order[b * self.meta_batch_size : (b + 1) * self.meta_batch_size]
                    try:
                        losses.append(self._train_step(epoch_tasks, idx))
                    except DivergenceError as exc:
                        raise DivergenceError(f"{exc}, step {b + 1}; the last checkpoint is intact") from None
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                self.epoch += 1
                record = {"epoch": self.epoch, "train_loss": float(np.mean(losses)), "val_loss": math.nan}
                if val_tasks is not None:
                    record["val_loss"] = self.validation_loss(val_tasks)
                    if record["val_loss"] < self.best_val - min_delta:
                        self.best_val = record["val_loss"]
                        self.best_state = {k: v.detach().clone() for k, v in self.learner.state_dict().items()}
                        self._stale = 0
                    else:
                        self._stale += 1
                record["seconds"] = time.perf_counter() - start
                self.history.append(record)
                logger.info("epoch %d: %s", self.epoch, record)
                if checkpoint is not None:
                    self.save_checkpoint(checkpoint)
                if callback is not None and callback(record) is False:
                    break
                if patience is not None and self._stale >= patience:
                    logger.info("early stop after epoch %d (patience %d)", self.epoch, patience)
                    break
        finally:
            bar.close()
        if self.best_state is not None:
            self.learner.load_state_dict(self.best_state)
        return self

    def _check_id_space(self, train: Any, val: Any) -> None:
        """Tasks from another dataset (or item space) fail before any training step."""
        n_items = getattr(self.model, "n_items", None)
        for name, tasks in (("train_tasks", train), ("val_tasks", val)):
            if tasks is None or isinstance(tasks, TaskBatch):
                continue
            if n_items is not None and tasks.n_items != n_items:
                raise ValueError(f"{name} has {tasks.n_items} items but the model has {n_items}: "
                                 "tasks from another dataset's id space?")
        if (val is not None and not isinstance(val, TaskBatch) and not isinstance(train, TaskBatch)
                and getattr(train, "fingerprint", "") != getattr(val, "fingerprint", "")):
            raise ValueError(f"train_tasks and val_tasks come from different datasets "
                             f"(fingerprints {train.fingerprint!r} and {val.fingerprint!r})")

    # -- checkpoints ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The full training state (what :meth:`save_checkpoint` writes): model and optimiser
        tensors, epoch, history, best validation state, the generator's state (plain data)."""
        return {
            "version": CHECKPOINT_VERSION,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best_val": self.best_val,
            "best_state": self.best_state,
            "stale": self._stale,
            "rng": self.rng.bit_generator.state,
            "algorithm": self.learner.algorithm,
        }

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the full training state atomically (a kill mid-write keeps the old file),
        without pickle (tensors as arrays, the rest as JSON), with a SHA-256 per array
        so that a corrupted or truncated file is detected on load."""
        return save_state(path, self.state_dict(), CHECKPOINT_FORMAT)

    def load_checkpoint(self, path: str | Path) -> "MetaTrainer":
        """Restore a state written by :meth:`save_checkpoint`; :meth:`fit` then continues.

        Never runs code from the file. A 0.1.0 checkpoint (a pickle) raises
        ValueError naming :func:`~metarec_fast.meta.convert_checkpoint`.
        """
        state = load_state(path, CHECKPOINT_FORMAT)
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} is not a metarec-fast checkpoint (version {CHECKPOINT_VERSION})")
        if state.get("algorithm") != self.learner.algorithm:
            raise ValueError(
                f"{path} was written by algorithm {state.get('algorithm')!r}, this trainer runs "
                f"{self.learner.algorithm!r}"
            )
        try:
            self.learner.load_state_dict(state["learner"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.epoch = int(state["epoch"])
            self.history = list(state["history"])
            self.best_val = float(state["best_val"])
            self.best_state = state["best_state"]
            self._stale = int(state["stale"])
            self.rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise ValueError(f"{path} does not fit this trainer (model or optimizer differ?): {exc}") from exc
        return self
