"""Strong non-meta baselines, evaluated on the same tasks as the meta-learners.

Each baseline is fitted on the training tasks (all their support and query
interactions), tuned on validation tasks where it has a hyper-parameter, and
scores a *new* user from that user's support set only (fold-in, no
retraining). They implement the :class:`~metarec_fast.evaluation.Scorer`
contract: ``score(tasks) -> [n_tasks, n_items]``.

* :class:`Popularity`: interaction counts.
* :class:`BiasBaseline`: global mean + shrunk item bias + shrunk user bias
  (the user bias from the support set), shrinkage tuned on validation RMSE.
* :class:`ItemKNN`: cosine item-item similarity, scored against the support items.
* :class:`EASE`: Steck's closed-form item-item model, L2 tuned on validation nDCG@10.
* :class:`ALS`: implicit-feedback matrix factorisation (Hu, Koren & Volinsky,
  2008) fitted by alternating least squares; a new user's factors are solved in
  closed form from the support set (fold-in, as implicit's ``recalculate_user``),
  factors / regularisation / confidence tuned on validation nDCG@10.
* :class:`PretrainFinetune`: biased MF trained on all training interactions
  without meta-learning; a new user's head starts at the mean user and is fitted
  on the support set (steps and learning rate tuned on validation RMSE).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger("metarec_fast")


def train_matrix(train: Any, binary: bool = False) -> sp.csr_matrix:
    """Training tasks x items CSR (float64) of ratings from support and query interactions."""
    m = train.matrix("both")[np.asarray(train.users, dtype=np.int64)].astype(np.float64)
    if binary:
        m.data[:] = 1.0
    return m


def support_matrix(tasks: Any, binary: bool = False) -> sp.csr_matrix:
    """Tasks x items CSR of the support ratings."""
    s = tasks.support
    values = np.ones(s.n_interactions) if binary else s.ratings.astype(np.float64)
    return sp.csr_matrix((values, s.items.astype(np.int64), s.indptr), shape=(len(tasks), tasks.n_items))


class Baseline:
    """Common plumbing: a name, the rating flag, a fitted check."""

    name = "baseline"
    predicts_ratings = False

    def __init__(self) -> None:
        self.n_items: int | None = None
        self.tuning: dict[str, Any] = {}

    def _check_fitted(self, tasks: Any) -> None:
        if self.n_items is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(train_tasks) first")
        if tasks.n_items != self.n_items:
            raise ValueError(f"tasks have {tasks.n_items} items, {self.name} was fitted on {self.n_items}")

    def fit(self, train: Any, val: Any = None) -> "Baseline":  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, tasks: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class Popularity(Baseline):
    """Items ranked by how often they occur in the training interactions."""

    name = "popularity"

    def fit(self, train: Any, val: Any = None) -> "Popularity":
        items = np.concatenate([train.support.items, train.query.items])
        self.counts = np.bincount(items, minlength=train.n_items).astype(np.float32)
        self.n_items = train.n_items
        return self

    def score(self, tasks: Any) -> np.ndarray:
        self._check_fitted(tasks)
        return np.broadcast_to(self.counts, (len(tasks), self.n_items)).copy()


class BiasBaseline(Baseline):
    """``mu + b_i + b_u`` with shrinkage: ``b_i = sum(r - mu) / (reg_item + n_i)``,
    a new user's ``b_u = sum_support(r - mu - b_i) / (reg_user + n_u)``.

    ``reg_item``/``reg_user`` = None tunes each over ``grid`` on validation RMSE.
    """

    name = "bias"
    predicts_ratings = True

    def __init__(self, reg_item: float | None = None, reg_user: float | None = None,
                 grid: Sequence[float] = (0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0)) -> None:
        super().__init__()
        self.reg_item, self.reg_user, self.grid = reg_item, reg_user, tuple(grid)

    def _item_bias(self, reg: float) -> np.ndarray:
        denom = reg + self._item_n
        # An item never rated in training (and reg = 0) gets no bias.
        return np.divide(self._item_sum, denom, out=np.zeros_like(self._item_sum), where=denom > 0)

    def _user_bias(self, tasks: Any, item_bias: np.ndarray, reg: float) -> np.ndarray:
        s = tasks.support
        resid = s.ratings.astype(np.float64) - self.mu - item_bias[s.items]
        rows = np.repeat(np.arange(len(tasks)), s.lengths)
        sums = np.bincount(rows, resid, minlength=len(tasks))
        denom = (reg + s.lengths).astype(np.float64)
        return np.divide(sums, denom, out=np.zeros_like(sums), where=denom > 0)

    def fit(self, train: Any, val: Any = None) -> "BiasBaseline":
        m = train_matrix(train)
        self.n_items = train.n_items
        self.mu = float(m.data.mean()) if m.nnz else 0.0
        coo = m.tocoo()
        self._item_sum = np.bincount(coo.col, coo.data - self.mu, minlength=self.n_items)
        self._item_n = np.bincount(coo.col, minlength=self.n_items).astype(np.float64)
        reg_items = [self.reg_item] if self.reg_item is not None else list(self.grid)
        reg_users = [self.reg_user] if self.reg_user is not None else list(self.grid)
        best = (math.inf, reg_items[0], reg_users[0])
        if val is not None and len(val) and (len(reg_items) > 1 or len(reg_users) > 1):
            q_rows = np.repeat(np.arange(len(val)), val.query.lengths)
            for ri in reg_items:
                bi = self._item_bias(ri)
                for ru in reg_users:
                    bu = self._user_bias(val, bi, ru)
                    pred = self.mu + bi[val.query.items] + bu[q_rows]
                    rmse = float(np.sqrt(np.mean((pred - val.query.ratings.astype(np.float64)) ** 2)))
                    if rmse < best[0]:
                        best = (rmse, ri, ru)
        self.reg_item_, self.reg_user_ = best[1], best[2]
        self.tuning = {"reg_item": self.reg_item_, "reg_user": self.reg_user_, "val_rmse": best[0]}
        self.item_bias = self._item_bias(self.reg_item_)
        return self

    def score(self, tasks: Any) -> np.ndarray:
        self._check_fitted(tasks)
        bu = self._user_bias(tasks, self.item_bias, self.reg_user_)
        return (self.mu + self.item_bias[None, :] + bu[:, None]).astype(np.float64)


class ItemKNN(Baseline):
    """Cosine item-item similarity (with shrinkage) from the training users;
    a user's score for item ``j`` = sum of similarities between ``j`` and the
    support items. ``n_neighbors`` keeps each item's strongest neighbours
    (None: all). ``n_neighbors``/``shrink`` left at their "tune" default are
    chosen on validation nDCG@10 over ``neighbor_grid`` x ``shrink_grid``."""

    name = "itemknn"
    max_items = 25_000

    def __init__(self, n_neighbors: int | None | str = "tune", shrink: float | str = "tune",
                 neighbor_grid: Sequence[int | None] = (20, 50, 100, 200),
                 shrink_grid: Sequence[float] = (0.0, 10.0, 50.0)) -> None:
        super().__init__()
        self.n_neighbors, self.shrink = n_neighbors, shrink
        self.neighbor_grid, self.shrink_grid = tuple(neighbor_grid), tuple(shrink_grid)

    @staticmethod
    def _similarity(co: np.ndarray, n_neighbors: int | None, shrink: float) -> np.ndarray:
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + shrink + 1e-12)
        np.fill_diagonal(sim, 0.0)
        if n_neighbors is not None and n_neighbors < sim.shape[0]:
            # Keep each column's strongest neighbours.
            cut = np.partition(sim, -n_neighbors, axis=0)[-n_neighbors]
            sim[sim < cut[None, :]] = 0.0
        return sim.astype(np.float32)

    def fit(self, train: Any, val: Any = None) -> "ItemKNN":
        if train.n_items > self.max_items:
            raise ValueError(f"ItemKNN keeps an n_items x n_items matrix; {train.n_items} items exceed "
                             f"its limit of {self.max_items}")
        x = train_matrix(train, binary=True)
        co = (x.T @ x).toarray()
        self.n_items = train.n_items
        neighbors = list(self.neighbor_grid) if self.n_neighbors == "tune" else [self.n_neighbors]
        shrinks = list(self.shrink_grid) if self.shrink == "tune" else [float(self.shrink)]
        grid = [(k, sh) for k in neighbors for sh in shrinks]
        best = grid[0]
        if len(grid) > 1 and val is not None and len(val):
            from .evaluation import evaluate

            scores = {}
            for cfg in grid:
                self.sim = self._similarity(co, *cfg)
                scores[cfg] = evaluate([self], val, protocols=("full_ranking",), ks=(10,))[self.name]["ndcg@10"]
            best = max(grid, key=lambda c: scores[c])
            self.tuning = {"n_neighbors": best[0], "shrink": best[1], "val_ndcg@10": scores[best],
                           "trials": len(grid)}
        elif len(grid) > 1:  # no validation data: the usual defaults
            best = (100, 10.0)
        self.n_neighbors_, self.shrink_ = best
        self.sim = self._similarity(co, *best)
        return self

    def score(self, tasks: Any) -> np.ndarray:
        self._check_fitted(tasks)
        return np.asarray(support_matrix(tasks, binary=True) @ self.sim)


class EASE(Baseline):
    """Embarrassingly Shallow Autoencoder (Steck, 2019): ``B = I - P / diag(P)``,
    ``P = (X^T X + reg I)^-1``, diagonal zero; score = ``x_support @ B``.
    ``reg`` = None tunes it over ``grid`` on validation nDCG@10."""

    name = "ease"
    max_items = 25_000

    def __init__(self, reg: float | None = None,
                 grid: Sequence[float] = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)) -> None:
        super().__init__()
        self.reg, self.grid = reg, tuple(grid)

    @staticmethod
    def _weights(gram: np.ndarray, reg: float) -> np.ndarray:
        g = gram.copy()
        g[np.diag_indices_from(g)] += reg
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        return b.astype(np.float32)

    def fit(self, train: Any, val: Any = None) -> "EASE":
        if train.n_items > self.max_items:
            raise ValueError(f"EASE inverts an n_items x n_items matrix; {train.n_items} items exceed "
                             f"its limit of {self.max_items}")
        x = train_matrix(train, binary=True)
        gram = (x.T @ x).toarray().astype(np.float64)
        self.n_items = train.n_items
        regs = [self.reg] if self.reg is not None else list(self.grid)
        if len(regs) > 1 and val is not None and len(val):
            from .evaluation import evaluate

            scores = {}
            for reg in regs:
                self.B = self._weights(gram, reg)
                rep = evaluate([self], val, protocols=("full_ranking",), ks=(10,))
                scores[reg] = rep[self.name]["ndcg@10"]
            best = max(scores, key=lambda r: (scores[r], -r))
            self.tuning = {"reg": best, "val_ndcg@10": scores[best], "grid": scores}
        else:
            best = regs[0]
            self.tuning = {"reg": best}
        self.reg_ = best
        self.B = self._weights(gram, best)
        return self

    def score(self, tasks: Any) -> np.ndarray:
        self._check_fitted(tasks)
        return np.asarray(support_matrix(tasks, binary=True) @ self.B)


class ALS(Baseline):
    """Implicit ALS with fold-in for new users.

    Training users' binary interactions ``p_ui`` with confidence
    ``c_ui = 1 + alpha`` (``1`` where absent) and squared loss
    ``sum c_ui (p_ui - x_u . y_i)^2 + reg (|x|^2 + |y|^2)``, minimised by
    ``iterations`` alternating exact solves. A new user's ``x_u`` is the exact
    solve against the fixed item factors on the support set:
    ``(Y^T Y + alpha Y_S^T Y_S + reg I) x_u = (1 + alpha) Y_S^T 1``.
    ``factors``/``reg``/``alpha`` = None tunes each over its grid on validation
    nDCG@10 (every combination, as :class:`EASE` does for its one parameter).
    """

    name = "als"

    def __init__(self, factors: int | None = None, reg: float | None = None, alpha: float | None = None,
                 iterations: int = 10, factor_grid: Sequence[int] = (64,),
                 reg_grid: Sequence[float] = (1.0, 10.0), alpha_grid: Sequence[float] = (10.0, 40.0),
                 random_state: int | None = 0) -> None:
        super().__init__()
        self.factors, self.reg, self.alpha, self.iterations = factors, reg, alpha, int(iterations)
        self.factor_grid, self.reg_grid, self.alpha_grid = tuple(factor_grid), tuple(reg_grid), tuple(alpha_grid)
        self.random_state = random_state

    @staticmethod
    def _solve(fixed: np.ndarray, rows: sp.csr_matrix, reg: float, alpha: float) -> np.ndarray:
        """Each row's exact least-squares factors against the ``fixed`` factors.

        Rows are sorted by length and handled in blocks: each block's ``Y_S^T Y_S``
        is one batched matrix product over its zero-padded gathered factors, then
        one batched solve (no Python loop over rows)."""
        f = fixed.shape[1]
        gram = fixed.T @ fixed + reg * np.eye(f)
        rhs = (1.0 + alpha) * np.asarray(rows @ fixed)
        lengths = np.diff(rows.indptr)
        out = np.zeros((rows.shape[0], f))
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]
        for start in range(0, order.size, 64):
            block = order[start:start + 64]
            width = int(lengths[block].max())
            col = np.arange(width)
            valid = col[None, :] < lengths[block][:, None]
            pos = np.where(valid, rows.indptr[block][:, None] + col[None, :], 0)
            g = fixed[rows.indices[pos]] * valid[..., None]
            a = gram + alpha * (np.ascontiguousarray(g.transpose(0, 2, 1)) @ g)
            out[block] = np.linalg.solve(a, rhs[block][..., None])[..., 0]
        return out

    def _fit_factors(self, x: sp.csr_matrix, factors: int, reg: float, alpha: float) -> np.ndarray:
        rng = np.random.default_rng(self.random_state)
        items = rng.normal(scale=0.01, size=(x.shape[1], factors))
        xt = x.T.tocsr()
        for _ in range(self.iterations):
            users = self._solve(items, x, reg, alpha)
            items = self._solve(users, xt, reg, alpha)
        return items

    def fit(self, train: Any, val: Any = None) -> "ALS":
        x = train_matrix(train, binary=True)
        self.n_items = train.n_items
        grid = [(f, r, a) for f in ([self.factors] if self.factors is not None else self.factor_grid)
                for r in ([self.reg] if self.reg is not None else self.reg_grid)
                for a in ([self.alpha] if self.alpha is not None else self.alpha_grid)]
        if len(grid) > 1 and val is not None and len(val):
            from .evaluation import evaluate

            scores, fitted = {}, {}
            for cfg in grid:
                self.item_factors, (self.reg_, self.alpha_) = self._fit_factors(x, *cfg), cfg[1:]
                fitted[cfg] = self.item_factors
                scores[cfg] = evaluate([self], val, protocols=("full_ranking",), ks=(10,))[self.name]["ndcg@10"]
            best = max(grid, key=lambda c: (scores[c], -c[0], -c[1]))
            self.item_factors = fitted[best]
            self.tuning = {"factors": best[0], "reg": best[1], "alpha": best[2], "val_ndcg@10": scores[best],
                           "trials": len(grid)}
        else:
            best = grid[0]
            self.item_factors = self._fit_factors(x, *best)
            self.tuning = {"factors": best[0], "reg": best[1], "alpha": best[2]}
        self.factors_, self.reg_, self.alpha_ = best
        return self

    def score(self, tasks: Any) -> np.ndarray:
        self._check_fitted(tasks)
        users = self._solve(self.item_factors, support_matrix(tasks, binary=True), self.reg_, self.alpha_)
        return users @ self.item_factors.T


class PretrainFinetune(Baseline):
    """Biased MF pretrained on all training interactions, no meta-learning; a new
    user's ``(p, b)`` starts at the mean training user and takes ``steps``
    gradient steps of size ``lr`` on the support set (the same C++ inner loop the
    meta-learners use). ``steps``/``lr`` = None tunes them on validation RMSE."""

    name = "pretrain-finetune"
    predicts_ratings = True

    def __init__(self, dim: int = 32, epochs: int = 30, learning_rate: float = 0.01,
                 weight_decay: float = 0.02, batch_size: int = 4096, steps: int | None = None,
                 lr: float | None = None, step_grid: Sequence[int] = (0, 1, 3, 5, 10, 20),
                 lr_grid: Sequence[float] = (0.01, 0.03, 0.1, 0.3), l2: float = 0.0,
                 random_state: int | None = 0) -> None:
        super().__init__()
        self.dim, self.epochs, self.learning_rate = dim, epochs, learning_rate
        self.weight_decay, self.batch_size = weight_decay, batch_size
        self.steps, self.lr, self.step_grid, self.lr_grid = steps, lr, tuple(step_grid), tuple(lr_grid)
        self.l2, self.random_state = l2, random_state

    def fit(self, train: Any, val: Any = None, show_progress: bool = False) -> "PretrainFinetune":
        import torch

        if getattr(train, "implicit", False):
            raise ValueError("PretrainFinetune fits explicit ratings; this task set is implicit feedback")
        m = train_matrix(train).tocoo()
        n_users, n_items = m.shape
        self.n_items = n_items
        gen = torch.Generator().manual_seed(self.random_state or 0)
        u = torch.as_tensor(m.row, dtype=torch.int64)
        i = torch.as_tensor(m.col, dtype=torch.int64)
        r = torch.as_tensor(m.data, dtype=torch.float32)
        mu = float(r.mean()) if len(r) else 0.0
        P = torch.nn.Parameter(torch.randn(n_users, self.dim, generator=gen) * 0.05)
        Q = torch.nn.Parameter(torch.randn(n_items, self.dim, generator=gen) * 0.05)
        bu = torch.nn.Parameter(torch.zeros(n_users))
        bi = torch.nn.Parameter(torch.zeros(n_items))
        opt = torch.optim.Adam([P, Q, bu, bi], lr=self.learning_rate)
        n = len(r)
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                uu, ii = u[idx], i[idx]
                pred = mu + bu[uu] + bi[ii] + (P[uu] * Q[ii]).sum(1)
                loss = ((pred - r[idx]) ** 2).mean()
                loss = loss + self.weight_decay * ((P[uu] ** 2).sum(1) + (Q[ii] ** 2).sum(1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.H = Q.detach().numpy().astype(np.float64)
        self.c = (mu + bi.detach().numpy()).astype(np.float64)
        self.p0 = P.detach().numpy().mean(0).astype(np.float64)
        self.b0 = float(bu.detach().numpy().mean())
        steps = [self.steps] if self.steps is not None else list(self.step_grid)
        lrs = [self.lr] if self.lr is not None else list(self.lr_grid)
        best = (math.inf, steps[0], lrs[0])
        if val is not None and len(val) and (len(steps) > 1 or len(lrs) > 1):
            for s in steps:
                for a in lrs:
                    rmse = self._val_rmse(val, s, a)
                    if rmse < best[0]:
                        best = (rmse, s, a)
        self.steps_, self.lr_ = best[1], best[2]
        self.tuning = {"steps": self.steps_, "lr": self.lr_, "val_rmse": best[0]}
        return self

    def _adapt(self, tasks: Any, steps: int, lr: float):
        from .ops.adapt import linear_head_adapt

        s = tasks.support
        return linear_head_adapt(self.H, self.c, (s.indptr, s.items, s.ratings), self.p0, self.b0,
                                 alpha=lr, steps=steps, l2=self.l2)

    def _val_rmse(self, val: Any, steps: int, lr: float) -> float:
        res = self._adapt(val, steps, lr)
        rows = np.repeat(np.arange(len(val)), val.query.lengths)
        it = val.query.items
        pred = (self.H[it] * res.p[rows]).sum(1) + res.b[rows] + self.c[it]
        err = float(np.sqrt(np.mean((pred - val.query.ratings) ** 2)))
        return err if math.isfinite(err) else math.inf

    def score(self, tasks: Any) -> np.ndarray:
        self._check_fitted(tasks)
        res = self._adapt(tasks, self.steps_, self.lr_)
        return res.p @ self.H.T + res.b[:, None] + self.c[None, :]


def default_baselines(implicit: bool = False) -> list[Baseline]:
    """The baselines every report includes."""
    base: list[Baseline] = [Popularity(), ItemKNN(), EASE(), ALS()]
    if not implicit:
        base = [Popularity(), BiasBaseline(), PretrainFinetune(), ItemKNN(), EASE(), ALS()]
    return base
