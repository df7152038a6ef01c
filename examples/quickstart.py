"""Quickstart: load data, split by user, meta-train MAML, compare with baselines, serve a new user.

    python examples/quickstart.py            # synthetic data, about a minute on 2 cores
    python examples/quickstart.py --small    # a few seconds (what the tests run)
    python examples/quickstart.py --movielens PATH/TO/ml-100k
"""

import argparse

from metarec_fast import datasets, evaluation
from metarec_fast.baselines import BiasBaseline, Popularity
from metarec_fast.data import cold_start_split
from metarec_fast.meta import MetaScorer, MetaTrainer
from metarec_fast.models import MetaMF
from metarec_fast.serving import Recommender

parser = argparse.ArgumentParser()
parser.add_argument("--small", action="store_true", help="tiny sizes (tests)")
parser.add_argument("--movielens", metavar="DIR", help="an unpacked MovieLens folder instead of synthetic data")
args = parser.parse_args()

# 1. Data: the embedded synthetic log (no download) or MovieLens.
if args.movielens:
    data = datasets.movielens(args.movielens)
else:
    data = datasets.synthetic(n_users=300 if args.small else 2000, n_items=100 if args.small else 500, random_state=0)
print(data)

# 2. A user-cold split: test users never appear in training; each has K=10 support ratings.
train, val, test = cold_start_split(data, scenario="user", support=10, query="rest", random_state=0)

# 3. Meta-train MAML (exact second order, C++ inner loop) on the training users.
model = MetaMF(data.n_items, dim=16, global_bias=float(train.query.ratings.mean()), random_state=0)
trainer = MetaTrainer(model, "maml", inner_steps=5, inner_lr=0.1, outer_lr=0.01, random_state=0)
trainer.fit(train, val, epochs=1 if args.small else 10, show_progress=not args.small)

# 4. Evaluate next to non-meta baselines on the same test users.
baselines = [Popularity().fit(train), BiasBaseline().fit(train, val)]
report = evaluation.evaluate([MetaScorer(trainer, name="maml"), *baselines], test, ks=(10,))
print(report.table())

# 5. Serve a brand-new user from five ratings: numpy + C++ only.
rec = Recommender.from_model(model, trainer)
items = data.item_index(data.item_raw_ids[:5])  # raw item ids -> dense ids
state = rec.adapt((items, [5.0, 4.0, 1.0, 2.0, 5.0]))
ids, scores = rec.recommend(state, k=5)
print("top-5 for the new user:", data.item_raw(ids[0]).tolist(), [round(float(s), 2) for s in scores[0]])
