"""Cold-start meta-learning splits: interactions -> train / val / test :class:`TaskSet` s.

A task is one user: a **support** set (what the new user reveals) and a
**query** set (what is held out and predicted after adapting on the support).

Scenarios (as in MeLU):

* ``"user"``: users are split into train / val / test groups (seeded rule
  ``user_split``: ``"random"`` or ``"time"`` = by first interaction, latest
  users in test); test users never appear in train; items are shared.
* ``"item"``: items are split into train / val / test groups (``item_split``:
  ``"time"`` = by release date when the item features have a numeric
  ``release_date``, else by release ``year``, else by first appearance; ``"random"``; or the name of a
  numeric item feature); a task of set *g* holds a user's interactions with
  items of group *g* only, so no val/test ("cold") item occurs in train.
* ``"both"``: users and items are both split; set *g* = users of group *g*
  x items of group *g*. Rows pairing groups differently are dropped and
  counted (``rows_cross_state``).
* ``"warm"``: every user trains; a seeded ``val_fraction``/``test_fraction``
  of users additionally hold out their last ``query`` interactions (by the
  ``by`` order); their val/test task's support is the ``support`` interactions
  just before the holdout (which are also in train: the user is known). A
  train task holds a user's whole history (support = the first K, query = the
  rest of the history).

Within a task, interactions are ordered by ``by``: ``"time"`` (timestamp, ties
by item id) or ``"random"`` (seeded). ``support=K`` takes the first K and
``query=N`` the next N (``"rest"``: all the remaining ones);
``support="all_but_query"`` takes the last N as query and the rest as support.
Users with fewer interactions than needed (or than ``min_interactions``),
or more than ``max_interactions``, are dropped; every dropped user and row is
counted in the task set's ``report``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, NamedTuple

import numpy as np
import scipy.sparse as sp

from ._ragged import gather_rows, offsets_from_lengths
from .batching import TaskArrays, iter_batches, make_batch
from .features import Features
from .interactions import Interactions

SCENARIOS = ("user", "item", "both", "warm")


@dataclass
class TaskPart:
    """Support or query interactions of every task, CSR by task (rows in the ``by`` order)."""

    indptr: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Interactions per task (int64)."""
        return np.diff(self.indptr)

    @property
    def n_interactions(self) -> int:
        return int(self.indptr[-1])

    def take(self, idx: np.ndarray) -> "TaskPart":
        indptr, pos = gather_rows(self.indptr, idx)
        ts = self.timestamps[pos] if self.timestamps is not None else None
        return TaskPart(indptr, self.items[pos], self.ratings[pos], ts)

    def to_csr(self, n_items: int) -> sp.csr_matrix:
        """A tasks x items scipy CSR matrix of ratings (indices sorted)."""
        m = sp.csr_matrix((self.ratings, self.items, self.indptr), shape=(len(self), n_items))
        m.sort_indices()
        return m


