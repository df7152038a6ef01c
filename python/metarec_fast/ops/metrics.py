"""Ranking and rating metrics over many users at once (C++ backed).

Three entry points, matching the evaluation protocols in DESIGN.md:

* :func:`ranking` -- full-catalogue ranking: top-k rows (as returned by
  :func:`metarec_fast.ops.topk`) scored against each query's relevant items:
  precision, recall (plain and capped), nDCG (binary, and graded with gains),
  hit rate, MAP and MRR at every cutoff, all in one pass per row.
* :func:`rating` -- MAE and RMSE, over all rows and per user.
* :func:`query_ndcg` -- MeLU's within-query ranking: each user's query items
  ordered by prediction, nDCG with graded gain ``2^rating - 1``.

Every kernel runs with the GIL released, parallel over queries; each query's
values are computed independently and means are summed in a fixed order, so
results are identical for any ``num_threads``. Inputs may be numpy arrays or
CPU torch tensors; results are numpy arrays and Python floats.

Definitions used by :func:`ranking` (``rel`` = the query's relevant items,
``hits@k`` = relevant items among the first ``k`` ids of its row, rank
``r`` starting at 1, discount ``1 / log2(r + 1)``)::

    precision@k      hits@k / k
    recall@k         hits@k / |rel|
    recall_capped@k  hits@k / min(k, |rel|)
    ndcg@k           sum_{hit r <= k} 1/log2(r+1)  /  sum_{r <= min(k, |rel|)} 1/log2(r+1)
    ndcg_graded@k    sum_{hit r <= k} (2^g - 1)/log2(r+1)  /  same over the gains sorted
                     descending, first min(k, |rel|) of them (0 when that IDCG is 0)
    hr@k             1 if hits@k > 0 else 0
    map@k            sum_{hit r <= k} (hits@r / r)  /  min(k, |rel|)
    mrr@k            1 / (rank of the first hit) if it is <= k else 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .. import _core
from .._config import resolve_num_threads
from .._validation import as_float_array, as_index_array, to_numpy

__all__ = ["RANKING_METRICS", "MetricResult", "query_ndcg", "ranking", "rating"]

#: Metric names of :func:`ranking`, in the order of its result; ``ndcg_graded``
#: is added (last) when gains are given.
RANKING_METRICS: tuple[str, ...] = ("precision", "recall", "recall_capped", "ndcg", "hr", "map", "mrr")

_NO_UPPER_BOUND = np.iinfo(np.int64).max
_MAX_GAIN = 512.0  # 2^g - 1, and sums of many of them, stay finite in float64


@dataclass
class MetricResult:
    """Per-query metric values and their means.

    Attributes:
        per_query: ``"name@k"`` -> float64 array with one value per query
            (user); NaN for a skipped query.
        mean: ``"name@k"`` -> mean over the evaluated queries only (NaN when
            none was evaluated).
        n_evaluated: queries that entered the means.
        n_skipped: queries left out (no relevant item / IDCG of 0).
        ks: the cutoffs, ascending, duplicates removed.
        n_relevant: for :func:`ranking`, the number of relevant items of each
            query (``None`` for :func:`query_ndcg`).
    """

    per_query: dict[str, np.ndarray]
    mean: dict[str, float]
    n_evaluated: int
    n_skipped: int
    ks: tuple[int, ...]
    n_relevant: np.ndarray | None = field(default=None, repr=False)

    @property
    def evaluated(self) -> np.ndarray:
        """Boolean mask of the queries that entered the means."""
        first = next(iter(self.per_query.values()), None)
        if first is None:
            return np.zeros(0, dtype=bool)
        return ~np.isnan(first)

    def __getitem__(self, key: str) -> float:
        """``result["ndcg@10"]`` is ``result.mean["ndcg@10"]``."""
        return self.mean[key]

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        """A flat, JSON-friendly dict: every mean, ``n_evaluated`` and ``n_skipped``;
        with ``per_query=True`` also ``"per_query"``: name -> list of floats."""
        d: dict[str, Any] = dict(self.mean)
        d["n_evaluated"] = self.n_evaluated
        d["n_skipped"] = self.n_skipped
        if per_query:
            d["per_query"] = {k: v.tolist() for k, v in self.per_query.items()}
        return d


# ----------------------------------------------------------------- checks


def _check_ks(ks: Any) -> np.ndarray:
    """``ks`` (an int or an iterable of ints) as a sorted, duplicate-free int64 array.

    ValueError for anything that is not a positive integer (bools included),
    and for an empty ``ks``.
    """
    items: Iterable[Any]
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, (bool, np.bool_)):
        items = (ks,)
    elif isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise ValueError(f"ks must be a positive int or a sequence of them, got {ks!r}")
    else:
        items = list(np.asarray(ks).ravel()) if hasattr(ks, "dtype") else list(ks)
    out = []
    for k in items:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"ks must contain positive integers, got {k!r}")
        if k <= 0 or k >= 2**62:
            raise ValueError(f"ks must contain positive integers below 2**62, got {int(k)}")
        out.append(int(k))
    if not out:
        raise ValueError("ks must not be empty")
    return np.array(sorted(set(out)), dtype=np.int64)


def _as_ids(x: Any, name: str, ndim: int) -> np.ndarray:
    """An int32/int64 C-contiguous array (other integer dtypes -> int64, once).

    Range checks happen in the kernel's own pass (see :func:`ranking`)."""
    a = to_numpy(x, name)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-d, got shape {a.shape}")
    if a.dtype.kind == "u" and a.size and a.max() > _NO_UPPER_BOUND:
        raise IndexError(f"{name} contains id {int(a.max())}, outside the int64 range")
    if a.dtype in (np.dtype(np.int32), np.dtype(np.int64)):
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a, dtype=np.int64)


