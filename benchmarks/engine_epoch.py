"""One meta-training epoch on MovieLens 100K (user-cold), engine="cpp" vs engine="torch".

Same model, seed and settings for both engines; prints seconds per epoch and the
validation loss after each epoch (equal quality: the two engines compute the
same meta-gradients, so the losses agree up to float rounding).

    python benchmarks/engine_epoch.py [--data-home ../shared/data] [--epochs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--algorithm", default="maml")
    args = parser.parse_args()

    import torch

    import metarec_fast as mf
    from metarec_fast import datasets
    from metarec_fast.data import cold_start_split
    from metarec_fast.meta import MetaTrainer
    from metarec_fast.models import MetaMF

    torch.set_num_threads(args.threads)
    mf.set_num_threads(args.threads)
    data = datasets.movielens("100k", data_home=args.data_home)
    train, val, _ = cold_start_split(data, scenario="user", support=10, query="rest", random_state=0)
    rows = {}
    for engine in ("cpp", "torch"):
        model = MetaMF(data.n_items, dim=32, global_bias=3.5, random_state=0)
        trainer = MetaTrainer(model, args.algorithm, inner_steps=5, inner_lr=0.1, outer_lr=0.005,
                              meta_batch_size=32, engine=engine, random_state=0)
        times = []
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            trainer.fit(train, epochs=epoch, show_progress=False)
            times.append(time.perf_counter() - start)
        rows[engine] = (min(times), trainer.validation_loss(val))
        print(f"{engine:>6}: best epoch {rows[engine][0]:.3f} s, val loss {rows[engine][1]:.6f}", flush=True)
    print(f"speed-up cpp vs torch: {rows['torch'][0] / rows['cpp'][0]:.1f}x "
          f"(val loss difference {abs(rows['cpp'][1] - rows['torch'][1]):.2e}), {args.threads} threads")


if __name__ == "__main__":
    main()