@dataclass
class TaskSet:
    """Meta-learning tasks: per user (``users``, dense ids) a ``support`` and a ``query`` :class:`TaskPart`.

    ``user_features`` rows follow the tasks; ``item_features`` follow the dense
    item ids of the dataset (``n_items``). ``cold_items`` lists the items that
    are held out of training in the item scenarios. ``fingerprint`` identifies
    the dataset's id space. ``report`` records the rule, parameters, seed and
    every count (tasks, rows, dropped users and rows and why).
    """

    name: str
    users: np.ndarray
    support: TaskPart
    query: TaskPart
    n_users: int
    n_items: int
    user_features: Features | None = None
    item_features: Features | None = None
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    implicit: bool = False
    fingerprint: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_tasks(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        return (f"TaskSet({self.name!r}, {len(self)} tasks, {self.support.n_interactions} support + "
                f"{self.query.n_interactions} query interactions, {self.n_items} items)")

    def subset(self, idx: Any) -> "TaskSet":
        """The tasks ``idx`` as a new task set (same id space)."""
        from .batching import _task_index

        idx = _task_index(idx, len(self))
        return replace(
            self,
            users=self.users[idx],
            support=self.support.take(idx),
            query=self.query.take(idx),
            user_features=self.user_features.take(idx) if self.user_features is not None else None,
            report={**self.report, "subset_of": len(self)},
        )

    def resplit(self, sizes: Any, random_state: Any = None) -> "TaskSet":
        """The same tasks with the support/query boundary moved: each task's
        interactions (support then query, in order) are cut again after ``K``
        of them, ``K`` drawn per task from ``sizes`` (ints) and capped so that at
        least one query interaction remains. Task augmentation for
        meta-training: every epoch can see each training user with another
        support size (:class:`~metarec_fast.meta.MetaTrainer` ``support_sizes``).
        Vectorised; the task set is not modified."""
        sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
        if sizes.size == 0 or (sizes < 1).any():
            raise ValueError(f"sizes must be ints >= 1, got {sizes.tolist()}")
        rng = _rng(random_state)
        s, q = self.support, self.query
        s_len, q_len = s.lengths, q.lengths
        total = s_len + q_len
        k = np.minimum(rng.choice(sizes, size=len(self)), np.maximum(total - 1, 0))
        # Positions of each task's interactions in (support ++ query) order.
        all_indptr = offsets_from_lengths(total)
        pos = np.arange(int(all_indptr[-1]), dtype=np.int64) - np.repeat(all_indptr[:-1], total)
        task = np.repeat(np.arange(len(self), dtype=np.int64), total)
        from_support = pos < s_len[task]
        src_s = np.repeat(s.indptr[:-1], total) + pos
        src_q = np.repeat(q.indptr[:-1] - s_len, total) + pos

        def pick(name: str) -> np.ndarray | None:
            a, b = getattr(s, name), getattr(q, name)
            if a is None or b is None:
                return None
            out = np.empty(pos.size, dtype=np.result_type(a.dtype, b.dtype))
            out[from_support] = a[src_s[from_support]]
            out[~from_support] = b[src_q[~from_support]]
            return out

        items, ratings, times = pick("items"), pick("ratings"), pick("timestamps")
        in_support = pos < k[task]

        def part(mask: np.ndarray, lengths: np.ndarray) -> TaskPart:
            return TaskPart(offsets_from_lengths(lengths), items[mask], ratings[mask],
                            None if times is None else times[mask])

        return replace(self, support=part(in_support, k), query=part(~in_support, total - k),
                       report={**self.report, "resplit": sorted(set(sizes.tolist()))})

    def batch(self, idx: Any, padded: bool = True, **kwargs: Any) -> TaskArrays:
        """Support and query of tasks ``idx`` (see :func:`~metarec_fast.data.make_batch`)."""
        return make_batch(self, idx, padded=padded, **kwargs)

    def batches(self, batch_size: int, shuffle: bool = True, random_state: Any = None,
                padded: bool = True, **kwargs: Any) -> Iterator[TaskArrays]:
        """Iterate over batches (see :func:`~metarec_fast.data.iter_batches`)."""
        return iter_batches(self, batch_size, shuffle, random_state, padded, **kwargs)

    def matrix(self, part: str = "both") -> sp.csr_matrix:
        """The task set's interactions as an ``n_users x n_items`` float32 CSR in the dataset's id space
        (rows of users without a task are empty): the training matrix for non-meta baselines.
        ``part``: "support", "query" or "both"."""
        if part not in ("support", "query", "both"):
            raise ValueError(f"part must be 'support', 'query' or 'both', got {part!r}")
        parts = [self.support, self.query] if part == "both" else [getattr(self, part)]
        rows = np.concatenate([np.repeat(self.users, p.lengths) for p in parts])
        cols = np.concatenate([p.items for p in parts])
        vals = np.concatenate([p.ratings for p in parts])
        m = sp.csr_matrix((vals, (rows, cols)), shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sort_indices()
        return m

    def positives(self) -> tuple[np.ndarray, np.ndarray]:
        """Support and query items of every task as one CSR ``(indptr, items)``, for negative sampling."""
        lengths = self.support.lengths + self.query.lengths
        indptr = offsets_from_lengths(lengths)
        items = np.empty(int(indptr[-1]), dtype=np.int32)
        s_pos = np.arange(self.support.n_interactions) + np.repeat(indptr[:-1] - self.support.indptr[:-1],
                                                                   self.support.lengths)
        q_pos = np.arange(self.query.n_interactions) + np.repeat(
            indptr[:-1] + self.support.lengths - self.query.indptr[:-1], self.query.lengths)
        items[s_pos] = self.support.items
        items[q_pos] = self.query.items
        return indptr, items

    def sample_negatives(self, n_negatives: int, method: str = "uniform", popularity: Any = None,
                         random_state: Any = None, alpha: float = 1.0) -> np.ndarray:
        """``(n_tasks, n_negatives)`` items that are in neither the task's support nor its query."""
        from .sampling import sample_negatives

        return sample_negatives(self.positives(), self.n_items, n_negatives, method, popularity,
                                random_state, alpha)

    def summary(self) -> dict[str, Any]:
        s, q = self.support.lengths, self.query.lengths
        return {
            "name": self.name,
            "n_tasks": len(self),
            "support_interactions": self.support.n_interactions,
            "query_interactions": self.query.n_interactions,
            "support_per_task": {"min": int(s.min()) if len(s) else 0, "max": int(s.max()) if len(s) else 0,
                                 "mean": float(s.mean()) if len(s) else 0.0},
            "query_per_task": {"min": int(q.min()) if len(q) else 0, "max": int(q.max()) if len(q) else 0,
                               "mean": float(q.mean()) if len(q) else 0.0},
            "n_cold_items": len(self.cold_items),
        }


class Split(NamedTuple):
    """``cold_start_split``'s result: unpack as ``train, val, test = split``."""

    train: TaskSet
    val: TaskSet
    test: TaskSet


# ---------------------------------------------------------------- parameters
def _check_count(value: Any, name: str, word: str) -> int | str:
    if isinstance(value, str):
        if value != word:
            raise ValueError(f"{name} must be a positive int or {word!r}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int or {word!r}, got {value!r}")
    return int(value)


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _need(support: int | str, query: int | str) -> int:
    """Interactions a user needs for one task: at least 1 support and 1 query interaction."""
    if support == "all_but_query":
        return int(query) + 1
    return int(support) + (int(query) if query != "rest" else 1)


# ------------------------------------------------------------------- helpers
def _order(data: Interactions, rows: np.ndarray, by: str, rng: np.random.Generator) -> np.ndarray:
    """``rows`` sorted by (user, the ``by`` order)."""
    users = data.users[rows]
    if by == "time":
        return rows[np.lexsort((data.items[rows], data.timestamps[rows], users))]
    key = rng.random(len(rows))
    return rows[np.lexsort((key, users))]


def _partition(n: int, key: np.ndarray | None, val_fraction: float, test_fraction: float,
               rng: np.random.Generator) -> np.ndarray:
    """Groups 0 (train) / 1 (val) / 2 (test) for ``n`` entities: random, or latest ``key`` in test."""
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    if key is None:
        order = rng.permutation(n)
    else:
        order = np.lexsort((rng.random(n), key))
    groups = np.zeros(n, dtype=np.int8)
    groups[order[n - n_test:]] = 2
    groups[order[n - n_test - n_val:n - n_test]] = 1
    return groups


def _first_time(ids: np.ndarray, times: np.ndarray, n: int) -> np.ndarray:
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, ids, times)
    return first


def _item_key(data: Interactions, item_split: str) -> tuple[np.ndarray | None, str]:
    if item_split == "random":
        return None, "random"
    f = data.item_features
    if item_split == "time":
        # The release date when known (ML-100K), else the release year (ML-1M, CSV releases: from the
        # title), else the item's first appearance in the log.
        known = [c for c in ("release_date", "year") if f is not None and c in f.numeric
                 and f.numeric[c].ndim == 1 and not np.isnan(f.numeric[c]).all()]
        if known:
            name = known[0]
            key = f.numeric[name].astype(np.float64)
            if name == "year":
                key = (key - 1970.0) * 365.25  # days, comparable with first-appearance days below
            if np.isnan(key).any():  # unknown dates: fall back to the first appearance
                if data.timestamps is None:
                    key = np.where(np.isnan(key), np.nanmax(key), key)
                else:
                    first = _first_time(data.items, data.timestamps, data.n_items).astype(np.float64) / 86400.0
                    key = np.where(np.isnan(key), first, key)
            return key, name
        if data.timestamps is None:
            raise ValueError("item_split='time' needs timestamps or a numeric 'release_date' item feature; "
                             "use item_split='random'")
        return _first_time(data.items, data.timestamps, data.n_items).astype(np.float64), "first_appearance"
    if f is None or item_split not in f.numeric:
        raise ValueError(f"item_split must be 'random', 'time' or a numeric item feature, got {item_split!r}")
    key = f.numeric[item_split].astype(np.float64)
    if key.ndim != 1:
        raise ValueError(f"item feature {item_split!r} must be 1-d to order items")
    return np.where(np.isnan(key), np.nanmin(key) if not np.isnan(key).all() else 0.0, key), item_split


def _eligible(counts: np.ndarray, lo: int, hi: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    present = counts > 0
    few = present & (counts < lo)
    many = present & (counts > hi) if hi is not None else np.zeros_like(present)
    many &= ~few
    return present & ~few & ~many, few, many


class _Parts(NamedTuple):
    tasks: np.ndarray
    support: TaskPart
    query: TaskPart
    counts: dict[str, Any]


def _part(data: Interactions, rows: np.ndarray, users: np.ndarray, tasks: np.ndarray) -> TaskPart:
    """A TaskPart from ``rows`` already sorted by user (``users`` = their users) for the ``tasks`` users."""
    lengths = np.bincount(users, minlength=data.n_users)[tasks] if len(tasks) else np.zeros(0, np.int64)
    ts = data.timestamps[rows] if data.timestamps is not None else None
    return TaskPart(offsets_from_lengths(lengths), data.items[rows], data.ratings[rows], ts)


def _tasks(data: Interactions, rows: np.ndarray, support: int | str, query: int | str,
           lo: int, hi: int | None) -> _Parts:
    """Tasks from ``rows`` sorted by (user, order): filter users, then cut support / query."""
    u = data.users[rows]
    counts = np.bincount(u, minlength=data.n_users)
    ok, few, many = _eligible(counts, lo, hi)
    keep = ok[u]
    rows, u = rows[keep], u[keep]
    cnt = counts[u]
    starts = offsets_from_lengths(np.where(ok, counts, 0))
    rank = np.arange(len(rows)) - starts[u]
    if support == "all_but_query":
        q = rank >= cnt - int(query)
        s = ~q
    else:
        s = rank < int(support)
        q = ~s if query == "rest" else (~s & (rank < int(support) + int(query)))
    tasks = np.flatnonzero(ok).astype(np.int32)
    counts_out = {
        "n_tasks": len(tasks),
        "support_rows": int(s.sum()),
        "query_rows": int(q.sum()),
        "rows_beyond_query": int((~(s | q)).sum()),
        "users_dropped": {"too_few_interactions": int(few.sum()), "too_many_interactions": int(many.sum())},
        "rows_of_dropped_users": int(counts[few | many].sum()),
    }
    return _Parts(tasks, _part(data, rows[s], u[s], tasks), _part(data, rows[q], u[q], tasks), counts_out)


def _taskset(data: Interactions, name: str, parts: _Parts, cold_items: np.ndarray,
             report: dict[str, Any]) -> TaskSet:
    uf = data.user_features.take(parts.tasks) if data.user_features is not None else None
    return TaskSet(
        name=name, users=parts.tasks, support=parts.support, query=parts.query,
        n_users=data.n_users, n_items=data.n_items, user_features=uf, item_features=data.item_features,
        cold_items=np.asarray(cold_items, dtype=np.int32), implicit=data.implicit,
        fingerprint=data.fingerprint, report={**report, "set": name, **parts.counts},
    )


def _rng(random_state: Any) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer))):
        raise TypeError(f"random_state must be None, an int or a numpy Generator, got {type(random_state).__name__}")
    return np.random.default_rng(random_state)


