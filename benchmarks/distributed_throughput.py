"""Meta-training throughput (tasks per second) with 1 and 2 torch.distributed (gloo) processes.

Each configuration launches its ranks as subprocesses on 127.0.0.1; every rank
loads MovieLens 100K (user-cold split, K=10; the synthetic generator when the
data is not there), builds the same MetaMF and runs DistributedMetaTrainer with
the same *global* meta-batch, so every configuration does the same work per step.
The CPU cores are divided between the ranks (``--threads`` in total).

    python benchmarks/distributed_throughput.py [--data-home ../shared/data] [--epochs 2] [--threads 2]

Every configuration reaches the same training loss (the ranks compute the single
process's update). On one small machine the per-step all-reduce of every
gradient (MetaMF on ML-100K: ~55k floats) costs about as much as a step's
compute, so extra processes pay off only with larger meta-batches, heavier
models or more cores/machines; ``--threads 1`` gives every rank one thread
(a fair 1-vs-2-process comparison on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def rank_main(args: argparse.Namespace) -> None:
    import torch

    import metarec_fast as mf
    from metarec_fast import datasets
    from metarec_fast.data import cold_start_split
    from metarec_fast.distributed import DistributedMetaTrainer, init_distributed
    from metarec_fast.models import MetaMF

    threads = max(args.threads // args.world, 1)
    torch.set_num_threads(threads)
    mf.set_num_threads(threads)
    rank, world = init_distributed(init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank,
                                   world_size=args.world, timeout=120)
    try:
        data = datasets.movielens("100k", data_home=args.data_home, download=False)
        name = "ml-100k"
    except Exception:
        data = datasets.synthetic(n_users=1000, n_items=800, random_state=0)
        name = "synthetic"
    train, _, _ = cold_start_split(data, scenario="user", support=10, query="rest", random_state=0)
    model = MetaMF(data.n_items, dim=32, global_bias=3.5, random_state=0)
    trainer = DistributedMetaTrainer(model, args.algorithm, inner_steps=5, inner_lr=0.1, outer_lr=0.005,
                                     meta_batch_size=args.meta_batch_size, engine=args.engine, random_state=0)
    trainer.fit(train, epochs=1, show_progress=False)  # warm-up (and the start-up check)
    torch.distributed.barrier()
    start = time.perf_counter()
    trainer.fit(train, epochs=1 + args.epochs, show_progress=False)
    torch.distributed.barrier()
    seconds = time.perf_counter() - start
    if rank == 0:
        print(json.dumps({"world": world, "threads_per_rank": threads, "data": name, "tasks": len(train),
                          "seconds": seconds, "tasks_per_s": args.epochs * len(train) / seconds,
                          "loss": trainer.history[-1]["train_loss"]}), flush=True)
    torch.distributed.destroy_process_group()


def launch(args: argparse.Namespace, world: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [sys.executable, __file__, "--data-home", args.data_home, "--epochs", str(args.epochs),
            "--threads", str(args.threads), "--algorithm", args.algorithm, "--engine", args.engine,
            "--meta-batch-size", str(args.meta_batch_size), "--world", str(world), "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(args.threads // world, 1))}
    procs = [subprocess.Popen(base + ["--rank", str(r)], stdout=subprocess.PIPE, text=True, env=env)
             for r in range(world)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"world {world} failed: {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in total, split between ranks")
    parser.add_argument("--algorithm", default="maml")
    parser.add_argument("--engine", default="cpp")
    parser.add_argument("--meta-batch-size", type=int, default=32, help="the global meta-batch")
    parser.add_argument("--worlds", default="1,2")
    parser.add_argument("--world", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.world:
        rank_main(args)
        return
    rows = [launch(args, int(w)) for w in args.worlds.split(",")]
    base = rows[0]["tasks_per_s"]
    print(f"{args.algorithm}, engine {args.engine}, global meta-batch {args.meta_batch_size}, "
          f"{rows[0]['data']} ({rows[0]['tasks']} tasks), {args.threads} threads in total")
    print(f"{'ranks':>5} {'threads/rank':>12} {'seconds':>8} {'tasks/s':>9} {'speed-up':>8} {'train loss':>11}")
    for r in rows:
        print(f"{r['world']:>5} {r['threads_per_rank']:>12} {r['seconds']:>8.2f} {r['tasks_per_s']:>9.0f} "
              f"{r['tasks_per_s'] / base:>7.2f}x {r['loss']:>11.6f}")


if __name__ == "__main__":
    main()
