"""Validation-only hyper-parameter search for the meta-learners.

Every meta-learner of an experiment gets the same budget: ``trials``
configurations, the first one being the configuration it was given (so tuning
never chooses something worse than the defaults *on validation*), the others
drawn at random (seeded) from a documented search space. Each trial is
meta-trained on the training tasks and scored on the **validation** tasks with
the metric its objective targets: RMSE for the rating models (as the bias and
pretrain + fine-tune baselines are tuned), nDCG@10 over the catalogue for the
ranking models (as EASE, ALS and ItemKNN are tuned). Test tasks are never
looked at.

The baselines search their own grids (at least as many trials: the bias model
64, EASE 7, ItemKNN 12, ALS 4, pretrain + fine-tune 24 adaptation settings),
see :mod:`metarec_fast.baselines`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

#: Search space of the rating models (MSE): field of MetaConfig -> choices.
RATING_SPACE: Mapping[str, Sequence[Any]] = {
    "inner_steps": (1, 3, 5, 10),
    "inner_lr": (0.01, 0.03, 0.1, 0.3),
    "dim": (16, 32, 64),
    "l2": (0.0, 0.01, 0.1),
    "outer_lr": (0.001, 0.003, 0.01),
    "init": ("random", "pretrained"),
    "support_encoder": (False, True),
}
#: Search space of the ranking models (logistic inner loop, ranking meta-objective).
RANKING_SPACE: Mapping[str, Sequence[Any]] = {
    "loss": ("logistic", "softmax"),
    "inner_steps": (1, 3, 5, 10),
    "inner_lr": (0.1, 0.3, 0.5, 1.0),
    "dim": (16, 32, 64),
    "l2": (0.0, 0.01),
    "outer_lr": (0.003, 0.01, 0.03),
    "support_encoder": (False, True),
}
#: The validation metric each objective is selected on.
SELECTION = {"rating": "rmse", "ranking": "ndcg@10"}


def sample_configs(base: Any, space: Mapping[str, Sequence[Any]], trials: int, random_state: Any = None,
                   fixed: Sequence[str] = ()) -> list[Any]:
    """``trials`` distinct configurations: ``base`` first, then random draws from
    ``space`` (each field uniform over its choices; ``fixed`` fields keep
    ``base``'s value). Fewer when the space has fewer distinct points."""
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"trials must be an int >= 1, got {trials!r}")
    rng = np.random.default_rng(random_state)
    keys = [k for k in space if k not in fixed]
    out, seen = [base], {_key(base, keys)}
    size = math.prod(len(space[k]) for k in keys) if keys else 1
    attempts = 0
    while len(out) < min(trials, size) and attempts < 100 * trials:
        attempts += 1
        draw = {k: space[k][int(rng.integers(len(space[k])))] for k in keys}
        cand = dataclasses.replace(base, **draw)
        key = _key(cand, keys)
        if key not in seen:
            seen.add(key)
            out.append(cand)
    return out


def _key(cfg: Any, keys: Sequence[str]) -> tuple:
    return tuple(getattr(cfg, k) for k in keys)


def select(candidates: Sequence[Any], fit: Callable[[Any], Any], score: Callable[[Any], float],
           lower_is_better: bool) -> tuple[Any, list[dict[str, Any]]]:
    """Fit every candidate, score each fitted model on validation data, keep the best.

    Returns ``(best fitted model, trials)``; ``trials`` lists each candidate's
    ``value`` (NaN for a failed fit, with ``error``). Ties keep the earlier
    candidate (the base configuration first). When no value is finite (e.g. no
    validation user has a relevant item) the first fitted candidate is kept;
    when every fit fails, the first failure is raised again.
    """
    best, best_value, first_fitted, first_error, trials = None, math.inf, None, None, []
    for cfg in candidates:
        record: dict[str, Any] = {"config": dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg}
        try:
            model = fit(cfg)
            value = float(score(model))
        except (ValueError, RuntimeError) as exc:  # e.g. a diverging trial
            first_error = first_error or exc
            record.update(value=math.nan, error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            trials.append(record)
            continue
        first_fitted = model if first_fitted is None else first_fitted
        record["value"] = value
        trials.append(record)
        signed = value if lower_is_better else -value
        if math.isfinite(signed) and (best is None or signed < best_value):
            best, best_value = model, signed
    if best is None and first_fitted is None:
        raise first_error  # type: ignore[misc]
    return (best if best is not None else first_fitted), trials
