"""Serving: adapt a trained model to new users and recommend, with numpy and C++ only.

``import metarec_fast.serving`` never imports torch: a :class:`Recommender` holds
plain arrays (item representations, offsets, the meta-learned initial head and
inner-loop settings), adapts users with the C++ inner loop and ranks the
catalogue with the fused top-k kernel.

    rec = Recommender.from_model(model, learner)       # or Recommender.load("bundle.npz")
    states = rec.adapt(([10, 42, 7], [5.0, 3.0, 4.0]))  # one new user, 3 ratings
    ids, scores = rec.recommend(states, k=10)           # seen items excluded
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._io import read_container, write_container
from ._validation import as_float_array, as_index_array, check_k
from .ops.adapt import check_inner_loop, linear_head_adapt

FORMAT = "metarec-fast-recommender"
FORMAT_VERSION = 1
# adapt() keeps every inner step ([users, steps + 1, d + 1]): a bundle may not ask for absurd
# numbers (meta-learned inner loops run 1-20 steps).
MAX_BUNDLE_STEPS = 10_000


@dataclass
class UserStates:
    """Adapted heads of a batch of users and the items each has interacted with.

    ``p [n_users, d]``, ``b [n_users]``; ``seen_indptr``/``seen_items`` list
    every item given to :meth:`Recommender.adapt` so far (CSR, for exclusion).
    """

    p: np.ndarray
    b: np.ndarray
    seen_indptr: np.ndarray
    seen_items: np.ndarray

    def __len__(self) -> int:
        return int(self.p.shape[0])

    def __getitem__(self, index: Any) -> "UserStates":
        rows = np.arange(len(self))[index]
        rows = np.atleast_1d(rows)
        starts, ends = self.seen_indptr[rows], self.seen_indptr[rows + 1]
        items = [self.seen_items[s:e] for s, e in zip(starts, ends)]
        indptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
        flat = np.concatenate(items) if items else np.zeros(0, np.int64)
        return UserStates(self.p[rows], self.b[rows], indptr, flat.astype(np.int64))


def _support_csr(support: Any, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accept CSR, (items, ratings) for one user, or a list of those for many."""
    if hasattr(support, "tocsr") and hasattr(support, "indptr"):
        csr = support.tocsr()
        return (np.asarray(csr.indptr, np.int64), np.asarray(csr.indices, np.int64),
                np.asarray(csr.data, np.float64))
    if isinstance(support, tuple) and len(support) == 3:
        indptr, items, ratings = support
        return (np.asarray(indptr, np.int64), np.asarray(items), np.asarray(ratings))
    if isinstance(support, tuple) and len(support) == 2:
        support = [support]
    if isinstance(support, list):
        lengths, items, ratings = [], [], []
        for u, pair in enumerate(support):
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError(f"support[{u}] must be an (item_ids, ratings) pair")
            it, rt = np.asarray(pair[0]).reshape(-1), np.asarray(pair[1], dtype=np.float64).reshape(-1)
            if it.size == 0:
                it = it.astype(np.int64)  # np.asarray([]) is float64
            if it.shape != rt.shape:
                raise ValueError(f"support[{u}] has {it.size} items but {rt.size} ratings")
            lengths.append(it.size)
            items.append(it)
            ratings.append(rt)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat_items = np.concatenate(items) if items else np.zeros(0, np.int64)
        flat_ratings = np.concatenate(ratings) if ratings else np.zeros(0)
        return indptr, flat_items, flat_ratings
    raise TypeError(
        "support must be a scipy CSR matrix, (item_ids, ratings) for one user, a list of "
        f"such pairs, or (indptr, items, ratings); got {type(support).__name__}"
    )


