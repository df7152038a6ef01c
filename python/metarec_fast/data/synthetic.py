"""A synthetic interaction log with the structure that makes meta-learning matter.

* Users belong to latent taste clusters (user vector = cluster centre + noise).
* Items have a main genre whose direction is close to one cluster's centre, so
  clusters prefer different items; item popularity follows a power law.
* Per-user activity is log-normal (a few heavy users, many light ones).
* Side features correlate with the clusters: ``occupation`` equals the user's
  cluster with probability ``1 - feature_noise``; ``age`` shifts with it;
  ``gender`` is an uncorrelated distractor. Items carry multi-valued
  ``genres`` (main genre + up to two others) and a numeric ``release_date``.
* Ratings: explicit 1..5 from the user-item affinity plus biases and noise
  (rating shares close to MovieLens'), or implicit (1.0 for every sampled
  interaction). Timestamps spread over each user's active period.

Everything is vectorised and deterministic for a seed: 10M interactions take
a few seconds. The true cluster of every user is kept in
``info["user_cluster"]`` of the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._ragged import offsets_from_lengths, sorted_unique as _sorted_unique
from .features import Features
from .interactions import Interactions

# Target shares of the ratings 1..5 (MovieLens 100K's are about these).
_RATING_SHARES = np.array([0.06, 0.11, 0.27, 0.34, 0.22])


def make_synthetic(
    n_users: int = 5000,
    n_items: int = 2000,
    n_interactions: int | None = None,
    *,
    mean_activity: float = 40.0,
    n_clusters: int = 8,
    dim: int = 16,
    implicit: bool = False,
    popularity_exponent: float = 0.9,
    activity_sigma: float = 1.0,
    min_activity: int = 5,
    cluster_strength: float = 3.0,
    feature_noise: float = 0.25,
    rating_noise: float = 0.5,
    features: bool = True,
    random_state: Any = 0,
) -> Interactions:
    """Generate a synthetic log (see the module docstring).

    ``n_interactions`` (if given) sets the expected total, else
    ``n_users * mean_activity``. Each user gets a log-normal number of draws
    (at least ``min_activity``, at most half the catalogue); a repeated
    (user, item) draw is kept once and topped up by a few extra rounds, so the
    realised count can be a little lower than requested (within a few percent
    unless heavy users ask for most of a small catalogue). ``cluster_strength`` scales how
    much a cluster's taste (rather than popularity alone) picks its items.
    """
    for name, v in (("n_users", n_users), ("n_items", n_items), ("n_clusters", n_clusters), ("dim", dim)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not 0.0 <= feature_noise <= 1.0:
        raise ValueError(f"feature_noise must lie in [0, 1], got {feature_noise}")
    rng = np.random.default_rng(random_state)
    total = float(n_interactions if n_interactions is not None else n_users * mean_activity)
    if total <= 0:
        raise ValueError("the requested number of interactions must be positive")

    # Latent structure.
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    cluster = rng.integers(0, n_clusters, n_users)
    user_vec = centers[cluster] + 0.35 * rng.standard_normal((n_users, dim)).astype(np.float32) / np.sqrt(dim)
    n_genres = max(n_clusters, 2) + 4
    genre_dirs = np.concatenate([centers, rng.standard_normal((n_genres - n_clusters, dim)).astype(np.float32)])
    genre_dirs /= np.linalg.norm(genre_dirs, axis=1, keepdims=True)
    main_genre = rng.integers(0, n_genres, n_items)
    item_vec = genre_dirs[main_genre] + 0.5 * rng.standard_normal((n_items, dim)).astype(np.float32) / np.sqrt(dim)
    rank = rng.permutation(n_items)
    log_pop = -popularity_exponent * np.log1p(rank)

    # Item distribution of each cluster: popularity x exp(strength * affinity).
    logits = log_pop[None, :] + cluster_strength * (centers @ item_vec.T)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    guide = _guide_table(cdf)

    # Activity: log-normal, scaled to the requested total.
    act = np.exp(activity_sigma * rng.standard_normal(n_users))
    lo_act, hi_act = min(min_activity, n_items), max(n_items // 2, 1)
    for _ in range(8):  # rescale so that the clipped counts add up to the requested total
        counts = np.clip(np.round(act * (total / act.sum())), lo_act, hi_act).astype(np.int64)
        if abs(counts.sum() - total) <= 0.002 * total:
            break
        free = (counts > lo_act) & (counts < hi_act)
        if not free.any():
            break
        act = np.where(free, act * (1 + (total - counts.sum()) / max(counts[free].sum(), 1)), act)
    row_user = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    target = len(row_user)
    keys = _sorted_unique(row_user * n_items + _draw(cdf, guide, cluster[row_user], rng))
    have = np.bincount(keys // n_items, minlength=n_users)
    extra = np.zeros(0, dtype=np.int64)
    for _ in range(3):  # repeated (user, item) draws are kept once: top up each user's deficit
        need = np.maximum(counts - have, 0)
        if need.sum() <= 0.01 * target:
            break
        row_user = np.repeat(np.arange(n_users, dtype=np.int64), np.ceil(need * 1.2).astype(np.int64))
        new = _sorted_unique(row_user * n_items + _draw(cdf, guide, cluster[row_user], rng))
        new = new[~_isin_sorted(new, keys) & ~_isin_sorted(new, extra)]
        have += np.bincount(new // n_items, minlength=n_users)
        extra = np.sort(np.concatenate([extra, new]))
    if len(extra):
        keys = np.sort(np.concatenate([keys, extra]), kind="stable")
    users = (keys // n_items).astype(np.int32)
    items = (keys % n_items).astype(np.int32)
    n = len(keys)

    # Ratings from the affinity, in chunks to bound memory.
    user_bias = 0.3 * rng.standard_normal(n_users).astype(np.float32)
    item_bias = (0.3 * rng.standard_normal(n_items) - 0.05 * np.log1p(rank)).astype(np.float32)
    score = np.empty(n, dtype=np.float32)
    step = 1 << 20
    for start in range(0, n, step):
        sl = slice(start, start + step)
        score[sl] = np.einsum("ij,ij->i", user_vec[users[sl]], item_vec[items[sl]])
    score += user_bias[users] + item_bias[items]
    score += rating_noise * rng.standard_normal(n).astype(np.float32)
    if implicit:
        ratings = np.ones(n, dtype=np.float32)
    else:
        sample = score[:: max(n // 1_000_000, 1)]  # cut points from a (deterministic) subsample
        cuts = np.quantile(sample, np.cumsum(_RATING_SHARES)[:-1]) if n else np.zeros(4)
        ratings = (np.searchsorted(cuts, score) + 1).astype(np.float32)

    # Timestamps: each user is active over a window inside two years.
    t0, span = 1_500_000_000, 2 * 365 * 86400
    start_t = t0 + (rng.random(n_users) * span * 0.8).astype(np.int64)
    length = (rng.random(n_users) * span * 0.2 + 86400).astype(np.int64)
    ts = start_t[users] + (rng.random(n) * length[users]).astype(np.int64)

    uf = itf = None
    if features:
        noisy = rng.random(n_users) < feature_noise
        occupation = np.where(noisy, rng.integers(0, n_clusters, n_users), cluster).astype(np.int32)
        age = (20 + 40 * cluster / max(n_clusters - 1, 1) + 6 * rng.standard_normal(n_users)).astype(np.float32)
        gender = rng.integers(0, 2, n_users).astype(np.int32)
        uf = Features(
            n_users,
            categorical={"occupation": occupation, "gender": gender},
            numeric={"age": np.clip(age, 10, 90)},
            vocab={"occupation": np.array([f"occ{c}" for c in range(n_clusters)], dtype=object),
                   "gender": np.array(["F", "M"], dtype=object)},
        )
        extra = rng.integers(0, 3, n_items)
        others = rng.integers(0, n_genres, (n_items, 2))
        g = np.concatenate([main_genre[:, None], others], axis=1)
        keep = np.arange(3)[None, :] <= extra[:, None]
        gmat = np.zeros((n_items, n_genres), dtype=bool)
        rr, cc = np.nonzero(keep)
        gmat[rr, g[rr, cc]] = True
        rows, cols = np.nonzero(gmat)
        release = (t0 // 86400 - 3650 + rng.random(n_items) * 3650 + 0.0).astype(np.float32)
        itf = Features(
            n_items,
            multi={"genres": (offsets_from_lengths(np.bincount(rows, minlength=n_items)), cols.astype(np.int32))},
            numeric={"release_date": release},
            vocab={"genres": np.array([f"genre{k}" for k in range(n_genres)], dtype=object)},
        )
    info = {
        "rows_read": n,
        "duplicates_dropped": 0,
        "source": "synthetic",
        "requested_interactions": int(target),
        "user_cluster": cluster.astype(np.int32),
        "params": {"n_users": n_users, "n_items": n_items, "n_clusters": n_clusters, "dim": dim,
                   "implicit": implicit, "random_state": random_state if isinstance(random_state, int) else None},
    }
    out = Interactions(users, items, ratings, ts, np.arange(n_users), np.arange(n_items), uf, itf,
                       implicit, info)
    out._csr_order = np.arange(n)
    return out



def _guide_table(cdf: np.ndarray) -> np.ndarray:
    """For each cluster and each of ``8 * n_items`` equal buckets of [0, 1), the first item
    whose CDF reaches the bucket's lower edge (flat indices into ``cdf.ravel()``)."""
    k, n = cdf.shape
    m = 8 * n
    edges = np.arange(m) / m
    return np.stack([np.searchsorted(cdf[c], edges, side="right") + c * n for c in range(k)]).ravel()


def _draw(cdf: np.ndarray, guide: np.ndarray, row_cluster: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sampling of one item per row from its cluster's distribution (guide-table search)."""
    k, n = cdf.shape
    m = 8 * n
    flat = cdf.ravel()
    u = rng.random(len(row_cluster))
    idx = guide[row_cluster * m + (u * m).astype(np.int64)]
    # Walk forward to the first item whose CDF exceeds u (about one step on average).
    todo = np.flatnonzero(flat[idx] <= u)
    while todo.size:
        idx[todo] += 1
        todo = todo[flat[idx[todo]] <= u[todo]]
    return idx - row_cluster * n


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Membership of ``values`` in the sorted array ``sorted_keys`` (binary search)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[pos] == values
