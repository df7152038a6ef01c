"""Meta-training and batch recommendation across processes with :mod:`torch.distributed`.

Launch one process per rank with ``torchrun`` (or ``torch.multiprocessing``);
every rank builds the same model, trainer and task set, then::

    from metarec_fast.distributed import DistributedMetaTrainer, distributed_session

    with distributed_session(timeout=120):  # reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT
        trainer = DistributedMetaTrainer(model, meta_batch_size=64, random_state=0)
        trainer.fit(train_tasks, val_tasks, epochs=10, checkpoint="ckpt.npz")
    # every rank has left the process group together (barrier + destroy_process_group)

How a step works: every rank draws the same global task order (same seed), takes
a contiguous slice of each global meta-batch, computes the *un-normalised*
meta-gradient of its slice (the sum of its tasks' weighted query losses), and
then ONE all-reduce of one flat buffer carries every gradient, the slice's
denominator (tasks with a query set, or query interactions), its loss sum, a
"this parameter got a gradient" mask and one status slot per rank. Dividing by
the global denominator afterwards gives exactly the single-process meta-gradient
of the global batch (up to floating-point summation order), so N ranks with B/N
tasks each take the same optimiser step as one process with B. A rank whose
step raises still joins the all-reduce with its status slot set, so every other
rank raises :class:`RemoteRankError` naming it instead of hanging; a rank that
dies makes the others' collective fail within the process group's timeout. The
same holds for the checks at the start of :meth:`DistributedMetaTrainer.fit`
(arguments, empty or mismatched task sets): a rank whose check fails raises it,
the others raise :class:`RemoteRankError` with its message.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .meta.trainer import MetaTrainer

logger = logging.getLogger("metarec_fast")

__all__ = ["DistributedMetaTrainer", "DistributedSetupError", "RemoteRankError", "init_distributed",
           "distributed_session", "shutdown", "recommend_sharded", "fingerprint", "check_consistent"]


class RemoteRankError(RuntimeError):
    """Another rank failed (raised), so this rank stops too."""


class DistributedSetupError(RuntimeError):
    """No process group could be set up (no torchrun environment, unreachable master, ...)."""


def init_distributed(backend: str | None = None, timeout: float = 300.0, device: str = "cpu",
                     init_method: str | None = None, rank: int | None = None,
                     world_size: int | None = None) -> tuple[int, int]:
    """Initialise the default process group (if not yet) and return ``(rank, world_size)``.

    ``backend`` defaults to ``"nccl"`` for a CUDA ``device`` and ``"gloo"`` otherwise.
    ``timeout`` (seconds) bounds every collective: a rank that dies makes the
    others fail after at most that long. Without ``init_method``/``rank``/
    ``world_size`` the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``) is read.
    """
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedSetupError("torch.distributed is not available in this PyTorch build")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if not timeout > 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    if backend is None:
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if init_method is None and rank is None and "RANK" not in os.environ:
        raise DistributedSetupError("no distributed environment: launch with torchrun (RANK, WORLD_SIZE, "
                                    "MASTER_ADDR, MASTER_PORT) or pass init_method, rank and world_size")
    kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=float(timeout))}
    if init_method is not None:
        kwargs["init_method"] = init_method
    if rank is not None:
        kwargs["rank"] = int(rank)
    if world_size is not None:
        kwargs["world_size"] = int(world_size)
    try:
        dist.init_process_group(**kwargs)
    except (RuntimeError, ValueError) as exc:  # e.g. DistStoreError: the master is unreachable
        raise DistributedSetupError(f"could not set up the process group ({backend}): {exc}") from exc
    return dist.get_rank(), dist.get_world_size()


def shutdown(barrier: bool = True) -> None:
    """Leave the default process group: a barrier (every rank leaves together), then
    ``destroy_process_group``. Does nothing when no group is initialised (or
    torch.distributed is unavailable), so it is safe to call in any ``finally``.

    Use ``barrier=False`` after an error: the other ranks may be waiting inside
    another collective, which a barrier would be matched against. A barrier that
    fails (a peer is already gone) is logged and the group is destroyed anyway.
    Leaving together matters with gloo: tearing it down at interpreter exit while
    a peer is still connected can abort the process.
    """
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed
        return
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if barrier:
            dist.barrier()
    except Exception as exc:  # a peer died or timed out: still leave
        logger.warning("distributed shutdown: barrier failed (%s); leaving the process group anyway", exc)
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(**init_kwargs: Any) -> Iterator[tuple[int, int]]:
    """``with distributed_session(...) as (rank, world_size):`` -- :func:`init_distributed`
    (same arguments; a group that is already initialised is adopted) and, on
    leaving the block, :func:`shutdown`: with a barrier when the block ended
    normally, without one when it raised (the exception then propagates).
    Errors setting the group up raise :class:`DistributedSetupError`.
    """
    rank, world = init_distributed(**init_kwargs)
    try:
        yield rank, world
    except BaseException:
        shutdown(barrier=False)
        raise
    shutdown(barrier=True)


def _rank_world(group: Any = None) -> tuple[int, int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("torch.distributed is not initialised: call init_distributed() first "
                           "(or launch with torchrun)")
    return dist.get_rank(group), dist.get_world_size(group)


# ------------------------------------------------------------- consistency
def _digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def fingerprint(tasks: Any) -> dict[str, Any]:
    """What identifies a task set across ranks: dataset fingerprint, size and a content hash."""
    from .meta.batch import TaskBatch

    if tasks is None:
        return {"tasks": None}
    if isinstance(tasks, TaskBatch):
        return {"dataset": "", "n_tasks": tasks.n_tasks,
                "content": _digest(tasks.support_items, tasks.support_ratings, tasks.support_mask,
                                   tasks.query_items, tasks.query_ratings, tasks.query_mask, tasks.users)}
    return {"dataset": getattr(tasks, "fingerprint", ""), "n_tasks": len(tasks), "n_items": tasks.n_items,
            "content": _digest(tasks.users, tasks.support.indptr, tasks.support.items, tasks.support.ratings,
                               tasks.query.indptr, tasks.query.items, tasks.query.ratings)}


def check_consistent(name: str, value: dict[str, Any], group: Any = None,
                     error: BaseException | None = None) -> None:
    """All-gather ``value`` (a JSON-able dict) and raise ValueError naming every key that differs.

    ``error``: this rank failed while preparing ``value``; it still joins the
    all-gather (so nobody waits for it), then raises ``error`` while every other
    rank raises :class:`RemoteRankError` with its message.
    """
    import torch.distributed as dist

    rank, world = _rank_world(group)
    gathered: list[Any] = [None] * world
    payload = {"value": value, "error": None if error is None else f"{type(error).__name__}: {error}"}
    dist.all_gather_object(gathered, payload, group=group)
    if error is not None:
        raise error
    failed = [(r, g["error"]) for r, g in enumerate(gathered) if g["error"] is not None]
    if failed:
        raise RemoteRankError(f"{name}: rank(s) {[r for r, _ in failed]} failed ("
                              + "; ".join(f"rank {r}: {m}" for r, m in failed) + f"); rank {rank} stops too")
    gathered = [g["value"] for g in gathered]
    diffs = []
    for key in sorted({k for v in gathered for k in v}):
        values = [v.get(key) for v in gathered]
        if any(x != values[0] for x in values[1:]):
            diffs.append(f"{key}: " + ", ".join(f"rank {r}={x!r}" for r, x in enumerate(values)))
    if diffs:
        raise ValueError(f"{name} differs across ranks (different data, split seeds or settings?): "
                         + "; ".join(diffs))


# ------------------------------------------------------------------ trainer
class DistributedMetaTrainer(MetaTrainer):
    """:class:`~metarec_fast.meta.MetaTrainer` whose meta-batches are split across ranks.

    Takes MetaTrainer's arguments; ``meta_batch_size`` is the *global* meta-batch
    (each rank adapts about ``meta_batch_size / world_size`` tasks per step).
    Every rank must build the same model (same seed), trainer settings and task
    sets; :meth:`fit` checks that at start-up and raises ValueError naming what
    differs. Checkpoints are written by rank 0 only (atomically) and hold the
    global state, so a run resumes on any number of ranks; progress bars show on
    rank 0 only. ``process_group`` defaults to the default group (see
    :func:`init_distributed`).
    """

    def __init__(self, *args: Any, process_group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group
        self.rank, self.world_size = _rank_world(process_group)
        self._params = [p for p in self.learner.parameters() if p.requires_grad]

    # -- start-up check ---------------------------------------------------
    def _config(self) -> dict[str, Any]:
        lr = self.learner
        opt = self.optimizer
        return {
            "algorithm": lr.algorithm, "engine": lr.engine, "inner_steps": lr.inner_steps,
            "inner_lr": lr.base_lr, "l2": lr.l2, "adapt": list(lr.adapted_names),
            "task_weighting": lr.task_weighting, "meta_batch_size": self.meta_batch_size,
            "clip_grad": self.clip_grad, "optimizer": type(opt).__name__,
            "optimizer_groups": json.dumps([{k: v for k, v in g.items() if k != "params"}
                                            for g in opt.param_groups], sort_keys=True, default=str),
            "negatives": [self.negatives, self.support_negatives, self.negative_method],
            "model": type(self.model).__name__, "dtype": str(self.dtype),
            "parameters": _digest(*[t for t in self.learner.state_dict().values()]),
            "rng (seed)": hashlib.sha256(json.dumps(self.rng.bit_generator.state, sort_keys=True,
                                                    default=str).encode()).hexdigest()[:16],
            "epoch": self.epoch,
        }

    def check_consistency(self, train_tasks: Any, val_tasks: Any = None, epochs: Any = None) -> None:
        """Raise ValueError on every rank if data, seed, settings or parameters differ across ranks.

        The cheap argument checks of :meth:`fit` run here first: a rank whose
        check fails raises its error, the others :class:`RemoteRankError`
        (instead of waiting for it in the first training step until the timeout).
        """
        value: dict[str, Any] = {}
        error: BaseException | None = None
        try:
            if epochs is not None:
                self._check_fit_args(train_tasks, val_tasks, epochs)
            value = {**{f"train {k}": v for k, v in fingerprint(train_tasks).items()},
                     **{f"val {k}": v for k, v in fingerprint(val_tasks).items()},
                     **self._config(), "epochs": epochs}
        except Exception as exc:  # joins the all-gather below, then raises
            error = exc
        check_consistent("training setup", value, self.process_group, error=error)

    def fit(self, train_tasks: Any, val_tasks: Any = None, epochs: int = 10, show_progress: bool = True,
            **kwargs: Any) -> "MetaTrainer":
        """As :meth:`MetaTrainer.fit`, on every rank (after the consistency check)."""
        self.check_consistency(train_tasks, val_tasks, epochs)
        return super().fit(train_tasks, val_tasks, epochs=epochs,
                           show_progress=show_progress and self.rank == 0, **kwargs)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Rank 0 writes (atomically); other ranks only return the path."""
        if self.rank == 0:
            return super().save_checkpoint(path)
        return Path(path)

    # -- one step ---------------------------------------------------------
    def _local_slice(self, idx: np.ndarray) -> slice:
        n = len(idx)
        bounds = [n * r // self.world_size for r in range(self.world_size + 1)]
        return slice(bounds[self.rank], bounds[self.rank + 1])

    def _train_step(self, tasks: Any, idx: Any) -> float:
        import torch

        idx = np.asarray(idx)
        part = self._local_slice(idx)
        params = self._params
        n_params = len(params)
        reptile = self.learner.algorithm == "reptile"
        self.optimizer.zero_grad(set_to_none=True)
        error: BaseException | None = None
        den = loss_sum = 0.0
        n_local = part.stop - part.start
        sur_grads: list[Any] = [None] * n_params
        try:
            if self.negatives or self.support_negatives:
                # The same rng draws as one process on the global batch: identical negatives.
                batch = self.batch(tasks, idx).select(np.arange(part.start, part.stop))
            else:
                batch = self.batch(tasks, idx[part]) if n_local else None
            if batch is not None and n_local:
                den, loss_sum, sur_grads = self._local_backward(batch, reptile)
        except Exception as exc:  # joins the all-reduce below with its status slot set
            error = exc
            self.optimizer.zero_grad(set_to_none=True)
        # ONE all-reduce: [grads | reptile surrogate grads | has-grad mask | den, loss_sum, n | status]
        ref = params[0]
        chunks, mask = [], []
        for p, sg in zip(params, sur_grads):
            g = None if error is not None else p.grad
            chunks.append(torch.zeros(p.numel(), dtype=ref.dtype, device=ref.device) if g is None
                          else g.detach().reshape(-1).to(ref.dtype))
            mask.append(0.0 if (error is not None or (g is None and sg is None)) else 1.0)
        if reptile:
            for p, g in zip(params, sur_grads):
                chunks.append(torch.zeros(p.numel(), dtype=ref.dtype, device=ref.device)
                              if (g is None or error is not None) else g.detach().reshape(-1).to(ref.dtype))
        status = [0.0] * self.world_size
        if error is not None:
            status[self.rank] = 1.0
            den = loss_sum = 0.0
            n_local = 0
        tail = torch.tensor(mask + [den, loss_sum, float(n_local)] + status, dtype=ref.dtype, device=ref.device)
        flat = torch.cat(chunks + [tail])
        import torch.distributed as dist

        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.process_group)
        tail = flat[flat.numel() - tail.numel():].cpu().tolist()
        failed = [r for r, s in enumerate(tail[n_params + 3:]) if s > 0]
        if error is not None:
            raise error
        if failed:
            raise RemoteRankError(f"rank(s) {failed} failed at epoch {self.epoch + 1}; rank {self.rank} stops too "
                                  "(see that rank's traceback)")
        g_den, g_loss, g_n = tail[n_params:n_params + 3]
        scale = 1.0 / max(g_den, 1.0)
        sizes = [p.numel() for p in params]
        starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        sur_start = starts[-1]
        for i, p in enumerate(params):
            g = flat[starts[i]:starts[i + 1]] * scale
            if reptile:
                g = g + flat[sur_start + starts[i]:sur_start + starts[i + 1]] / max(g_n, 1.0)
            p.grad = g.reshape(p.shape).to(p.dtype) if tail[i] > 0 else None
        return self._apply_meta_gradient(g_loss * scale)

    def _local_backward(self, batch: Any, reptile: bool) -> tuple[float, float, list[Any]]:
        """Backward of the slice's loss *sum* into ``.grad`` (Reptile's surrogate sum separately)."""
        import torch

        from .meta.inner import query_losses

        learner = self.learner
        q = batch.query_mask.sum(-1)
        weights = q if learner.task_weighting == "interaction" else (q > 0)
        den = float(weights.sum())
        if not reptile:
            loss = learner(batch)  # sum(w * l) / max(sum w, 1)
            total = loss * max(den, 1.0)
            total.backward()
            return den, float(total.detach()), [None] * len(self._params)
        init = learner.model.initial_adapted(learner.adapted_names, batch)
        theta_t = {n: t.detach() for n, t in learner.adapt(batch).items()}
        losses = query_losses(learner.model, theta_t, batch)
        has_query = (q > 0).to(losses.dtype)
        body = learner._reduce(losses, has_query, batch) * max(den, 1.0)
        surrogate = sum((init[n] * (init[n].detach() - theta_t[n])).sum() for n in learner.adapted_names)
        sur_grads = list(torch.autograd.grad(surrogate, self._params, retain_graph=True, allow_unused=True))
        body.backward()
        return den, float(body.detach()), sur_grads