class Recommender:
    """Fast adaptation and top-k recommendation for new users, without torch.

    Args:
        item_vectors: ``[n_items, d]`` item representations ``h_i``.
        item_offsets: ``[n_items]`` ``c_i`` (item bias + global bias).
        p0, b0: the meta-learned initial head ``theta_0``.
        alpha: inner learning rate, scalar or ``[d]`` (Meta-SGD); ``alpha_b``
            the bias's rate (default: ``alpha`` when scalar).
        steps, l2, loss: the inner loop used at meta-training time.
        init_weight, init_bias: optional user-feature conditioning
            ``theta_0(x) = (p0, b0) + x @ init_weight.T + init_bias``
            (``init_weight [d + 1, F]``).
        encoder_table, encoder_weight, encoder_bias: optional amortised start
            (a :class:`~metarec_fast.models.MetaMF` with ``support_encoder=True``):
            ``theta_0(S) += f(S) @ encoder_weight.T + encoder_bias`` where ``f(S)``
            pools the support items' rows of ``encoder_table [n_items, e]``
            (:func:`support_features`).
        config: free-form metadata kept in saved bundles.
    """

    def __init__(
        self,
        item_vectors: Any,
        item_offsets: Any,
        p0: Any,
        b0: float,
        alpha: Any = 0.1,
        alpha_b: float | None = None,
        steps: int = 5,
        l2: float = 0.0,
        loss: str = "mse",
        init_weight: Any = None,
        init_bias: Any = None,
        encoder_table: Any = None,
        encoder_weight: Any = None,
        encoder_bias: Any = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.item_vectors = as_float_array(item_vectors, "item_vectors", 2)
        dtype = self.item_vectors.dtype
        self.n_items, self.dim = self.item_vectors.shape
        self.item_offsets = as_float_array(item_offsets, "item_offsets", 1, dtype=dtype)
        if self.item_offsets.shape[0] != self.n_items:
            raise ValueError(f"item_offsets must have {self.n_items} entries, got {self.item_offsets.shape[0]}")
        self.p0 = as_float_array(np.asarray(p0, dtype=dtype), "p0", 1)
        if self.p0.shape[0] != self.dim:
            raise ValueError(f"p0 must have {self.dim} entries, got {self.p0.shape[0]}")
        self.b0 = float(b0)
        self.alpha = np.asarray(alpha, dtype=dtype).reshape(-1)
        if self.alpha.shape[0] not in (1, self.dim):
            raise ValueError(f"alpha must be a scalar or have {self.dim} entries")
        if alpha_b is None:
            if self.alpha.shape[0] != 1:
                raise ValueError("alpha_b is required when alpha is per parameter")
            alpha_b = float(self.alpha[0])
        self.alpha_b = float(alpha_b)
        self.steps, self.l2, self.loss = check_inner_loop(steps, l2, loss)
        self.init_weight = None if init_weight is None else as_float_array(init_weight, "init_weight", 2, dtype=dtype)
        self.init_bias = None if init_bias is None else as_float_array(init_bias, "init_bias", 1, dtype=dtype)
        if self.init_weight is not None and self.init_weight.shape[0] != self.dim + 1:
            raise ValueError(f"init_weight must be [{self.dim + 1}, F], got {self.init_weight.shape}")
        self._set_encoder(encoder_table, encoder_weight, encoder_bias)
        self.config = dict(config or {})

    def _set_encoder(self, table: Any, weight: Any, bias: Any) -> None:
        given = [x is not None for x in (table, weight, bias)]
        if any(given) and not all(given):
            raise ValueError("encoder_table, encoder_weight and encoder_bias go together")
        self.encoder_table = self.encoder_weight = self.encoder_bias = None
        if not all(given):
            return
        dtype = self.item_vectors.dtype
        self.encoder_table = as_float_array(table, "encoder_table", 2, dtype=dtype)
        self.encoder_weight = as_float_array(weight, "encoder_weight", 2, dtype=dtype)
        self.encoder_bias = as_float_array(bias, "encoder_bias", 1, dtype=dtype)
        e = self.encoder_table.shape[1]
        want = support_feature_dim(e, self.loss)
        if self.encoder_table.shape[0] != self.n_items:
            raise ValueError(f"encoder_table must have {self.n_items} rows, got {self.encoder_table.shape[0]}")
        if self.encoder_weight.shape != (self.dim + 1, want) or self.encoder_bias.shape != (self.dim + 1,):
            raise ValueError(f"encoder_weight/encoder_bias must be [{self.dim + 1}, {want}] and "
                             f"[{self.dim + 1}], got {self.encoder_weight.shape} and {self.encoder_bias.shape}")

    # -- construction -----------------------------------------------------
    @classmethod
    def from_model(cls, model: Any, learner: Any = None, dtype: Any = np.float32, **config: Any) -> "Recommender":
        """Build from a trained :class:`~metarec_fast.models.MetaMF` (and its
        :class:`~metarec_fast.meta.MetaLearner` or trainer for the inner-loop settings)."""
        if learner is not None and hasattr(learner, "learner"):
            learner = learner.learner  # a MetaTrainer
        H, c = model.item_representations()

        def arr(t: Any) -> np.ndarray:
            return np.asarray(t.detach().cpu().numpy(), dtype=dtype)

        kw: dict[str, Any] = dict(steps=5, alpha=0.1, l2=0.0)
        if learner is not None:
            kw = dict(steps=learner.inner_steps, l2=learner.l2, alpha=learner.base_lr)
            if learner.inner_lrs is not None:
                lrs = dict(zip(learner.adapted_names, learner.inner_lrs))
                kw["alpha"], kw["alpha_b"] = arr(lrs["head_p"]), float(lrs["head_b"].detach())
        init_net = getattr(model, "init_net", None)
        if init_net is not None:
            kw["init_weight"], kw["init_bias"] = arr(init_net.weight), arr(init_net.bias)
        encoder = getattr(model, "encoder", None)
        if encoder is not None:
            kw["encoder_table"] = arr(model.encoder_table)
            kw["encoder_weight"], kw["encoder_bias"] = arr(encoder.weight), arr(encoder.bias)
        return cls(arr(H), arr(c), arr(model.head_p), float(model.head_b.detach()), loss=model.loss,
                   config={"model": type(model).__name__, **config}, **kw)

    # -- adaptation -------------------------------------------------------
    def initial_state(self, n_users: int, user_features: Any = None,
                      support: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``theta_0`` for ``n_users`` new users: conditioned on their features and,
        for a model with a support encoder, computed from their support sets
        (``support``: ``(indptr, items, targets)``, required then)."""
        p = np.broadcast_to(self.p0, (n_users, self.dim)).copy()
        b = np.full(n_users, self.b0, dtype=self.p0.dtype)
        if self.init_weight is not None:
            if user_features is None:
                raise ValueError("this model conditions theta_0 on user features; pass user_features")
            x = as_float_array(np.asarray(user_features, dtype=self.p0.dtype), "user_features", 2)
            if x.shape != (n_users, self.init_weight.shape[1]):
                raise ValueError(f"user_features must be [{n_users}, {self.init_weight.shape[1]}], got {x.shape}")
            shift = x @ self.init_weight.T + self.init_bias
            p += shift[:, : self.dim]
            b += shift[:, self.dim]
        if self.encoder_table is not None:
            if support is None:
                raise ValueError("this model computes theta_0 from the support set; pass support")
            shift = support_features(self.encoder_table, self.item_offsets, *support, self.loss)
            shift = shift @ self.encoder_weight.T + self.encoder_bias
            p += shift[:, : self.dim]
            b += shift[:, self.dim]
        return p, b

    def adapt(
        self,
        support: Any,
        state: UserStates | None = None,
        user_features: Any = None,
        steps: int | None = None,
        num_threads: int | None = None,
    ) -> UserStates:
        """Adapt users to their support interactions (in C++).

        ``support``: ``(item_ids, ratings)`` for one user, a list of such pairs,
        a scipy CSR ``(n_users, n_items)`` of ratings, or ``(indptr, items,
        ratings)``. With ``state`` the users continue from their previous heads on
        the *new* interactions only (online updates), and their seen items grow.
        """
        indptr, items, ratings = _support_csr(support, self.n_items)
        n_users = indptr.shape[0] - 1
        items = as_index_array(items, "support items", self.n_items)
        if state is None:
            p0, b0 = self.initial_state(n_users, user_features, support=(indptr, items, ratings))
            seen_indptr, seen_items = indptr, items
        else:
            if len(state) != n_users:
                raise ValueError(f"state has {len(state)} users, support has {n_users}")
            p0, b0 = state.p, state.b
            seen_indptr, seen_items = _concat_rows(state.seen_indptr, state.seen_items, indptr, items)
        result = linear_head_adapt(
            self.item_vectors, self.item_offsets, (indptr, items, ratings), p0, b0,
            alpha=self.alpha if self.alpha.shape[0] > 1 else float(self.alpha[0]),
            alpha_b=self.alpha_b, steps=self.steps if steps is None else steps, l2=self.l2,
            loss=self.loss, num_threads=num_threads,
        )
        return UserStates(np.ascontiguousarray(result.p), np.ascontiguousarray(result.b),
                          seen_indptr, seen_items)

    # -- scoring ----------------------------------------------------------
    def score(self, states: UserStates, items: Any) -> np.ndarray:
        """Predictions ``[n_users, n]`` for the given item ids (same items for every user)."""
        items = as_index_array(items, "items", self.n_items)
        return states.p @ self.item_vectors[items].T + states.b[:, None] + self.item_offsets[items]

    def recommend(
        self,
        states: UserStates,
        k: int = 10,
        exclude_seen: bool = True,
        filter_items: Sequence[int] | np.ndarray | None = None,
        num_threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per user: ``(ids int64 [n_users, k], scores float32)``.

        Items the user gave to :meth:`adapt` are excluded unless
        ``exclude_seen=False``; ``filter_items`` are excluded for everyone.
        Ties go to the lower item id; missing slots are id -1, score -inf.
        """
        from .ops import topk_dot

        k = check_k(k)
        n = len(states)
        indptr = np.zeros(n + 1, dtype=np.int64)
        items = np.zeros(0, dtype=np.int64)
        if exclude_seen:
            indptr, items = states.seen_indptr, states.seen_items
        if filter_items is not None:
            blocked = np.unique(as_index_array(filter_items, "filter_items", self.n_items))
            per_user = np.tile(blocked, n)
            b_indptr = np.arange(n + 1, dtype=np.int64) * blocked.size
            indptr, items = _concat_rows(indptr, items, b_indptr, per_user)
        queries = np.ascontiguousarray(states.p, dtype=self.item_vectors.dtype)
        ids, scores = topk_dot(queries, self.item_vectors, k, item_bias=self.item_offsets,
                               exclude=(indptr, items), num_threads=num_threads)
        scores = scores + states.b[:, None].astype(np.float32)
        return ids, scores

    # -- persistence ------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"item_vectors": self.item_vectors, "item_offsets": self.item_offsets,
                  "p0": self.p0, "alpha": self.alpha}
        if self.init_weight is not None:
            arrays["init_weight"] = self.init_weight
            arrays["init_bias"] = self.init_bias
        if self.encoder_table is not None:
            arrays["encoder_table"] = self.encoder_table
            arrays["encoder_weight"] = self.encoder_weight
            arrays["encoder_bias"] = self.encoder_bias
        return arrays

    def save(self, path: str | Path, key: bytes | str | None = None) -> Path:
        """Write an ``.npz`` bundle (no pickles) with a JSON header, atomically.

        With ``key`` (bytes or str) the bundle is signed: an HMAC-SHA256 over
        the header, which holds every array's SHA-256, so that
        ``load(path, key=key)`` accepts only bundles made with the same key.
        """
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dtype": str(self.item_vectors.dtype),
            "b0": self.b0, "alpha_b": self.alpha_b, "steps": self.steps, "l2": self.l2,
            "loss": self.loss, "config": self.config,
        }
        return write_container(path, header, self._arrays(), key=key)

    @classmethod
    def load(cls, path: str | Path, key: bytes | str | None = None) -> "Recommender":
        """Read a bundle written by :meth:`save`; a truncated, corrupted, foreign or
        hostile file raises ValueError saying so. Nothing in the file is executed
        and no array larger than the file is allocated.

        With ``key``, only a bundle signed with that key loads (an unsigned one,
        or one signed with another key, raises ValueError). Without ``key``, a
        signed bundle loads with its signature unchecked (logged at INFO level):
        its checksums still detect corruption, but not deliberate changes.
        """
        header, arrays = read_container(path, FORMAT, "metarec-fast bundle", key=key)
        if header.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} has bundle format version {header.get('version')}, "
                             f"this metarec-fast reads version {FORMAT_VERSION}")
        missing = {"item_vectors", "item_offsets", "p0", "alpha"} - set(arrays)
        if missing:
            raise ValueError(f"{path} is not a complete metarec-fast bundle: no {sorted(missing)}")
        steps = header.get("steps")
        if type(steps) is int and steps > MAX_BUNDLE_STEPS:
            raise ValueError(f"{path} asks for {steps} inner steps, more than the {MAX_BUNDLE_STEPS} a bundle may")
        try:
            return cls(
                arrays["item_vectors"], arrays["item_offsets"], arrays["p0"], header["b0"],
                alpha=arrays["alpha"], alpha_b=header["alpha_b"], steps=header["steps"], l2=header["l2"],
                loss=header["loss"], init_weight=arrays.get("init_weight"), init_bias=arrays.get("init_bias"),
                encoder_table=arrays.get("encoder_table"), encoder_weight=arrays.get("encoder_weight"),
                encoder_bias=arrays.get("encoder_bias"), config=header["config"],
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path} is not a valid metarec-fast bundle: {exc!r}") from exc


