"""Side features of users or items: categorical, multi-valued categorical, numeric.

A :class:`Features` table has one row per user (or item). Columns come in
four kinds:

* ``categorical``: one code per row (``int32``, ``-1`` = missing) with its
  vocabulary in ``vocab[name]`` (code ``c`` means ``vocab[name][c]``);
* ``multi``: several codes per row (e.g. genres), stored CSR-style as
  ``(indptr int64, codes int32)`` with the vocabulary in ``vocab[name]``;
* ``numeric``: ``float32`` values, shape ``(n,)`` or ``(n, d)``, NaN = missing;
* ``raw``: object columns kept for people (titles, zip codes), not model inputs.

Rows can carry the raw ids they describe (``ids``), so a table can be aligned
to an :class:`~metarec_fast.data.Interactions` id space with :meth:`align`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from ._ragged import factorize, gather_rows, offsets_from_lengths


@dataclass
class Features:
    """A table of side features, one row per user or item (see the module docstring)."""

    n: int
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    multi: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    vocab: dict[str, np.ndarray] = field(default_factory=dict)
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.n = int(self.n)
        for name, codes in self.categorical.items():
            codes = np.ascontiguousarray(codes, dtype=np.int32)
            if codes.shape != (self.n,):
                raise ValueError(f"categorical feature {name!r} must have shape ({self.n},), got {codes.shape}")
            self._check_codes(name, codes)
            self.categorical[name] = codes
        for name, (indptr, codes) in self.multi.items():
            indptr = np.ascontiguousarray(indptr, dtype=np.int64)
            codes = np.ascontiguousarray(codes, dtype=np.int32)
            if indptr.shape != (self.n + 1,) or indptr[0] != 0 or indptr[-1] != len(codes):
                raise ValueError(f"multi-valued feature {name!r} has a malformed indptr")
            if (np.diff(indptr) < 0).any():
                raise ValueError(f"multi-valued feature {name!r} has a decreasing indptr")
            self._check_codes(name, codes, allow_missing=False)
            self.multi[name] = (indptr, codes)
        for name, values in self.numeric.items():
            values = np.ascontiguousarray(values, dtype=np.float32)
            if values.ndim not in (1, 2) or values.shape[0] != self.n:
                raise ValueError(f"numeric feature {name!r} must have {self.n} rows, got shape {values.shape}")
            self.numeric[name] = values
        for name, values in self.raw.items():
            values = np.asarray(values, dtype=object)
            if values.shape != (self.n,):
                raise ValueError(f"raw column {name!r} must have shape ({self.n},), got {values.shape}")
            self.raw[name] = values
        if self.ids is not None:
            self.ids = np.asarray(self.ids)
            if self.ids.shape != (self.n,):
                raise ValueError(f"ids must have shape ({self.n},), got {self.ids.shape}")
            if len(np.unique(self.ids)) != self.n:
                raise ValueError("feature table ids must be unique")

    def _check_codes(self, name: str, codes: np.ndarray, allow_missing: bool = True) -> None:
        if name not in self.vocab:
            raise ValueError(f"feature {name!r} has no vocabulary in vocab")
        self.vocab[name] = np.asarray(self.vocab[name], dtype=object)
        size = len(self.vocab[name])
        low = -1 if allow_missing else 0
        if codes.size and (codes.min() < low or codes.max() >= size):
            raise ValueError(f"feature {name!r} has codes outside [{low}, {size})")

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return self.n

    @property
    def names(self) -> list[str]:
        """Every model feature name (categorical, multi, numeric), raw columns excluded."""
        return [*self.categorical, *self.multi, *self.numeric]

    def cardinality(self, name: str) -> int:
        """Vocabulary size of a categorical or multi-valued feature."""
        return len(self.vocab[name])

    def summary(self) -> dict[str, Any]:
        """Feature names with their kinds and sizes."""
        out: dict[str, Any] = {}
        for name, codes in self.categorical.items():
            out[name] = {"kind": "categorical", "cardinality": self.cardinality(name), "missing": int((codes < 0).sum())}
        for name, (indptr, _) in self.multi.items():
            lengths = np.diff(indptr)
            out[name] = {
                "kind": "multi",
                "cardinality": self.cardinality(name),
                "mean_per_row": float(lengths.mean()) if self.n else 0.0,
                "missing": int((lengths == 0).sum()),
            }
        for name, values in self.numeric.items():
            out[name] = {"kind": "numeric", "dim": 1 if values.ndim == 1 else values.shape[1],
                         "missing": int(np.isnan(values).reshape(self.n, -1).any(axis=1).sum())}
        for name in self.raw:
            out[name] = {"kind": "raw"}
        return out

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}:{v['kind']}" for k, v in self.summary().items())
        return f"Features(n={self.n}, {kinds})"

    # ------------------------------------------------------------- selection
    def take(self, rows: Any) -> "Features":
        """The rows ``rows`` (vectorised); a row id of ``-1`` gives a missing row."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.max() >= self.n or rows.min() < -1):
            raise IndexError(f"row ids must lie in [-1, {self.n}), got {rows.min()}..{rows.max()}")
        missing = rows < 0
        safe = np.where(missing, 0, rows)
        cat = {}
        for name, codes in self.categorical.items():
            c = codes[safe] if self.n else np.full(len(rows), -1, np.int32)
            cat[name] = np.where(missing, -1, c).astype(np.int32)
        multi = {}
        for name, (indptr, codes) in self.multi.items():
            new_indptr, pos = gather_rows(indptr, rows)
            multi[name] = (new_indptr, codes[pos])
        num = {}
        for name, values in self.numeric.items():
            v = values[safe] if self.n else np.full((len(rows),) + values.shape[1:], np.nan, np.float32)
            v = v.copy()
            v[missing] = np.nan
            num[name] = v
        raw = {}
        for name, values in self.raw.items():
            v = values[safe] if self.n else np.full(len(rows), None, dtype=object)
            v = v.copy()
            v[missing] = None
            raw[name] = v
        ids = None
        if self.ids is not None and not missing.any():
            ids = self.ids[rows]
        return Features(len(rows), cat, multi, num, dict(self.vocab), raw, ids)

    def align(self, raw_ids: np.ndarray) -> tuple["Features", int]:
        """Reorder rows to follow ``raw_ids`` (rows are matched by ``self.ids``).

        Returns the aligned table and the number of ``raw_ids`` without a row
        (those rows are missing: code -1, NaN, no multi values).
        """
        if self.ids is None:
            if len(raw_ids) != self.n:
                raise ValueError(
                    f"feature table has {self.n} rows and no ids, but {len(raw_ids)} ids need features; "
                    "pass ids= to match rows by raw id"
                )
            return self, 0
        raw_ids = np.asarray(raw_ids)
        ids = self.ids
        if raw_ids.dtype.kind in "iu" and ids.dtype.kind in "iu":
            pass
        elif raw_ids.dtype.kind != ids.dtype.kind:
            ids = ids.astype(str)
            raw_ids = raw_ids.astype(str)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        pos = np.searchsorted(sorted_ids, raw_ids)
        pos_c = np.minimum(pos, max(len(sorted_ids) - 1, 0))
        found = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == raw_ids) if len(sorted_ids) else np.zeros(len(raw_ids), bool)
        rows = np.where(found, order[pos_c] if len(sorted_ids) else 0, -1)
        out = self.take(rows)
        out.ids = np.asarray(raw_ids)
        return out, int((~found).sum())

    # --------------------------------------------------------- construction
    @classmethod
    def from_pandas(
        cls,
        df: Any,
        id_column: str | None = None,
        categorical: Iterable[str] = (),
        multi: Mapping[str, str] | None = None,
        numeric: Iterable[str] = (),
        raw: Iterable[str] = (),
    ) -> "Features":
        """Build a table from a DataFrame (see :meth:`from_columns`)."""
        wanted = {*categorical, *(multi or {}), *numeric, *raw} | ({id_column} if id_column else set())
        missing = sorted(c for c in wanted if c not in df.columns)
        if missing:
            raise ValueError(f"columns {missing} not found; the frame has {list(df.columns)}")
        return cls.from_columns({c: df[c].to_numpy() for c in wanted}, id_column, categorical, multi,
                                numeric, raw)

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Any],
        id_column: str | None = None,
        categorical: Iterable[str] = (),
        multi: Mapping[str, str] | None = None,
        numeric: Iterable[str] = (),
        raw: Iterable[str] = (),
    ) -> "Features":
        """Build a table from equal-length columns (numpy arrays, lists, pandas Series).

        ``categorical`` columns are coded in sorted order of their distinct
        values (missing: None, NaN or "" -> code -1); ``multi`` maps a column
        of separated strings to its separator (e.g. ``{"genres": "|"}``), each
        value coded against a sorted vocabulary; ``numeric`` columns become
        float32 (missing or non-numeric -> NaN); ``raw`` columns are kept as
        objects. ``id_column`` holds the raw ids the rows describe.
        """
        cols = {k: np.asarray(v) for k, v in columns.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns have different lengths: {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        cat, vocab, mult, num, rawd = {}, {}, {}, {}, {}
        for name in categorical:
            col = cols[name]
            miss = _missing(col)
            codes = np.full(n, -1, dtype=np.int32)
            present = col[~miss]
            if present.dtype == object:
                present = np.asarray(present.tolist())
            uniques, c = factorize(present) if len(present) else (np.zeros(0), np.zeros(0, np.int64))
            codes[~miss] = c
            cat[name] = codes
            vocab[name] = np.asarray(uniques.tolist(), dtype=object)
        for name, sep in (multi or {}).items():
            col = cols[name]
            miss = _missing(col)
            parts = [[] if m else [p for p in str(v).split(sep) if p] for v, m in zip(col.tolist(), miss)]
            lens = np.array([len(p) for p in parts], dtype=np.int64)
            flat = np.array([p for row in parts for p in row], dtype=str)
            uniques, c = factorize(flat) if len(flat) else (np.zeros(0), np.zeros(0, np.int64))
            mult[name] = (offsets_from_lengths(lens), c.astype(np.int32))
            vocab[name] = np.asarray(uniques.tolist(), dtype=object)
        for name in numeric:
            num[name] = _to_float(cols[name], name)
        for name in raw:
            rawd[name] = cols[name].astype(object)
        ids = cols[id_column] if id_column is not None else None
        return cls(n, cat, mult, num, vocab, rawd, ids)

    @classmethod
    def from_flags(cls, name: str, flags: np.ndarray, labels: Iterable[str], n: int | None = None) -> "Features":
        """A multi-valued feature from a 0/1 matrix (rows x labels), e.g. ML-100K genre flags."""
        flags = np.asarray(flags) != 0
        rows, cols = np.nonzero(flags)
        lengths = np.bincount(rows, minlength=flags.shape[0])
        return cls(
            flags.shape[0] if n is None else n,
            multi={name: (offsets_from_lengths(lengths), cols.astype(np.int32))},
            vocab={name: np.asarray(list(labels), dtype=object)},
        )

    def merge(self, other: "Features") -> "Features":
        """Columns of both tables (same rows); ``other`` wins on a name clash."""
        if other.n != self.n:
            raise ValueError(f"cannot merge tables with {self.n} and {other.n} rows")
        return Features(
            self.n,
            {**self.categorical, **other.categorical},
            {**self.multi, **other.multi},
            {**self.numeric, **other.numeric},
            {**self.vocab, **other.vocab},
            {**self.raw, **other.raw},
            self.ids if self.ids is not None else other.ids,
        )


def _missing(col: np.ndarray) -> np.ndarray:
    """None, NaN and "" entries."""
    if col.dtype.kind == "f":
        return np.isnan(col)
    if col.dtype.kind in "iub":
        return np.zeros(len(col), dtype=bool)
    return np.fromiter((v is None or v == "" or (isinstance(v, float) and v != v) for v in col.tolist()),
                       bool, len(col))


def _to_float(col: np.ndarray, name: str) -> np.ndarray:
    """float32 values; missing or non-numeric entries -> NaN. A finite value
    beyond float32's range raises ValueError (it would silently become inf)."""
    if col.dtype.kind in "fiub":
        wide = col.astype(np.float64)
    else:

        def conv(v: Any) -> float:
            try:
                return float(v)
            except (TypeError, ValueError):
                return float("nan")

        wide = np.array([conv(v) for v in col.tolist()], dtype=np.float64)
    with np.errstate(over="ignore"):
        out = wide.astype(np.float32)
    overflow = np.isinf(out) & np.isfinite(wide)
    if overflow.any():
        row = int(np.flatnonzero(overflow)[0])
        raise ValueError(
            f"numeric feature {name!r}: value {float(wide[row])!r} at row {row} is beyond float32's range"
        )
    return out