def _as_values(x: Any, name: str, ndim: int | tuple[int, ...], allow_int: bool) -> np.ndarray:
    """A finite float32/float64 array; integer input -> float64 when ``allow_int``."""
    a = to_numpy(x, name)
    if allow_int and a.dtype != np.bool_ and np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float64)
    return as_float_array(a, name, ndim, finite=True)


def _check_gain_range(g: np.ndarray, name: str) -> None:
    """Graded gains are 2^g - 1: g must lie in [0, 512] (finite already checked)."""
    if g.size == 0:
        return
    bad = (g < 0) | (g > _MAX_GAIN)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must lie in [0, {_MAX_GAIN:g}] (gain 2^g - 1), got {g[i]} at index {i}")


def _relevant(relevant: Any, n_queries: int, n_items: int | None) -> tuple[np.ndarray, np.ndarray, Any, int]:
    """(indptr int64, indices int32/int64, raw data or None, n_items bound)."""
    if hasattr(relevant, "tocsr") and hasattr(relevant, "indptr"):
        fmt = getattr(relevant, "format", "csr")
        if fmt != "csr":
            raise TypeError(f"relevant must be a CSR matrix, got format {fmt!r}; call .tocsr()")
        if relevant.shape[0] != n_queries:
            raise ValueError(
                f"relevant must have {n_queries} rows (one per topk_ids row), got shape {relevant.shape}"
            )
        if n_items is not None and n_items != relevant.shape[1]:
            raise ValueError(f"n_items={n_items} disagrees with relevant.shape[1]={relevant.shape[1]}")
        indptr, indices, data = relevant.indptr, relevant.indices, relevant.data
        bound = int(relevant.shape[1])
    elif isinstance(relevant, tuple) and len(relevant) in (2, 3):
        indptr, indices = relevant[0], relevant[1]
        data = relevant[2] if len(relevant) == 3 else None
        if n_items is None:
            bound = _NO_UPPER_BOUND
        else:
            if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)):
                raise TypeError(f"n_items must be an int, got {type(n_items).__name__}")
            if n_items < 0:
                raise ValueError(f"n_items must be >= 0, got {n_items}")
            bound = int(n_items)
    else:
        raise TypeError(
            "relevant must be a scipy.sparse CSR matrix or an (indptr, indices[, data]) tuple, "
            f"got {type(relevant).__name__}"
        )
    indptr = as_index_array(indptr, "relevant.indptr")
    if indptr.shape[0] != n_queries + 1:
        raise ValueError(
            f"relevant.indptr must have {n_queries + 1} entries (n_queries + 1), got {indptr.shape[0]}"
        )
    indices = _as_ids(indices, "relevant.indices", 1)
    return indptr, indices, data, bound


# ---------------------------------------------------------------- ranking


