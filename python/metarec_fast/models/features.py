"""Side features (:class:`~metarec_fast.data.Features`) as model inputs."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def categorical_codes(features: Any, names: Sequence[str] | None = None) -> tuple[np.ndarray, list[int]]:
    """``[n, len(names)]`` int64 codes of categorical features and their cardinalities.

    Missing values (code -1) get their own code, the last one, so every row is valid.
    """
    names = list(names) if names is not None else list(features.categorical)
    cols, cards = [], []
    for name in names:
        if name not in features.categorical:
            raise ValueError(f"{name!r} is not a categorical feature; have {list(features.categorical)}")
        card = features.cardinality(name)
        codes = features.categorical[name].astype(np.int64)
        cols.append(np.where(codes < 0, card, codes))
        cards.append(card + 1)
    codes = np.stack(cols, axis=1) if cols else np.zeros((features.n, 0), np.int64)
    return codes, cards


def one_hot(features: Any, names: Sequence[str] | None = None) -> np.ndarray:
    """``[n, F]`` float32: one-hot categorical features, multi-hot multi-valued ones
    (normalised to sum 1) and standardised numeric ones (missing -> 0)."""
    blocks = []
    cat_names = [n for n in (names or features.categorical) if n in features.categorical]
    for name in cat_names:
        codes = features.categorical[name]
        block = np.zeros((features.n, features.cardinality(name)), np.float32)
        ok = codes >= 0
        block[np.flatnonzero(ok), codes[ok]] = 1.0
        blocks.append(block)
    for name, (indptr, codes) in features.multi.items():
        if names is not None and name not in names:
            continue
        block = np.zeros((features.n, features.cardinality(name)), np.float32)
        rows = np.repeat(np.arange(features.n), np.diff(indptr))
        block[rows, codes] = 1.0
        block /= np.maximum(block.sum(1, keepdims=True), 1.0)
        blocks.append(block)
    for name, values in features.numeric.items():
        if names is not None and name not in names:
            continue
        v = values.reshape(features.n, -1).astype(np.float64)
        mean = np.nanmean(v, axis=0) if v.size else 0.0
        std = np.nanstd(v, axis=0) if v.size else 1.0
        z = (v - mean) / np.where(std > 0, std, 1.0)
        blocks.append(np.nan_to_num(z, nan=0.0).astype(np.float32))
    if not blocks:
        return np.zeros((features.n, 0), np.float32)
    return np.concatenate(blocks, axis=1)
