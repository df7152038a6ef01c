"""GPU benchmark: one meta-gradient of second-order MAML, CUDA kernels vs torch.func.

    python benchmarks/gpu_bench_adapt.py [--json out.json] [--users 1024 16384]

For 1,024 and 16,384 users with 20 support and 20 query items each, d=64,
T=5 inner steps (float32, 10,000 items), times ``learner(batch).backward()``
(forward + exact backward, the loss and the autograd glue included) of

* ``engine="cpp"`` on a CUDA model: the CUDA kernels (metarec_fast._cuda),
* ``engine="torch"`` on the same GPU: torch.func (vmap over users of grad,
  create_graph), the reference engine,

and, for information, the two CUDA launchers alone. The batch is on the GPU
before timing for both engines (the C++ engine's CSR copy is made once per
batch and cached on it). Before timing, the item-embedding gradients of the
two engines (and, for the smaller size, of the C++ CPU engine) must agree
(rtol 1e-3): exit status 1 otherwise. Target: the CUDA engine >= 10x faster
than torch.func.

Timing: CUDA events around each call, after warm-up; the median of repeats.
Prints markdown table rows on stdout; --json writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import numpy as np
from gpu_timing import cuda_median_ms

N_SUPPORT, N_QUERY, DIM, STEPS, N_ITEMS = 20, 20, 64, 5, 10_000
TARGET = 10.0
DEVICE = "cuda"


def make_batch(n_users: int, seed: int = 0) -> Any:
    import torch

    from metarec_fast.meta import TaskBatch

    rng = np.random.default_rng(seed)
    k = N_SUPPORT + N_QUERY
    items = np.stack([rng.choice(N_ITEMS, k, replace=False) for _ in range(n_users)]).astype(np.int64)
    ratings = rng.integers(1, 6, (n_users, k)).astype(np.float32)
    s_items, q_items = items[:, :N_SUPPORT], items[:, N_SUPPORT:]
    s_r, q_r = ratings[:, :N_SUPPORT], ratings[:, N_SUPPORT:]
    csr = {
        "s_indptr": np.arange(0, n_users * N_SUPPORT + 1, N_SUPPORT, dtype=np.int64),
        "s_items": np.ascontiguousarray(s_items.reshape(-1)),
        "s_targets": np.ascontiguousarray(s_r.reshape(-1)),
        "q_indptr": np.arange(0, n_users * N_QUERY + 1, N_QUERY, dtype=np.int64),
        "q_items": np.ascontiguousarray(q_items.reshape(-1)),
        "q_targets": np.ascontiguousarray(q_r.reshape(-1)),
    }
    t = torch.from_numpy
    return TaskBatch(t(s_items.copy()), t(s_r.copy()), torch.ones(n_users, N_SUPPORT),
                     t(q_items.copy()), t(q_r.copy()), torch.ones(n_users, N_QUERY), csr=csr)


def make_learner(engine: str, device: str) -> Any:
    from metarec_fast.meta import MetaLearner
    from metarec_fast.models import MetaMF

    model = MetaMF(N_ITEMS, dim=DIM, random_state=0, global_bias=3.0).to(device)
    return MetaLearner(model, "maml", inner_steps=STEPS, inner_lr=0.05, engine=engine)


def meta_gradient(learner: Any, batch: Any) -> Any:
    learner.zero_grad(set_to_none=True)
    learner(batch).backward()
    return learner.model.item_embedding.grad




def kernels_only(learner: Any, batch: Any) -> Callable[[], Any]:
    """The CUDA forward + backward launchers alone (no autograd, no loss)."""
    import torch

    from metarec_fast.meta.cpp_engine import batch_to_device_csr
    from metarec_fast.ops.adapt import cuda_linear_head_backward, cuda_linear_head_forward

    model = learner.model
    H, c = (t.detach().contiguous() for t in model.item_representations())
    tasks, _ = batch_to_device_csr(batch, H.dtype, H.device)
    args = dict(H=H, c=c, tasks=tasks, p0=model.head_p.detach().reshape(1, -1).contiguous(),
                b0=model.head_b.detach().reshape(1), per_user=False,
                alpha_p=torch.full((1,), 0.05, dtype=H.dtype, device=H.device), alpha_b=0.05,
                steps=STEPS, l2=0.0, loss="mse")
    grad = torch.ones(tasks["q_items"].shape[0], dtype=H.dtype, device=H.device)

    def run() -> Any:
        traj, _ = cuda_linear_head_forward(**args)
        return cuda_linear_head_backward(**args, trajectory=traj, grad_query_pred=grad, second_order=True)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--users", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    import torch

    from metarec_fast import _gpu

    if not (_gpu.cuda_available() and torch.cuda.is_available()):
        print("gpu_bench_adapt: needs metarec-fast built with CUDA and a CUDA device", file=sys.stderr)
        return 2
    device = DEVICE
    results = []
    for n_users in args.users:
        batch_cpu = make_batch(n_users)
        batch = batch_cpu.to(device)
        cpp, ref = make_learner("cpp", device), make_learner("torch", device)
        g_cpp = meta_gradient(cpp, batch).detach().clone()
        g_ref = meta_gradient(ref, batch).detach().clone()
        checks = [("torch.func on the GPU", g_ref)]
        if n_users <= 4096:
            checks.append(("the C++ CPU engine", meta_gradient(make_learner("cpp", "cpu"), batch_cpu).to(device)))
        for name, want in checks:
            try:
                torch.testing.assert_close(g_cpp, want, rtol=1e-3, atol=1e-6)
            except AssertionError as exc:
                print(f"gpu_bench_adapt: CUDA engine disagrees with {name} ({n_users} users):\n{exc}",
                      file=sys.stderr)
                return 1
        repeats_ref = max(3, args.repeats // (4 if n_users > 4096 else 2))
        ms_cpp = cuda_median_ms(lambda: meta_gradient(cpp, batch), args.repeats, warmup=3)
        ms_ref = cuda_median_ms(lambda: meta_gradient(ref, batch), repeats_ref, warmup=2)
        ms_kernels = cuda_median_ms(kernels_only(cpp, batch), args.repeats, warmup=3)
        speedup = ms_ref / ms_cpp
        results.append({
            "n_users": n_users, "support": N_SUPPORT, "query": N_QUERY, "d": DIM, "steps": STEPS,
            "n_items": N_ITEMS, "dtype": "float32", "algorithm": "maml (second order)",
            "cuda_engine_ms": ms_cpp, "torch_func_ms": ms_ref, "cuda_kernels_only_ms": ms_kernels,
            "speedup": speedup, "target_speedup": TARGET, "meets_target": speedup >= TARGET,
        })
        print(f"| adapt meta-gradient, {n_users:,} users x {N_SUPPORT} support + {N_QUERY} query, "
              f"d={DIM}, T={STEPS} (fp32) | engine=cpp on CUDA {ms_cpp:.3f} ms "
              f"(kernels {ms_kernels:.3f} ms) | torch.func on CUDA {ms_ref:.3f} ms | "
              f"{speedup:.1f}x (target >= {TARGET:.0f}x{'' if speedup >= TARGET else ', MISSED'}) |",
              flush=True)
        del cpp, ref, batch
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "gpu_bench_adapt", "device": torch.cuda.get_device_name(0),
                       "torch": torch.__version__, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