# ------------------------------------------------------- sharded recommend
def recommend_sharded(recommender: Any, support: Any, k: int = 10, out_dir: str | Path | None = None,
                      gather: bool = True, user_features: Any = None, group: Any = None,
                      **recommend_kwargs: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Adapt and recommend for many users, split by rank into contiguous blocks.

    ``support`` is a scipy CSR ``[n_users, n_items]`` (or ``(indptr, items,
    ratings)``), identical on every rank. Rank ``r`` handles users
    ``[n*r//W, n*(r+1)//W)``. With ``out_dir`` each rank writes
    ``shard-{rank:05d}.npz`` (``users``, ``ids``, ``scores``) atomically; with
    ``gather`` rank 0 returns the full ``(ids [n_users, k], scores)`` in user
    order (other ranks return None). Without a process group it runs in one
    process. ``recommend_kwargs`` go to :meth:`Recommender.recommend`.
    """
    from .serving import _support_csr

    indptr, items, ratings = _support_csr(support, recommender.n_items)
    n = indptr.shape[0] - 1
    try:
        rank, world = _rank_world(group)
    except RuntimeError:
        rank, world = 0, 1
    lo, hi = n * rank // world, n * (rank + 1) // world
    s, e = int(indptr[lo]), int(indptr[hi])
    local = (indptr[lo:hi + 1] - s, items[s:e], ratings[s:e])
    feats = None if user_features is None else np.asarray(user_features)[lo:hi]
    states = recommender.adapt(local, user_features=feats)
    ids, scores = recommender.recommend(states, k=k, **recommend_kwargs)
    users = np.arange(lo, hi, dtype=np.int64)
    if out_dir is not None:
        from ._io import atomic_write

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / f"shard-{rank:05d}.npz",
                     lambda f: np.savez(f, users=users, ids=ids, scores=scores))
    if not gather:
        return None
    if world == 1:
        return ids, scores
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.gather_object((users, ids, scores), parts if rank == 0 else None, dst=0, group=group)
    if rank != 0:
        return None
    k_out = ids.shape[1]
    return (np.concatenate([p[1] for p in parts]).reshape(-1, k_out),
            np.concatenate([p[2] for p in parts]).reshape(-1, k_out))
