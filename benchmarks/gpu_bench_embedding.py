"""GPU benchmark: metarec-fast's CUDA embedding_bag (forward, dense and sparse
backward) against torch.nn.functional.embedding_bag on the same GPU.

    python benchmarks/gpu_bench_embedding.py [--json out.json] [--repeats 20]

Each case first checks the CUDA results against the CPU twin (bit for bit) and
against torch (to float tolerance) and exits non-zero on a mismatch; then it
times both with CUDA events (warm-up, median of repeats). "metarec op" is the
public call (input validation included: one check kernel and one host
synchronisation per call, two for sparse); "kernel" calls the compiled launchers directly on prepared
tensors. Prints markdown table rows; --json writes the numbers.
Target (issue 7): embedding bag at least at torch's speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from gpu_timing import cuda_median_ms




def fail(msg):
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def run_case(name, n_bags, bag, num_rows, d, mode, weighted, repeats, check_cpu, dev):
    import torch
    import torch.nn.functional as F

    from metarec_fast import _gpu, ops
    gen = torch.Generator(device="cpu").manual_seed(0)
    table = torch.randn(num_rows, d, generator=gen).to(dev)
    ids = torch.randint(0, num_rows, (n_bags * bag,), generator=gen).to(dev)
    offsets = torch.arange(0, n_bags * bag, bag, dtype=torch.int64, device=dev)
    weights = torch.randn(n_bags * bag, generator=gen).to(dev) if weighted else None
    grad = torch.randn(n_bags, d, generator=gen).to(dev)

    # -- correctness first
    ours = ops.embedding_bag(table, ids, offsets, weights, mode)
    ref = F.embedding_bag(ids, table, offsets, mode=mode, per_sample_weights=weights)
    if not torch.allclose(ours, ref, rtol=1e-5, atol=1e-5):
        fail(f"{name}: forward differs from torch (max {float((ours - ref).abs().max())})")
    dense = ops.embedding_bag_backward(grad, ids, offsets, num_rows, weights, mode)
    t_req = table.detach().requires_grad_(True)
    out = F.embedding_bag(ids, t_req, offsets, mode=mode, per_sample_weights=weights)
    (tg,) = torch.autograd.grad(out, t_req, grad, retain_graph=True)  # timed again below
    if not torch.allclose(dense, tg, rtol=1e-4, atol=1e-5):
        fail(f"{name}: backward differs from torch (max {float((dense - tg).abs().max())})")
    rows, values = ops.embedding_bag_backward(grad, ids, offsets, num_rows, weights, mode, sparse=True)
    if not torch.equal(values, dense[rows]) or not torch.equal(rows, torch.unique(ids)):
        fail(f"{name}: sparse backward differs from the dense one")
    if check_cpu:
        cpu_args = (ids.cpu().numpy(), offsets.cpu().numpy())
        w_np = None if weights is None else weights.cpu().numpy()
        cpu_fwd = ops.embedding_bag(table.cpu().numpy(), *cpu_args, w_np, mode)
        if cpu_fwd.tobytes() != ours.cpu().numpy().tobytes():
            fail(f"{name}: forward is not bit-identical to the CPU kernel")
        cpu_bwd = ops.embedding_bag_backward(grad.cpu().numpy(), *cpu_args, num_rows, w_np, mode)
        if cpu_bwd.tobytes() != dense.cpu().numpy().tobytes():
            fail(f"{name}: backward is not bit-identical to the CPU kernel")
    again = ops.embedding_bag_backward(grad, ids, offsets, num_rows, weights, mode)
    if not torch.equal(again, dense):
        fail(f"{name}: backward is not deterministic")

    # -- timing
    mod = _gpu.cuda_module()
    stream = _gpu.stream_handle(dev)
    n_ids = ids.numel()
    out_buf = torch.empty(n_bags, d, device=dev)
    mean = mode == "mean"
    wp = _gpu.ptr(weights)

    def kernel_forward():
        mod.embedding_bag_forward_f32(table.data_ptr(), num_rows, d, ids.data_ptr(), n_ids,
                                      offsets.data_ptr(), n_bags, wp, mean, out_buf.data_ptr(),
                                      stream, dev.index)

    layout = mod.embedding_group_layout(n_ids)
    ws = torch.empty(layout["words"], dtype=torch.int64, device=dev)
    grad_buf = torch.empty(num_rows, d, device=dev)

    def kernel_backward():
        mod.embedding_group(ids.data_ptr(), n_ids, offsets.data_ptr(), n_bags, num_rows,
                            ws.data_ptr(), stream, dev.index)
        mod.embedding_bag_backward_f32(grad.data_ptr(), n_bags, d, offsets.data_ptr(), n_ids, wp,
                                       mean, ws.data_ptr(), n_ids, True, num_rows,
                                       grad_buf.data_ptr(), stream, dev.index)

    t_sparse = table.detach().requires_grad_(True)
    out_sparse = F.embedding_bag(ids, t_sparse, offsets, mode=mode, per_sample_weights=weights,
                                 sparse=True)
    rows_ = []
    timings = {
        "forward": (
            cuda_median_ms(lambda: ops.embedding_bag(table, ids, offsets, weights, mode), repeats),
            cuda_median_ms(kernel_forward, repeats),
            cuda_median_ms(lambda: F.embedding_bag(ids, table, offsets, mode=mode,
                                              per_sample_weights=weights), repeats),
        ),
        "backward dense": (
            cuda_median_ms(lambda: ops.embedding_bag_backward(grad, ids, offsets, num_rows, weights,
                                                         mode), repeats),
            cuda_median_ms(kernel_backward, repeats),
            cuda_median_ms(lambda: torch.autograd.grad(out, t_req, grad, retain_graph=True), repeats),
        ),
        "backward sparse": (
            cuda_median_ms(lambda: ops.embedding_bag_backward(grad, ids, offsets, num_rows, weights,
                                                         mode, sparse=True), repeats),
            None,  # (no separate kernel timing)
            cuda_median_ms(lambda: torch.autograd.grad(out_sparse, t_sparse, grad, retain_graph=True),
                      repeats),
        ),
    }
    for op, (ours_ms, kernel_ms, torch_ms) in timings.items():
        rows_.append(dict(case=name, op=op, n_bags=n_bags, bag=bag, num_rows=num_rows, d=d,
                          mode=mode, weighted=weighted, metarec_ms=ours_ms, kernel_ms=kernel_ms,
                          torch_ms=torch_ms, speedup_vs_torch=torch_ms / ours_ms))
    return rows_


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="only the two sum cases")
    args = parser.parse_args(argv)

    import torch

    from metarec_fast import _gpu

    if not _gpu.cuda_available() or not torch.cuda.is_available():
        print("gpu_bench_embedding: needs metarec-fast built with CUDA and a CUDA device",
              file=sys.stderr)
        return 2

    cases = [
        ("65536x20 of 1Mx64 sum", 65_536, 20, 1_000_000, 64, "sum", False, True),
        ("4096x20 of 1Mx64 sum", 4_096, 20, 1_000_000, 64, "sum", False, False),
    ]
    if not args.quick:
        cases += [
            ("65536x20 of 1Mx64 mean", 65_536, 20, 1_000_000, 64, "mean", False, False),
            ("65536x20 of 1Mx64 weighted", 65_536, 20, 1_000_000, 64, "sum", True, True),
            ("65536x20 of 1Mx128 sum", 65_536, 20, 1_000_000, 128, "sum", False, False),
        ]
    dev = torch.device("cuda", torch.cuda.current_device())
    t0 = time.perf_counter()
    results = []
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print("| case | op | metarec op ms | kernel ms | torch ms | torch / metarec |")
    print("|---|---|---:|---:|---:|---:|")
    for case in cases:
        for r in run_case(*case[:7], repeats=args.repeats, check_cpu=case[7], dev=dev):
            results.append(r)
            kernel = "-" if r["kernel_ms"] is None else f"{r['kernel_ms']:.3f}"
            print(f"| {r['case']} | {r['op']} | {r['metarec_ms']:.3f} | {kernel} | "
                  f"{r['torch_ms']:.3f} | {r['speedup_vs_torch']:.2f}x |", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
