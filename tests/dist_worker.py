"""One rank of the distributed tests (run as a subprocess by tests/test_distributed.py)."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from metarec_fast.distributed import DistributedMetaTrainer, distributed_session, recommend_sharded
from metarec_fast.meta import MetaTrainer
from metarec_fast.models import MetaMF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linear_tasks import DIM, N_ITEMS, linear_tasks as shared_linear_tasks  # noqa: E402

# Seconds a collective waits for the other rank. Generous, so that a rank descheduled for a
# while on a loaded machine does not fail a run; the failure tests do not wait for it (a dead
# or failing peer is noticed at once: closed connection, or the status slot of the all-reduce).
PG_TIMEOUT = 30

def linear_tasks(n_tasks, seed, dtype=torch.float64):
    return shared_linear_tasks(n_tasks, seed, dtype, ragged=True)


def implicit_tasks():
    """A real TaskSet (CSR path of the C++ engine) of implicit feedback."""
    from metarec_fast import datasets
    from metarec_fast.data import cold_start_split

    data = datasets.synthetic(n_users=80, n_items=N_ITEMS, implicit=True, random_state=0)
    train, val, _ = cold_start_split(data, scenario="user", support=5, query="rest", random_state=0)
    return train, val


def data_for(engine):
    if engine.startswith("implicit-"):
        return implicit_tasks()
    return linear_tasks(40, 0), linear_tasks(8, 1)


def make_trainer(cls, engine, algorithm, weighting="task", **kw):
    if engine.startswith("implicit-"):  # sampled negatives: the same draws as one process
        model = MetaMF(N_ITEMS, dim=DIM, random_state=0, dtype=torch.float64, loss="logistic")
        return cls(model, algorithm=algorithm, inner_steps=2, inner_lr=0.1, outer_lr=0.02, meta_batch_size=16,
                   random_state=0, engine=engine[len("implicit-"):], task_weighting=weighting, negatives=6,
                   support_negatives=2, **kw)
    batch_size = 16
    if engine.endswith("-mb1"):  # a global meta-batch of 1: one rank has no task every step
        engine, batch_size = engine[:-4], 1
    model = MetaMF(N_ITEMS, dim=DIM, random_state=0, dtype=torch.float64, global_bias=3.0)
    return cls(model, algorithm=algorithm, inner_steps=2, inner_lr=0.1, outer_lr=0.02,
               meta_batch_size=batch_size, random_state=0, engine=engine, task_weighting=weighting, **kw)


def main() -> None:
    scenario, rank, world, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    args = sys.argv[6:]
    # The session leaves the process group at the end: all ranks together (barrier +
    # destroy_process_group) after success, at once after an error. Tearing gloo down at
    # interpreter exit while the peer is already gone can abort the process instead.
    with distributed_session(init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                             timeout=PG_TIMEOUT):
        run(scenario, rank, out, args)


def run(scenario, rank, out, args):
    if scenario == "train":  # args: engine:algorithm:weighting ... (one after another, one group)
        for case in args:
            engine, algorithm, weighting = case.split(":")
            trainer = make_trainer(DistributedMetaTrainer, engine, algorithm, weighting)
            trainer.fit(*data_for(engine), epochs=2, show_progress=False,
                        checkpoint=os.path.join(out, f"ckpt-{case}.pt"))
            if rank == 0:
                torch.save({"state": trainer.learner.state_dict(), "history": trainer.history},
                           os.path.join(out, f"result-{case}.pt"))
    elif scenario in ("raise", "die"):
        trainer = make_trainer(DistributedMetaTrainer, "cpp", "maml")
        if rank == 1:
            calls = {"n": 0}
            original = trainer._local_backward

            def failing(batch, reptile):
                calls["n"] += 1
                if calls["n"] == 2:
                    if scenario == "die":
                        os._exit(3)
                    raise RuntimeError("boom on rank 1")
                return original(batch, reptile)

            trainer._local_backward = failing
        trainer.fit(linear_tasks(40, 0), epochs=3, show_progress=False)
    elif scenario == "startup-error":  # rank 1 fails fit's argument checks, before any training step
        trainer = make_trainer(DistributedMetaTrainer, "cpp", "maml")
        trainer.fit(linear_tasks(40, 0), epochs=-1 if rank == 1 else 2, show_progress=False)
    elif scenario == "mismatch":
        trainer = make_trainer(DistributedMetaTrainer, "cpp", "maml")
        trainer.fit(linear_tasks(40, rank), epochs=1, show_progress=False)
    elif scenario == "recommend":
        from metarec_fast.serving import Recommender

        model = MetaMF(N_ITEMS, dim=DIM, random_state=0, dtype=torch.float64, global_bias=3.0)
        rec = Recommender.from_model(model, dtype=np.float64)
        import scipy.sparse as sp

        support = sp.random(23, N_ITEMS, density=0.1, format="csr", random_state=0, dtype=np.float64)
        res = recommend_sharded(rec, support, k=7, out_dir=os.path.join(out, "shards"), gather=True)
        if rank == 0:
            np.savez(os.path.join(out, "gathered.npz"), ids=res[0], scores=res[1])
        else:
            assert res is None
    else:
        raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
