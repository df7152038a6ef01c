"""MeLU's evaluation protocol (Lee et al., KDD 2019) on MovieLens 100K.

Four states from one log: existing users x existing items (warm), new users, new items, and both new;
users with 13-100 ratings, query = 10 items, support = the rest. MeLU (feature embeddings + an MLP whose
decision layers are adapted per user) is compared with MetaMF + MAML and the bias baseline on MAE and
MeLU's within-query nDCG@1/@3.

    python examples/melu_protocol.py                        # MovieLens 100K (downloaded or cached)
    python examples/melu_protocol.py --data PATH/ml-100k    # an unpacked copy
    python examples/melu_protocol.py --small                # synthetic data, a few seconds (tests)
"""

import argparse

import torch

from metarec_fast import datasets, evaluation
from metarec_fast.baselines import BiasBaseline
from metarec_fast.data import melu_split
from metarec_fast.experiments import melu_model
from metarec_fast.meta import MetaScorer, MetaTrainer
from metarec_fast.models import MetaMF

parser = argparse.ArgumentParser()
parser.add_argument("--data", help="an unpacked MovieLens folder (default: movielens('100k'))")
parser.add_argument("--small", action="store_true", help="synthetic data, one epoch (tests)")
parser.add_argument("--epochs", type=int, default=None)
args = parser.parse_args()

if args.small:
    data = datasets.synthetic(n_users=400, n_items=150, random_state=0)
else:
    data = datasets.movielens(args.data or "100k")
epochs = args.epochs or (1 if args.small else 20)
states = melu_split(data, random_state=0)
train = states["train"]
print({name: len(ts) for name, ts in states.items()})

torch.manual_seed(0)
mean = float(train.query.ratings.mean())
# MeLU: item features (genres, ...) and user features (age, gender, occupation, ...) -> MLP.
melu, user_codes = melu_model(data, dim=32, hidden=(64, 64), rating_offset=mean, random_state=0)
melu_trainer = MetaTrainer(melu, "maml", inner_steps=1, inner_lr=0.01, outer_lr=5e-4,
                           engine="torch", user_features=user_codes, random_state=0)
melu_trainer.fit(train, states["warm"], epochs=epochs, patience=3, show_progress=not args.small)

mf = MetaMF(data.n_items, dim=32, global_bias=mean, random_state=0)
mf_trainer = MetaTrainer(mf, "maml", inner_steps=5, inner_lr=0.1, outer_lr=0.005, random_state=0)
mf_trainer.fit(train, states["warm"], epochs=epochs, patience=3, show_progress=not args.small)

models = [MetaScorer(melu_trainer, name="melu-maml"), MetaScorer(mf_trainer, name="metamf-maml"),
          BiasBaseline().fit(train)]
for name in ("warm", "user_cold", "item_cold", "user_item_cold"):
    report = evaluation.evaluate(models, states[name], protocols=("rating", "query_ranking"), ks=(1, 3))
    print(f"\n== {name} ({len(states[name])} users)")
    print(report.table(["mae", "rmse", "query_ndcg@1", "query_ndcg@3"]))