# ----------------------------------------------------------------- the split
def cold_start_split(
    data: Interactions,
    scenario: str = "user",
    by: str = "time",
    support: int | str = 10,
    query: int | str = "rest",
    min_interactions: int | None = None,
    max_interactions: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    random_state: Any = None,
    user_split: str = "random",
    item_split: str = "time",
) -> Split:
    """Split ``data`` into train / val / test :class:`TaskSet` s (see the module docstring).

    ``min_interactions`` / ``max_interactions`` filter users by their number of
    interactions in the set (``min`` never below what support + query need).
    ``val_fraction`` / ``test_fraction`` are fractions of users (``"user"``,
    ``"both"``, ``"warm"``) and/or items (``"item"``, ``"both"``). Same
    ``random_state`` -> same split. Raises ValueError for a bad parameter, and
    when the filters leave the train or test set (or a requested val set)
    without tasks.
    """
    if not isinstance(data, Interactions):
        raise TypeError(f"data must be an Interactions, got {type(data).__name__}")
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if by not in ("time", "random"):
        raise ValueError(f"by must be 'time' or 'random', got {by!r}")
    if user_split not in ("time", "random"):
        raise ValueError(f"user_split must be 'time' or 'random', got {user_split!r}")
    support = _check_count(support, "support", "all_but_query")
    query = _check_count(query, "query", "rest")
    if support == "all_but_query" and query == "rest":
        raise ValueError("support='all_but_query' needs an integer query size")
    if scenario == "warm" and query == "rest":
        raise ValueError("scenario='warm' holds out an integer number of interactions: pass query=N")
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    if test_fraction == 0.0:
        raise ValueError("test_fraction must be > 0")
    for name, v in (("min_interactions", min_interactions), ("max_interactions", max_interactions)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            raise ValueError(f"{name} must be None or a non-negative int, got {v!r}")
    if (by == "time" or user_split == "time") and data.timestamps is None:
        raise ValueError("by='time' / user_split='time' need timestamps; these interactions have none")
    if len(data) == 0:
        raise ValueError("there are no interactions to split")
    rng = _rng(random_state)
    seed_repr = random_state if isinstance(random_state, (int, np.integer)) or random_state is None else "Generator"
    lo = max(_need(support, query), min_interactions or 0)
    hi = max_interactions
    if hi is not None and hi < lo:
        raise ValueError(f"max_interactions={hi} is below the {lo} interactions a task needs")
    report: dict[str, Any] = {
        "scenario": scenario, "by": by, "support": support, "query": query,
        "min_interactions": lo, "max_interactions": hi, "val_fraction": val_fraction,
        "test_fraction": test_fraction, "random_state": seed_repr if not isinstance(seed_repr, np.integer) else int(seed_repr),
        "user_split": user_split, "item_split": item_split if scenario in ("item", "both") else None,
        "rows_total": len(data), "fingerprint": data.fingerprint,
    }
    if scenario == "warm":
        return _warm(data, report, support, int(query), lo, hi, val_fraction, test_fraction, by, rng)

    all_rows = np.arange(len(data))
    counts = data.user_activity()
    user_groups = np.zeros(data.n_users, np.int8)
    glob: dict[str, Any] = {"users_dropped_before_grouping": {"too_few_interactions": 0, "too_many_interactions": 0},
                            "rows_of_users_dropped_before_grouping": 0, "rows_cross_state": 0}
    ukey = _first_time(data.users, data.timestamps, data.n_users) if user_split == "time" else None
    if scenario == "user":
        # Eligibility does not depend on the group: filter first, then split the eligible users.
        ok, few, many = _eligible(counts, lo, hi)
        glob["users_dropped_before_grouping"] = {"too_few_interactions": int(few.sum()),
                                                 "too_many_interactions": int(many.sum())}
        glob["rows_of_users_dropped_before_grouping"] = int(counts[few | many].sum())
        if not ok.any():
            raise ValueError(
                f"no user has the {lo}..{hi if hi is not None else 'any'} interactions a task needs "
                f"({int(few.sum())} too few, {int(many.sum())} too many): nothing to split"
            )
        elig = np.flatnonzero(ok)
        user_groups[:] = -1
        user_groups[elig] = _partition(len(elig), None if ukey is None else ukey[elig], val_fraction,
                                       test_fraction, rng)
        item_groups = None
    else:
        key, used = _item_key(data, item_split)
        report["item_split_key"] = used
        seen = np.flatnonzero(data.item_popularity() > 0)
        item_groups = np.zeros(data.n_items, np.int8)
        item_groups[seen] = _partition(len(seen), None if key is None else key[seen], val_fraction,
                                       test_fraction, rng)
        if scenario == "both":
            present = np.flatnonzero(counts > 0)
            user_groups[present] = _partition(len(present), None if ukey is None else ukey[present],
                                              val_fraction, test_fraction, rng)
    row_user_group = user_groups[data.users]
    row_group = row_user_group if item_groups is None else item_groups[data.items]
    if scenario == "both":
        cross = row_user_group != row_group
        glob["rows_cross_state"] = int(cross.sum())
        row_group = np.where(cross, -1, row_group)
    report.update(glob)
    sets = []
    for g, name in enumerate(("train", "val", "test")):
        rows = _order(data, all_rows[row_group == g], by, rng)
        parts = _tasks(data, rows, support, query, lo, hi)
        cold = np.flatnonzero(item_groups == g) if item_groups is not None and g > 0 else np.zeros(0, np.int32)
        sets.append(_taskset(data, name, parts, cold, report))
    _check_sets(sets, val_fraction, lo, hi)
    _account(sets, report)
    return Split(*sets)


def _check_sets(sets: list[TaskSet], val_fraction: float, lo: int, hi: int | None) -> None:
    for ts in sets:
        if len(ts) == 0 and (ts.name != "val" or val_fraction > 0):
            d = ts.report["users_dropped"]
            raise ValueError(
                f"the {ts.name} set has no task: every user was removed by the filters "
                f"({lo}..{hi if hi is not None else 'any'} interactions per task; "
                f"{d['too_few_interactions']} users had too few, {d['too_many_interactions']} too many)"
            )


def _account(sets: list[TaskSet], report: dict[str, Any]) -> None:
    """Every row is in a support or query set, beyond the query cap, or dropped and counted."""
    total = report["rows_total"]
    placed = sum(ts.report["support_rows"] + ts.report["query_rows"] + ts.report["rows_beyond_query"]
                 + ts.report["rows_of_dropped_users"] for ts in sets)
    placed += report.get("rows_of_users_dropped_before_grouping", 0) + report.get("rows_cross_state", 0)
    placed -= report.get("rows_shared_with_train", 0)
    if placed != total:  # pragma: no cover - an internal invariant
        raise RuntimeError(f"split accounting is off: {placed} rows placed, {total} in the data")
    for ts in sets:
        ts.report["rows_accounted"] = True


def _warm(data: Interactions, report: dict[str, Any], support: int | str, query: int, lo: int,
          hi: int | None, val_fraction: float, test_fraction: float, by: str,
          rng: np.random.Generator) -> Split:
    rows = _order(data, np.arange(len(data)), by, rng)
    u = data.users[rows]
    counts = np.bincount(u, minlength=data.n_users)
    ok, few, many = _eligible(counts, lo, hi)
    # Users that can give a holdout and still train: at least lo + query interactions.
    can_hold = ok & (counts >= lo + query)
    hold_users = np.flatnonzero(can_hold)
    groups = np.zeros(data.n_users, np.int8)
    groups[hold_users] = _partition(len(hold_users), None, val_fraction, test_fraction, rng)
    keep = ok[u]
    rows, u = rows[keep], u[keep]
    cnt = counts[u]
    starts = offsets_from_lengths(np.where(ok, counts, 0))
    rank = np.arange(len(rows)) - starts[u]
    g = groups[u]
    held = (g > 0) & (rank >= cnt - query)
    hist_len = np.where(g > 0, cnt - query, cnt)
    report.update({
        "users_dropped_before_grouping": {"too_few_interactions": int(few.sum()),
                                          "too_many_interactions": int(many.sum())},
        "rows_of_users_dropped_before_grouping": int(counts[few | many].sum()),
        "rows_cross_state": 0,
        "users_without_holdout": int((ok & ~can_hold).sum()),
    })
    # Train: every eligible user's whole history (rows not held out): support = the first K
    # (or all but the last N), query = the rest of the history, so every known row is trained on.
    train_rows = rows[~held]
    parts = _tasks(data, train_rows, support, "rest" if support != "all_but_query" else query, lo, None)
    sets = [_taskset(data, "train", parts, np.zeros(0), report)]
    shared = 0
    for gi, name in ((1, "val"), (2, "test")):
        in_g = g == gi
        q = in_g & held
        if support == "all_but_query":
            s = in_g & ~held
        else:
            s = in_g & ~held & (rank >= hist_len - int(support))
        tasks = np.flatnonzero(groups == gi).astype(np.int32)
        counts_out = {
            "n_tasks": len(tasks), "support_rows": int(s.sum()), "query_rows": int(q.sum()),
            "rows_beyond_query": 0,
            "users_dropped": {"too_few_interactions": 0, "too_many_interactions": 0},
            "rows_of_dropped_users": 0,
            "support_rows_shared_with_train": int(s.sum()),
        }
        shared += int(s.sum())
        p = _Parts(tasks, _part(data, rows[s], u[s], tasks), _part(data, rows[q], u[q], tasks), counts_out)
        sets.append(_taskset(data, name, p, np.zeros(0), report))
    report["rows_shared_with_train"] = shared
    for ts in sets:
        ts.report["rows_shared_with_train"] = shared
    _check_sets(sets, val_fraction, lo, hi)
    _account(sets, report)
    return Split(*sets)


# --------------------------------------------------------------- MeLU preset
def melu_split(
    data: Interactions,
    random_state: Any = None,
    min_interactions: int = 13,
    max_interactions: int = 100,
    query: int = 10,
    new_user_fraction: float = 0.2,
    new_item_fraction: float = 0.2,
    warm_fraction: float = 0.1,
    user_split: str = "time",
    item_split: str = "time",
) -> dict[str, TaskSet]:
    """MeLU's protocol (Lee et al., KDD 2019): four states from one log.

    Users with 13-100 ratings (counted within each state); query = 10 random
    items, support = the rest. Users are split into existing / new (the latest
    ``new_user_fraction`` by first rating time), items into existing / new (the
    latest ``new_item_fraction`` by release date when known, else first
    appearance). Returns ``{"train", "warm", "user_cold", "item_cold",
    "user_item_cold"}``: ``train`` = existing users x existing items;
    ``warm`` = a held-out 10-item query of ``warm_fraction`` of the existing
    users (their support = the rest of their existing-item ratings, also in
    train); ``user_cold`` = new users x existing items; ``item_cold`` =
    existing users x new items; ``user_item_cold`` = new users x new items.
    """
    rng = _rng(random_state)
    if data.timestamps is None and user_split == "time":
        raise ValueError("the MeLU preset splits users by first rating time: the data needs timestamps")
    counts = data.user_activity()
    present = np.flatnonzero(counts > 0)
    ukey = _first_time(data.users, data.timestamps, data.n_users) if user_split == "time" else None
    ugroup = np.full(data.n_users, -1, np.int8)
    ugroup[present] = _partition(len(present), None if ukey is None else ukey[present], 0.0,
                                 new_user_fraction, rng)
    key, used = _item_key(data, item_split)
    seen = np.flatnonzero(data.item_popularity() > 0)
    igroup = np.full(data.n_items, -1, np.int8)
    igroup[seen] = _partition(len(seen), None if key is None else key[seen], 0.0, new_item_fraction, rng)
    lo = max(min_interactions, query + 1)
    base = {
        "preset": "melu", "support": "all_but_query", "query": query, "by": "random",
        "min_interactions": lo, "max_interactions": max_interactions, "new_user_fraction": new_user_fraction,
        "new_item_fraction": new_item_fraction, "user_split": user_split, "item_split_key": used,
        "random_state": random_state if random_state is None or isinstance(random_state, int) else "Generator",
        "rows_total": len(data), "fingerprint": data.fingerprint,
    }
    ru, ri = ugroup[data.users], igroup[data.items]
    out: dict[str, TaskSet] = {}
    # Existing users x existing items: train + the warm holdout.
    warm_rows = np.flatnonzero((ru == 0) & (ri == 0))
    sub = _subset(data, warm_rows)
    wreport = {**base, "state": "warm"}
    w = _warm(sub, {**wreport, "rows_total": len(sub)}, "all_but_query", query, lo, max_interactions,
              0.0, warm_fraction, "random", rng)
    out["train"], out["warm"] = w.train, w.test
    out["warm"].name = "warm"
    out["warm"].report["set"] = "warm"
    for name, (gu, gi) in (("user_cold", (2, 0)), ("item_cold", (0, 2)), ("user_item_cold", (2, 2))):
        rows = _order(data, np.flatnonzero((ru == gu) & (ri == gi)), "random", rng)
        parts = _tasks(data, rows, "all_but_query", query, lo, max_interactions)
        cold = np.flatnonzero(igroup == 2) if gi == 2 else np.zeros(0, np.int32)
        ts = _taskset(data, name, parts, cold, {**base, "state": name})
        if len(ts) == 0:
            raise ValueError(f"the MeLU state {name!r} has no user with {lo}..{max_interactions} interactions")
        out[name] = ts
    for ts in out.values():
        ts.report["rows_in_states"] = {k: v.report["support_rows"] + v.report["query_rows"] for k, v in out.items()}
    return out


def _subset(data: Interactions, rows: np.ndarray) -> Interactions:
    """The rows ``rows`` of ``data`` in the same id space."""
    ts = data.timestamps[rows] if data.timestamps is not None else None
    out = Interactions(data.users[rows], data.items[rows], data.ratings[rows], ts, data.user_raw_ids,
                       data.item_raw_ids, data.user_features, data.item_features, data.implicit)
    out._fingerprint = data.fingerprint
    return out