def ranking(
    topk_ids: Any,
    relevant: Any,
    ks: int | Iterable[int] = (5, 10, 20),
    gains: Any = None,
    num_threads: int | None = None,
    *,
    n_items: int | None = None,
) -> MetricResult:
    """Ranking metrics of top-k rows against each query's relevant items.

    Args:
        topk_ids: integer array ``[n_queries, K]``, row ``q`` the ranked item
            ids of query ``q`` (best first). ``-1`` is padding (what
            :func:`metarec_fast.ops.topk` returns when fewer than ``k``
            candidates remain): never a hit, but it still occupies its rank.
            A row is read as if padded with ``-1`` up to ``max(ks)``, so a
            cutoff beyond ``K`` uses the ``K`` ids available and ``K >=
            max(ks)`` is not required. An id repeated within a row counts
            once (at its first rank).
        relevant: the relevant items: a scipy.sparse CSR matrix ``(n_queries,
            n_items)`` or an ``(indptr, indices[, data])`` tuple. Every
            stored entry is relevant (explicit zeros included); order within
            a row does not matter; an item listed twice in a row is a
            ValueError.
        ks: the cutoffs (positive ints; sorted, duplicates dropped).
        gains: ``None`` (binary relevance only), ``"data"`` (the CSR's data,
            or the tuple's third array, as graded relevance ``g``), or an
            array aligned with ``relevant``'s indices. Adds ``ndcg_graded@k``
            with gain ``2^g - 1``; ``g`` must lie in ``[0, 512]``.
        num_threads: None = OpenMP default, -1 = all cores, n > 0 = n.
        n_items: catalogue size, for the tuple form only (a CSR matrix's
            ``shape[1]`` is used, and a different ``n_items`` is a
            ValueError). Ids must lie in ``[0, n_items)``; without it (tuple
            form) ids are only checked to be non-negative (``-1`` padding
            allowed in ``topk_ids``), i.e. ``n_items`` is effectively the
            largest id + 1.

    Returns:
        A :class:`MetricResult` with keys ``precision@k``, ``recall@k``,
        ``recall_capped@k``, ``ndcg@k``, ``hr@k``, ``map@k``, ``mrr@k`` (and
        ``ndcg_graded@k``) for every ``k``. Queries with no relevant item
        are NaN in ``per_query``, excluded from ``mean`` and counted in
        ``n_skipped``. No queries -> empty arrays and NaN means.

    Raises:
        TypeError: non-integer ids, non-numeric gains, ``relevant`` of the
            wrong kind.
        ValueError: shapes that disagree, NaN/inf or out-of-range gains, bad
            ``ks``, malformed ``relevant.indptr``, a duplicate relevant item.
        IndexError: an id in ``topk_ids`` outside ``[-1, n_items)`` or in
            ``relevant`` outside ``[0, n_items)``; the first such id in query
            order is named. These per-id checks run inside the kernel's
            single pass over the data (no extra Python pass), in the same
            order for every thread count.
    """
    threads = resolve_num_threads(num_threads)
    ks_arr = _check_ks(ks)
    top = _as_ids(topk_ids, "topk_ids", 2)
    n_queries = top.shape[0]
    indptr, indices, data, bound = _relevant(relevant, n_queries, n_items)

    g = None
    if gains is not None:
        if isinstance(gains, str):
            if gains != "data":
                raise ValueError(f"gains must be None, 'data' or an array, got {gains!r}")
            if data is None:
                raise ValueError(
                    "gains='data' needs relevant data (a CSR matrix or an (indptr, indices, data) tuple)"
                )
            g, name = data, "relevant.data"
        else:
            g, name = gains, "gains"
        g = _as_values(g, name, 1, allow_int=True)
        if g.shape[0] != indices.shape[0]:
            raise ValueError(
                f"{name} has {g.shape[0]} entries but relevant has {indices.shape[0]} stored items"
            )
        g = np.ascontiguousarray(g, dtype=np.float64)
        _check_gain_range(g, name)

    values, means, n_relevant, n_eval = _core.ranking_metrics(
        top, indptr, indices, g, bound, ks_arr, threads
    )
    names = RANKING_METRICS + (("ndcg_graded",) if g is not None else ())
    kl = [int(k) for k in ks_arr]
    per_query: dict[str, np.ndarray] = {}
    mean: dict[str, float] = {}
    for m, metric in enumerate(names):
        for j, k in enumerate(kl):
            key = f"{metric}@{k}"
            per_query[key] = values[m, j]
            mean[key] = float(means[m, j])
    return MetricResult(
        per_query=per_query,
        mean=mean,
        n_evaluated=int(n_eval),
        n_skipped=int(n_queries - n_eval),
        ks=tuple(kl),
        n_relevant=n_relevant,
    )


# ----------------------------------------------------------------- rating


def _pair(pred: Any, true: Any, flat: bool) -> tuple[np.ndarray, np.ndarray]:
    p = _as_values(pred, "pred", (1, 2), allow_int=False)
    t = _as_values(true, "true", (1, 2), allow_int=True)
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but true has shape {t.shape}")
    if flat:
        p, t = p.reshape(-1), t.reshape(-1)
    elif p.ndim != 1:
        raise ValueError(f"pred and true must be 1-d with indptr, got shape {p.shape}")
    return p, t


