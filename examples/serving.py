"""Serving: a trained model as a numpy + C++ bundle; adapt new users, recommend, update online.

    python examples/serving.py                    # trains a small model first (synthetic data)
    python examples/serving.py --bundle B.npz     # e.g. metarec-report/models/bundle.npz from `metarec-fast train`
    python examples/serving.py --small            # a few seconds (what the tests run)
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from metarec_fast.serving import Recommender

parser = argparse.ArgumentParser()
parser.add_argument("--bundle", help="a serving bundle (.npz); default: train a small one")
parser.add_argument("--small", action="store_true", help="tiny sizes (tests)")
args = parser.parse_args()

if args.bundle:
    path = Path(args.bundle)
else:  # Training needs torch; serving (below) does not.
    from metarec_fast import datasets
    from metarec_fast.data import cold_start_split
    from metarec_fast.meta import MetaTrainer
    from metarec_fast.models import MetaMF

    data = datasets.synthetic(n_users=300 if args.small else 2000, n_items=100 if args.small else 1000,
                              random_state=0)
    train, val, _ = cold_start_split(data, scenario="user", support=10, random_state=0)
    model = MetaMF(data.n_items, dim=16, global_bias=float(train.query.ratings.mean()), random_state=0)
    trainer = MetaTrainer(model, "metasgd", inner_steps=5, inner_lr=0.1, outer_lr=0.01, random_state=0)
    trainer.fit(train, val, epochs=1 if args.small else 5, show_progress=False)
    path = Path(tempfile.mkdtemp()) / "bundle.npz"
    Recommender.from_model(model, trainer, item_raw_ids=data.item_raw_ids.tolist()).save(path)

# Load: plain arrays + a JSON header, checked (a truncated or foreign file gives a clear error).
rec = Recommender.load(path)
print(f"bundle {path}: {rec.n_items} items, d={rec.dim}, {rec.steps} inner steps, loss={rec.loss}")

# One new user: three ratings (dense item ids), adapt in C++, then top-10 with those items excluded.
state = rec.adapt(([3, 17, 42], [5.0, 1.0, 4.0]))
ids, scores = rec.recommend(state, k=10)
print("top-10:", ids[0].tolist())

# Online update: the user rates one more item; adaptation continues from the last state.
state = rec.adapt(([ids[0, 0]], [5.0]), state=state)
print("after one more rating:", rec.recommend(state, k=10)[0][0].tolist())

# A batch of new users at once (one C++ call, OpenMP over users), and the latency of one user.
rng = np.random.default_rng(0)
users = [(rng.choice(rec.n_items, 10, replace=False), rng.integers(1, 6, 10).astype(float))
         for _ in range(100 if args.small else 1000)]
start = time.perf_counter()
states = rec.adapt(users)
ids, _ = rec.recommend(states, k=10)
print(f"{len(users)} users adapted + top-10 in {1e3 * (time.perf_counter() - start):.1f} ms")
start = time.perf_counter()
rec.recommend(rec.adapt(users[0]), k=10)
print(f"one user: {1e3 * (time.perf_counter() - start):.2f} ms")
