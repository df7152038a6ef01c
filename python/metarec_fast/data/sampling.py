"""Negative sampling for implicit feedback: uniform or popularity-based, seeded, never a positive.

Vectorised rejection sampling: draw every negative at once, look the drawn
(row, item) pairs up in the sorted positive pairs, redraw only the rejected
ones. Rows with very few non-positive items fall back to an exact draw from
their complement. Negatives are drawn with replacement within a row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._ragged import row_of, sorted_unique as _sorted_unique


def sample_negatives(
    positives: Any,
    n_items: int,
    n_negatives: int,
    method: str = "uniform",
    popularity: Any = None,
    random_state: Any = None,
    alpha: float = 1.0,
    max_rounds: int = 32,
) -> np.ndarray:
    """``(n_rows, n_negatives)`` int32 items, none of them a positive of its row.

    ``positives``: a scipy CSR matrix or an ``(indptr, items)`` pair (one row
    per user or task). ``method="uniform"`` draws every item with equal
    probability; ``"popularity"`` draws item *i* with probability proportional
    to ``(popularity[i] + 1) ** alpha`` (``popularity`` = interaction counts;
    the +1 keeps every item reachable). A row whose positives cover the whole
    catalogue raises ValueError.
    """
    if hasattr(positives, "indptr") and hasattr(positives, "indices"):
        indptr, items = np.asarray(positives.indptr), np.asarray(positives.indices)
    else:
        indptr, items = (np.asarray(a) for a in positives)
    indptr = indptr.astype(np.int64)
    items = items.astype(np.int64)
    if isinstance(n_negatives, bool) or not isinstance(n_negatives, (int, np.integer)) or n_negatives < 0:
        raise ValueError(f"n_negatives must be a non-negative int, got {n_negatives!r}")
    if method not in ("uniform", "popularity"):
        raise ValueError(f"method must be 'uniform' or 'popularity', got {method!r}")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise IndexError(f"positive items must lie in [0, {n_items})")
    n_rows = len(indptr) - 1
    rng = np.random.default_rng(random_state)
    rows = row_of(indptr)
    pos_keys = _sorted_unique(rows * n_items + items)
    n_pos = np.bincount(pos_keys // n_items, minlength=n_rows)
    full = n_pos >= n_items
    if n_negatives and full.any():
        raise ValueError(f"row {int(np.argmax(full))} has every one of the {n_items} items as a positive: "
                         "no negative to sample")
    if method == "popularity":
        if popularity is None:
            popularity = np.bincount(items, minlength=n_items)
        pop = np.asarray(popularity, dtype=np.float64)
        if pop.shape != (n_items,) or (pop < 0).any() or not np.isfinite(pop).all():
            raise ValueError(f"popularity must be {n_items} non-negative finite counts")
        cdf = np.cumsum((pop + 1.0) ** alpha)
        cdf /= cdf[-1]

        def draw(size: int) -> np.ndarray:
            return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n_items - 1)
    else:
        def draw(size: int) -> np.ndarray:
            return rng.integers(0, n_items, size=size)

    out = draw(n_rows * n_negatives).reshape(n_rows, n_negatives)
    row_ids = np.repeat(np.arange(n_rows, dtype=np.int64), n_negatives).reshape(n_rows, n_negatives)

    def rejected(cand: np.ndarray, r: np.ndarray) -> np.ndarray:
        keys = r * n_items + cand
        pos = np.searchsorted(pos_keys, keys)
        pos = np.minimum(pos, max(len(pos_keys) - 1, 0))
        return (pos_keys[pos] == keys) if len(pos_keys) else np.zeros(keys.shape, bool)

    bad = rejected(out, row_ids)
    for _ in range(max_rounds):
        if not bad.any():
            break
        idx = np.nonzero(bad)
        out[idx] = draw(len(idx[0]))
        bad[idx] = rejected(out[idx], row_ids[idx])
    if bad.any():  # rows nearly full of positives: draw exactly from the complement
        for r in np.unique(np.nonzero(bad)[0]):
            allowed = np.setdiff1d(np.arange(n_items), items[indptr[r]:indptr[r + 1]])
            cols = np.flatnonzero(bad[r])
            if method == "popularity":
                w = (np.asarray(popularity, np.float64)[allowed] + 1.0) ** alpha
                out[r, cols] = rng.choice(allowed, size=len(cols), p=w / w.sum())
            else:
                out[r, cols] = rng.choice(allowed, size=len(cols))
    return out.astype(np.int32)
