"""The :class:`Interactions` container: a log of (user, item, rating, time) rows.

Users and items get dense ``int32`` ids ``0..n-1`` assigned in sorted order of
their raw ids, with maps both ways. Ratings are ``float32`` (implicit feedback
is stored as 1.0), timestamps optional ``int64``. Optional side features
(:class:`~metarec_fast.data.Features`) are aligned to the dense ids.

Duplicate rule: when the same (user, item) pair occurs more than once, the row
with the **latest timestamp** is kept (without timestamps, or on a tie, the
row that comes **last** in the input); the number of dropped rows is reported
by :meth:`Interactions.summary` as ``duplicates_dropped``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._ragged import factorize, offsets_from_lengths
from .features import Features

# Dense ids are int32: at most this many users or items.
_MAX_IDS = np.iinfo(np.int32).max


class RowError(ValueError):
    """A bad value in one input row. ``row`` is the 0-based row index of the input."""

    def __init__(self, message: str, row: int) -> None:
        super().__init__(message)
        self.row = int(row)


def _py(v: Any) -> Any:
    """A numpy scalar as a plain Python value (for messages)."""
    return v.item() if hasattr(v, "item") else v


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _encode_ids(raw: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw ids -> (dense int32 ids in sorted order of raw ids, the sorted distinct raw ids)."""
    arr = np.asarray(raw)
    if arr.ndim != 1:
        raise ValueError(f"{name} ids must be 1-d, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} ids must be integers or strings, got bool")
    if arr.dtype.kind == "f":
        bad = np.isnan(arr)
        if bad.any():
            row = _first(bad)
            raise RowError(f"missing {name} id at row {row}", row)
        bad = arr != np.floor(arr)
        if bad.any():
            row = _first(bad)
            raise RowError(f"{name} id {_py(arr[row])!r} at row {row} is not an integer", row)
        bad = np.abs(arr) >= 2.0**63
        if bad.any():
            row = _first(bad)
            raise RowError(f"{name} id {_py(arr[row])!r} at row {row} does not fit in int64", row)
        arr = arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        if arr.size and arr.dtype.kind == "i":
            bad = arr < 0
            if bad.any():
                row = _first(bad)
                raise RowError(f"negative {name} id {int(arr[row])} at row {row}", row)
        if arr.size == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        top = int(arr.max())
        if top < 4 * arr.size + 1_000_000:  # O(n) through a lookup table
            present = np.zeros(top + 1, dtype=bool)
            present[arr] = True
            uniques = np.flatnonzero(present)
            lookup = np.cumsum(present, dtype=np.int64) - 1
            dense = lookup[arr]
        else:
            uniques, dense = factorize(arr)
    else:
        if arr.dtype.kind == "O":
            missing = np.fromiter(
                (v is None or v == "" or (isinstance(v, float) and v != v) for v in arr), bool, len(arr)
            )
        else:
            missing = arr == arr.dtype.type("")
        if missing.any():
            row = _first(missing)
            raise RowError(f"missing {name} id at row {row}", row)
        try:
            uniques, dense = factorize(arr)
        except TypeError as exc:
            raise ValueError(f"{name} ids mix types that cannot be ordered ({exc})") from None
    if len(uniques) > _MAX_IDS:
        raise ValueError(f"too many distinct {name}s for int32 ids: {len(uniques)}")
    return dense.astype(np.int32), uniques


