"""MeLU's protocol on MovieLens 100K: four states (warm, user-cold, item-cold,
user-and-item-cold), MeLU and MetaMF meta-learners next to the baselines.

    python benchmarks/melu_preset.py [--data-home ../shared/data] [--seeds 0 1 2] [--epochs 20]

Users with 13-100 ratings; query = 10 random items, support = the rest
(metarec_fast.data.melu_split). 10% of the training tasks are held out for
early stopping and for tuning the baselines. Prints one table per state (mean ±
std over seeds) and writes benchmarks/results/melu_preset.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

STATES = ("warm", "user_cold", "item_cold", "user_item_cold")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "melu_preset.json"))
    args = parser.parse_args()

    import torch

    from metarec_fast import datasets
    from metarec_fast.baselines import default_baselines
    from metarec_fast.data import melu_split
    from metarec_fast.evaluation import evaluate
    from metarec_fast.experiments import aggregate_seeds
    from metarec_fast.meta import MetaScorer, MetaTrainer
    from metarec_fast.models import MeLU, MetaMF

    data = datasets.movielens("100k", data_home=args.data_home)
    per_state: dict[str, list[dict]] = {s: [] for s in STATES}
    seconds: dict[str, list[float]] = {}
    for seed in args.seeds:
        torch.manual_seed(seed)
        states = melu_split(data, random_state=seed)
        train_all = states["train"]
        order = np.random.default_rng(seed).permutation(len(train_all))
        val, train = train_all.subset(order[: len(order) // 10]), train_all.subset(order[len(order) // 10:])
        scorers = []
        for b in default_baselines():
            t = time.perf_counter()
            scorers.append(b.fit(train, val))
            seconds.setdefault(b.name, []).append(time.perf_counter() - t)
        mean = float(train.query.ratings.mean())
        melu, codes = MeLU.from_features(data.item_features, data.user_features, rating_offset=mean,
                                         random_state=seed)
        configs = [
            ("melu-maml", melu, dict(algorithm="maml", inner_steps=1, inner_lr=0.01, outer_lr=1e-3), codes),
            ("metamf-maml", MetaMF(data.n_items, dim=32, global_bias=mean, random_state=seed),
             dict(algorithm="maml", inner_steps=5, inner_lr=0.1, outer_lr=0.005), None),
            ("metamf-metasgd", MetaMF(data.n_items, dim=32, global_bias=mean, random_state=seed),
             dict(algorithm="metasgd", inner_steps=5, inner_lr=0.1, outer_lr=0.005), None),
        ]
        for name, model, kw, feats in configs:
            t = time.perf_counter()
            trainer = MetaTrainer(model, meta_batch_size=32, random_state=seed, user_features=feats, **kw)
            trainer.fit(train, val, epochs=args.epochs, patience=5, show_progress=False)
            seconds.setdefault(name, []).append(time.perf_counter() - t)
            scorers.append(MetaScorer(trainer, name=name))
        for state in STATES:
            # New items are ranked among the new items (the item-cold protocol).
            candidates = "cold" if state in ("item_cold", "user_item_cold") else "all"
            rep = evaluate(scorers, states[state], ks=(1, 3, 5, 10), candidates=candidates)
            per_state[state].append({"seed": seed, **rep.to_dict()})
        print(f"seed {seed} done", flush=True)
    out = {}
    from metarec_fast.evaluation import format_table

    for state in STATES:
        results = aggregate_seeds(per_state[state], seconds)
        out[state] = results
        print(f"\n== {state} ({len(args.seeds)} seeds)")
        print(format_table(results, ("mae", "rmse", "query_ndcg@1", "query_ndcg@3", "ndcg@10")))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