#: Prior strength of the shrunk mean residual; equals ``models.mf.SUPPORT_SHRINK``
#: (tests check it; serving cannot import the torch-based models module).
SUPPORT_SHRINK = 5.0


def support_feature_dim(dim: int, loss: str) -> int:
    """Width of :func:`support_features` for an encoder table of ``dim`` columns."""
    return dim if loss == "logistic" else 2 * dim + 1


def support_features(table: np.ndarray, offsets: np.ndarray, indptr: np.ndarray, items: np.ndarray,
                     targets: np.ndarray, loss: str) -> np.ndarray:
    """numpy twin of :func:`metarec_fast.models.mf.support_features` on CSR support
    sets, pooled with the embedding-bag kernel: ``[n_users, F]``."""
    from .ops import embedding_bag

    dtype = table.dtype
    indptr = np.asarray(indptr, np.int64)
    items = np.asarray(items, np.int64)
    targets = np.asarray(targets, dtype)
    offsets_ = indptr[:-1]
    rows = np.repeat(np.arange(len(offsets_)), np.diff(indptr))
    if loss == "logistic":
        w = (targets > 0).astype(dtype)
        n = np.bincount(rows, w, minlength=len(offsets_)).astype(dtype)
        pooled = embedding_bag(table, items, offsets_, weights=w, mode="sum")
        return pooled / np.maximum(n, 1.0)[:, None]
    n = np.diff(indptr).astype(dtype)[:, None]
    resid = targets - offsets[items]
    mean_e = embedding_bag(table, items, offsets_, mode="sum") / np.maximum(n, 1.0)
    mean_re = embedding_bag(table, items, offsets_, weights=resid, mode="sum") / np.maximum(n, 1.0)
    shrunk = np.bincount(rows, resid, minlength=len(offsets_)).astype(dtype)[:, None] / (n + SUPPORT_SHRINK)
    return np.concatenate([mean_e, mean_re, shrunk], 1)


def _concat_rows(indptr_a: np.ndarray, items_a: np.ndarray, indptr_b: np.ndarray,
                 items_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise concatenation of two CSR item lists with the same number of rows."""
    la, lb = np.diff(indptr_a), np.diff(indptr_b)
    indptr = np.concatenate([[0], np.cumsum(la + lb)]).astype(np.int64)
    out = np.empty(indptr[-1], dtype=np.int64)
    starts = indptr[:-1]
    pos_a = np.repeat(starts, la) + (np.arange(la.sum()) - np.repeat(indptr_a[:-1], la))
    pos_b = np.repeat(starts + la, lb) + (np.arange(lb.sum()) - np.repeat(indptr_b[:-1], lb))
    out[pos_a] = items_a
    out[pos_b] = items_b
    return indptr, out