def _group_indptr(indptr: Any, n: int) -> np.ndarray:
    ip = as_index_array(indptr, "indptr")
    if ip.shape[0] < 1:
        raise ValueError("indptr must have at least one entry (n_users + 1)")
    return ip  # start / monotonicity / end == n are checked by the kernel


def rating(
    pred: Any, true: Any, indptr: Any = None, num_threads: int | None = None
) -> dict[str, Any]:
    """MAE and RMSE of predicted against true ratings.

    Args:
        pred: predictions, float32 or float64, 1-d (or ``[n, 1]``-like 2-d
            of the same shape as ``true``; flattened).
        true: true ratings, float32/float64 or any integer dtype.
        indptr: optional ``n_users + 1`` offsets: user ``u`` owns rows
            ``indptr[u]:indptr[u+1]`` (1-d inputs only).
        num_threads: None = OpenMP default, -1 = all cores, n > 0 = n.

    Returns:
        ``{"mae", "rmse", "n"}`` over all rows (every row weighs the same;
        NaN when ``n == 0``). With ``indptr`` also:

        * ``user_mae``, ``user_rmse``: float64 arrays, one value per user
          (NaN for a user without rows), ``user_n``: rows per user;
        * ``mean_user_mae``, ``mean_user_rmse``: the user-averaged versions
          (every user with at least one row weighs the same);
        * ``n_users`` (users averaged) and ``n_users_skipped`` (no rows).

    Raises:
        TypeError: a non-float ``pred`` or non-numeric ``true``.
        ValueError: NaN/inf, shapes that differ, a malformed ``indptr``.
    """
    threads = resolve_num_threads(num_threads)
    p, t = _pair(pred, true, flat=indptr is None)
    ip = None if indptr is None else _group_indptr(indptr, p.shape[0])
    abs_sum, sq_sum, user_mae, user_rmse = _core.rating_metrics(p, t, ip, threads)
    n = int(p.size)
    out: dict[str, Any] = {
        "mae": abs_sum / n if n else float("nan"),
        "rmse": float(np.sqrt(sq_sum / n)) if n else float("nan"),
        "n": n,
    }
    if ip is not None:
        user_n = np.diff(ip)
        has = user_n > 0
        n_users = int(has.sum())
        out.update(
            user_mae=user_mae,
            user_rmse=user_rmse,
            user_n=user_n,
            mean_user_mae=float(np.mean(user_mae[has])) if n_users else float("nan"),
            mean_user_rmse=float(np.mean(user_rmse[has])) if n_users else float("nan"),
            n_users=n_users,
            n_users_skipped=int(user_n.shape[0] - n_users),
        )
    return out


# ------------------------------------------------------------- query nDCG


def query_ndcg(
    pred: Any,
    true: Any,
    indptr: Any,
    ks: int | Iterable[int] = (1, 3, 5, 10),
    num_threads: int | None = None,
) -> MetricResult:
    """MeLU's within-query ranking nDCG.

    For each user ``u`` (rows ``indptr[u]:indptr[u+1]``) the user's query
    items are ordered by ``pred`` (descending; ties keep their row order) and
    ``ndcg@k = DCG@k / IDCG@k`` with gain ``2^true - 1`` and discount
    ``1/log2(rank + 1)``; the IDCG orders the true ratings descending. A
    cutoff beyond the user's item count uses all of them. Users whose IDCG is
    0 (no rows, or every true rating 0) are NaN, excluded from the means and
    counted in ``n_skipped``.

    Args:
        pred: predicted scores, float32/float64, 1-d, finite.
        true: true ratings (float or integer dtype), same length, in
            ``[0, 512]``.
        indptr: ``n_users + 1`` offsets into the rows.
        ks: the cutoffs (positive ints; sorted, duplicates dropped).
        num_threads: None = OpenMP default, -1 = all cores, n > 0 = n.

    Returns:
        A :class:`MetricResult` with ``ndcg@k`` per user and its mean.
    """
    threads = resolve_num_threads(num_threads)
    ks_arr = _check_ks(ks)
    p, t = _pair(pred, true, flat=False)
    _check_gain_range(t, "true")
    ip = _group_indptr(indptr, p.shape[0])
    values, means, n_eval = _core.query_ndcg(p, t, ip, ks_arr, threads)
    kl = [int(k) for k in ks_arr]
    n_users = ip.shape[0] - 1
    return MetricResult(
        per_query={f"ndcg@{k}": values[j] for j, k in enumerate(kl)},
        mean={f"ndcg@{k}": float(means[j]) for j, k in enumerate(kl)},
        n_evaluated=int(n_eval),
        n_skipped=int(n_users - n_eval),
        ks=tuple(kl),
    )