def _numbers(raw: Any, n: int, what: str) -> np.ndarray:
    """``raw`` as a numeric array of ``n`` finite values; RowError naming the first bad row."""
    arr = np.asarray(raw)
    if arr.shape != (n,):
        raise ValueError(f"{what}s must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind == "b":
        raise TypeError(f"{what}s must be numbers, got bool")
    if arr.dtype.kind not in "fiu":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            for row, v in enumerate(arr.tolist()):
                try:
                    float(v)
                except (TypeError, ValueError):
                    raise RowError(f"{what} {v!r} at row {row} is not a number", row) from None
            raise
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            row = _first(bad)
            raise RowError(f"{what} at row {row} is {arr[row]} (NaN, inf or missing)", row)
    return arr


def _as_ratings(raw: Any, n: int) -> tuple[np.ndarray, bool]:
    if raw is None:
        return np.ones(n, dtype=np.float32), True
    arr = _numbers(raw, n, "rating")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():  # finite in float64 but beyond float32's range
        row = _first(bad)
        raise RowError(f"rating {_py(arr[row])!r} at row {row} is beyond float32's range", row)
    return out, False


def _as_timestamps(raw: Any, n: int) -> np.ndarray | None:
    if raw is None:
        return None
    arr = np.asarray(raw)
    if arr.dtype.kind == "M":  # datetime64 -> epoch seconds
        nat = np.isnat(arr)
        if nat.any():
            row = _first(nat)
            raise RowError(f"missing timestamp at row {row}", row)
        return arr.astype("datetime64[s]").astype(np.int64)
    arr = _numbers(arr, n, "timestamp")
    if arr.size and arr.dtype.kind in "fu":
        bad = arr >= 2.0**63 if arr.dtype.kind == "u" else (np.abs(arr) >= 2.0**63)
        if bad.any():
            row = _first(bad)
            raise RowError(f"timestamp {_py(arr[row])!r} at row {row} does not fit in int64 seconds", row)
    return arr.astype(np.int64)


class Interactions:
    """A deduplicated interaction log with dense ids (see the module docstring).

    Build one with :meth:`from_arrays`, :meth:`from_pandas` or :meth:`from_arrow`
    (or a loader in :mod:`metarec_fast.data`). Attributes (read-only by
    convention): ``users``, ``items`` (int32 dense ids), ``ratings`` (float32),
    ``timestamps`` (int64 or None), ``user_features``/``item_features``
    (:class:`Features` aligned to dense ids, or None), ``implicit``.
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        timestamps: np.ndarray | None,
        user_raw_ids: np.ndarray,
        item_raw_ids: np.ndarray,
        user_features: Features | None = None,
        item_features: Features | None = None,
        implicit: bool = False,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.users = np.ascontiguousarray(users, dtype=np.int32)
        self.items = np.ascontiguousarray(items, dtype=np.int32)
        self.ratings = np.ascontiguousarray(ratings, dtype=np.float32)
        self.timestamps = None if timestamps is None else np.ascontiguousarray(timestamps, dtype=np.int64)
        self.user_raw_ids = np.asarray(user_raw_ids)
        self.item_raw_ids = np.asarray(item_raw_ids)
        n = len(self.users)
        if len(self.items) != n or len(self.ratings) != n or (self.timestamps is not None and len(self.timestamps) != n):
            raise ValueError("users, items, ratings and timestamps must have the same length")
        for name, f, size in (("user", user_features, self.n_users), ("item", item_features, self.n_items)):
            if f is not None and f.n != size:
                raise ValueError(f"{name}_features has {f.n} rows, expected {size}")
        self.user_features = user_features
        self.item_features = item_features
        self.implicit = bool(implicit)
        self.info: dict[str, Any] = dict(info or {})
        self.info.setdefault("rows_read", n)
        self.info.setdefault("duplicates_dropped", 0)
        self._csr: sp.csr_matrix | None = None
        self._csr_order: np.ndarray | None = None
        self._fingerprint: str | None = None

    # ---------------------------------------------------------- construction
    @classmethod
    def from_arrays(
        cls,
        users: Any,
        items: Any,
        ratings: Any = None,
        timestamps: Any = None,
        user_features: Features | None = None,
        item_features: Features | None = None,
        implicit: bool | None = None,
        source: str | None = None,
    ) -> "Interactions":
        """Build from parallel arrays of raw ids, ratings (None = implicit 1.0) and timestamps.

        Raw ids may be non-negative integers or strings. A missing or negative
        id, a non-numeric/NaN/inf rating or a missing timestamp raises
        ``ValueError`` naming the row. Feature tables whose ``ids`` are set are
        matched by raw id (rows without features are missing); without ``ids``
        they must already follow the sorted raw ids.
        """
        users_a = np.asarray(users)
        n = len(users_a)
        if np.asarray(items).shape != (n,):
            raise ValueError(f"items must have shape ({n},), got {np.asarray(items).shape}")
        dense_u, raw_u = _encode_ids(users_a, "user")
        dense_i, raw_i = _encode_ids(items, "item")
        r, is_implicit = _as_ratings(ratings, n)
        ts = _as_timestamps(timestamps, n)
        info: dict[str, Any] = {"rows_read": n}
        if source:
            info["source"] = source
        uf = itf = None
        if user_features is not None:
            uf, info["users_without_features"] = user_features.align(raw_u)
        if item_features is not None:
            itf, info["items_without_features"] = item_features.align(raw_i)
        out = cls._dedup(dense_u, dense_i, r, ts, raw_u, raw_i, uf, itf,
                         is_implicit if implicit is None else implicit, info)
        return out

    @classmethod
    def _dedup(cls, u, i, r, ts, raw_u, raw_i, uf, itf, implicit, info) -> "Interactions":
        n_items = max(len(raw_i), 1)
        key = u.astype(np.int64) * n_items + i
        order = np.argsort(key, kind="stable")
        sk = key[order]
        same = sk[1:] == sk[:-1]
        dropped = 0
        if same.any():
            # Rows in duplicate groups: keep the latest timestamp, last in input on ties.
            in_dup = np.zeros(len(sk), bool)
            in_dup[1:] |= same
            in_dup[:-1] |= same
            rows = order[in_dup]
            tie = ts[rows] if ts is not None else np.zeros(len(rows), np.int64)
            sub = np.lexsort((rows, tie, key[rows]))
            rows_sorted = rows[sub]
            ks = key[rows_sorted]
            last = np.ones(len(rows_sorted), bool)
            last[:-1] = ks[1:] != ks[:-1]
            keep = np.ones(len(key), bool)
            keep[rows_sorted[~last]] = False
            dropped = int((~last).sum())
            order = order[keep[order]]
            u, i, r = u[keep], i[keep], r[keep]
            ts = ts[keep] if ts is not None else None
            # order indexed the original rows; re-index into the kept rows.
            remap = np.cumsum(keep) - 1
            order = remap[order]
        info["duplicates_dropped"] = dropped
        out = cls(u, i, r, ts, raw_u, raw_i, uf, itf, implicit, info)
        out._csr_order = order
        return out

    @classmethod
    def from_pandas(
        cls,
        df: Any,
        user: str = "user",
        item: str = "item",
        rating: str | None = "rating",
        timestamp: str | None = "timestamp",
        user_features: Features | None = None,
        item_features: Features | None = None,
        implicit: bool | None = None,
    ) -> "Interactions":
        """Build from a DataFrame; ``rating``/``timestamp`` may be None (or absent columns)."""
        missing = [c for c in (user, item) if c not in df.columns]
        if missing:
            raise ValueError(f"columns {missing} not found; the frame has {list(df.columns)}")
        rating = rating if rating is not None and rating in df.columns else None
        timestamp = timestamp if timestamp is not None and timestamp in df.columns else None
        return cls.from_arrays(
            df[user].to_numpy(),
            df[item].to_numpy(),
            None if rating is None else df[rating].to_numpy(),
            None if timestamp is None else df[timestamp].to_numpy(),
            user_features,
            item_features,
            implicit,
        )

    @classmethod
    def from_arrow(
        cls,
        table: Any,
        user: str = "user",
        item: str = "item",
        rating: str | None = "rating",
        timestamp: str | None = "timestamp",
        user_features: Features | None = None,
        item_features: Features | None = None,
        implicit: bool | None = None,
    ) -> "Interactions":
        """Build from a ``pyarrow.Table``; nulls become NaN/None and are rejected with their row."""
        import pyarrow as pa

        names = table.column_names
        missing = [c for c in (user, item) if c not in names]
        if missing:
            raise ValueError(f"columns {missing} not found; the table has {names}")

        def col(name: str | None) -> np.ndarray | None:
            if name is None or name not in names:
                return None
            c = table.column(name)
            if c.null_count:  # nulls: NaN in floats, None elsewhere (rejected with their row)
                if pa.types.is_floating(c.type):  # integers stay exact (no cast through float64)
                    return c.cast(pa.float64()).to_numpy(zero_copy_only=False)
                return np.asarray(c.to_pylist(), dtype=object)
            return c.to_numpy(zero_copy_only=False)

        return cls.from_arrays(col(user), col(item), col(rating), col(timestamp),
                               user_features, item_features, implicit)

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_raw_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_raw_ids)

    @property
    def fingerprint(self) -> str:
        """A short hash of the id space (raw user and item ids): task sets carry it so a
        consumer can tell tasks of another dataset apart."""
        if self._fingerprint is None:
            h = hashlib.sha1()
            for a in (self.user_raw_ids, self.item_raw_ids):
                h.update(str(len(a)).encode())
                h.update(a.tobytes() if a.dtype.kind in "iuf" else "\x1f".join(map(str, a)).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def summary(self) -> dict[str, Any]:
        """Counts and ranges: users, items, interactions, density, duplicates dropped, ratings, times, features."""
        n = len(self)
        per_user = np.bincount(self.users, minlength=self.n_users)
        per_item = np.bincount(self.items, minlength=self.n_items)
        out: dict[str, Any] = {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": n,
            "density": n / max(self.n_users * self.n_items, 1),
            "rows_read": int(self.info.get("rows_read", n)),
            "duplicates_dropped": int(self.info.get("duplicates_dropped", 0)),
            "implicit": self.implicit,
            "rating_min": float(self.ratings.min()) if n else None,
            "rating_max": float(self.ratings.max()) if n else None,
            "rating_mean": float(self.ratings.mean()) if n else None,
            "timestamp_min": int(self.timestamps.min()) if self.timestamps is not None and n else None,
            "timestamp_max": int(self.timestamps.max()) if self.timestamps is not None and n else None,
            "interactions_per_user": {"min": int(per_user.min()) if n else 0,
                                      "median": float(np.median(per_user)) if n else 0.0,
                                      "max": int(per_user.max()) if n else 0},
            "interactions_per_item": {"min": int(per_item.min()) if n else 0,
                                      "median": float(np.median(per_item)) if n else 0.0,
                                      "max": int(per_item.max()) if n else 0},
            "user_features": self.user_features.summary() if self.user_features is not None else {},
            "item_features": self.item_features.summary() if self.item_features is not None else {},
        }
        for key in ("users_without_features", "items_without_features", "source"):
            if key in self.info:
                out[key] = self.info[key]
        return out

    def __repr__(self) -> str:
        kind = "implicit" if self.implicit else "explicit"
        ts = ", timestamps" if self.timestamps is not None else ""
        return f"Interactions({len(self)} {kind} rows, {self.n_users} users, {self.n_items} items{ts})"

    # --------------------------------------------------------------- id maps
    def _lookup(self, raw: Any, table: np.ndarray, name: str) -> np.ndarray:
        scalar = np.ndim(raw) == 0
        q = np.atleast_1d(np.asarray(raw))
        if table.dtype.kind in "iu" and q.dtype.kind not in "iu":
            if q.dtype.kind == "f" and np.all(q == np.floor(q)):
                q = q.astype(np.int64)
            else:
                raise KeyError(f"unknown raw {name} id {_py(q[0])!r}")
        elif table.dtype.kind not in "iu" and q.dtype.kind != table.dtype.kind and table.dtype.kind != "O":
            q = q.astype(table.dtype)
        pos = np.searchsorted(table, q)
        pos_c = np.minimum(pos, max(len(table) - 1, 0))
        ok = (pos < len(table)) & (table[pos_c] == q) if len(table) else np.zeros(len(q), bool)
        if not np.all(ok):
            raise KeyError(f"unknown raw {name} id {_py(q[_first(~ok)])!r}")
        out = pos.astype(np.int32)
        return out[0] if scalar else out

    def user_index(self, raw: Any) -> Any:
        """Dense id(s) of raw user id(s); KeyError for an unknown one."""
        return self._lookup(raw, self.user_raw_ids, "user")

    def item_index(self, raw: Any) -> Any:
        """Dense id(s) of raw item id(s); KeyError for an unknown one."""
        return self._lookup(raw, self.item_raw_ids, "item")

    def user_raw(self, dense: Any) -> Any:
        """Raw id(s) of dense user id(s)."""
        return self.user_raw_ids[dense]

    def item_raw(self, dense: Any) -> Any:
        """Raw id(s) of dense item id(s)."""
        return self.item_raw_ids[dense]

    # ------------------------------------------------------------------ views
    @property
    def csr_order(self) -> np.ndarray:
        """Row order sorting the log by (user, item) (cached)."""
        if self._csr_order is None:
            key = self.users.astype(np.int64) * max(self.n_items, 1) + self.items
            self._csr_order = np.argsort(key, kind="stable")
        return self._csr_order

    def csr(self) -> sp.csr_matrix:
        """The user x item rating matrix (float32 CSR, sorted indices), built once and cached."""
        if self._csr is None:
            order = self.csr_order
            indptr = offsets_from_lengths(np.bincount(self.users, minlength=self.n_users))
            m = sp.csr_matrix(
                (self.ratings[order], self.items[order].astype(np.int32), indptr),
                shape=(self.n_users, self.n_items),
            )
            m.has_sorted_indices = True
            self._csr = m
        return self._csr

    def item_popularity(self) -> np.ndarray:
        """Interactions per item (int64, length ``n_items``)."""
        return np.bincount(self.items, minlength=self.n_items)

    def user_activity(self) -> np.ndarray:
        """Interactions per user (int64, length ``n_users``)."""
        return np.bincount(self.users, minlength=self.n_users)

    def to_pandas(self, raw_ids: bool = False) -> Any:
        """A DataFrame with columns user, item, rating (and timestamp); dense ids unless ``raw_ids``."""
        import pandas as pd

        cols: dict[str, Any] = {
            "user": self.user_raw_ids[self.users] if raw_ids else self.users,
            "item": self.item_raw_ids[self.items] if raw_ids else self.items,
            "rating": self.ratings,
        }
        if self.timestamps is not None:
            cols["timestamp"] = self.timestamps
        return pd.DataFrame(cols)

