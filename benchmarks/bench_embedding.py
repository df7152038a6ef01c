"""Embedding kernels vs torch (pytest-benchmark). Not part of the test run.

    python -m pytest benchmarks/bench_embedding.py --benchmark-group-by=group
    python benchmarks/bench_embedding.py        # quick table: medians, ratios, GB/s

Every benchmark first asserts that its result equals the reference (torch, or
numpy where torch has no equivalent), then times it. Peers share a group named
after the kernel and shape. Threads: METAREC_BENCH_THREADS (default 2) for
metarec-fast and torch alike.

Bandwidth: ``GB/s`` in extra_info counts the bytes a kernel must move at least
(rows gathered + output written, ids/offsets read); ``copy_GBps`` is a
parallel memcpy of 256 MiB on the same threads (bytes read + written), the
practical ceiling for a streaming kernel. Random row gathers cannot reach it
(each 256-byte row is a separate DRAM access), so the ratio is a measure of
how well latency is hidden.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from metarec_fast import ops
from metarec_fast._bench import copy_bandwidth, time_calls

torch = pytest.importorskip("torch")
F = torch.nn.functional

THREADS = int(os.environ.get("METAREC_BENCH_THREADS", "2"))

# (name, num_rows, d, n_bags, bag_size)
SHAPES = {
    "target-1Mx64-65536x20": (1_000_000, 64, 65_536, 20),
    "small-100kx32-4096x10": (100_000, 32, 4_096, 10),
    "wide-200kx256-8192x30": (200_000, 256, 8_192, 30),
}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


_cache: dict = {}


def problem(shape: str, dtype=np.float32):
    key = (shape, dtype)
    if key not in _cache:
        num_rows, d, n_bags, size = SHAPES[shape]
        rng = np.random.default_rng(0)
        table = rng.standard_normal((num_rows, d), dtype=np.float32).astype(dtype, copy=False)
        ids = rng.integers(0, num_rows, n_bags * size, dtype=np.int64)
        offsets = np.arange(0, n_bags * size, size, dtype=np.int64)
        weights = rng.random(n_bags * size, dtype=np.float32).astype(dtype, copy=False)
        grad = rng.standard_normal((n_bags, d), dtype=np.float32).astype(dtype, copy=False)
        _cache.clear()  # keep one large problem in memory at a time
        _cache[key] = (table, ids, offsets, weights, grad)
    return _cache[key]


def bag_bytes(table, ids, n_bags):
    d, item = table.shape[1], table.dtype.itemsize
    return ids.size * (d * item + 8) + n_bags * (d * item + 8)


def add_bandwidth(benchmark, nbytes):
    median = benchmark.stats.stats.median
    benchmark.extra_info["GB/s"] = round(nbytes / median / 1e9, 2)
    benchmark.extra_info["threads"] = THREADS


# ---------------------------------------------------------------------------
# forward


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", ["metarec", "torch"])
@pytest.mark.parametrize("mode", ["sum", "mean", "weighted"])
def test_embedding_bag(benchmark, shape, impl, mode):
    table, ids, offsets, weights, _ = problem(shape)
    w = weights if mode == "weighted" else None
    m = "mean" if mode == "mean" else "sum"
    tt, ti, to = torch.from_numpy(table), torch.from_numpy(ids), torch.from_numpy(offsets)
    tw = None if w is None else torch.from_numpy(w)
    ref = F.embedding_bag(ti, tt, to, mode=m, per_sample_weights=tw).numpy()
    if impl == "metarec":
        fn = lambda: ops.embedding_bag(table, ids, offsets, w, m, num_threads=THREADS)  # noqa: E731
    else:
        fn = lambda: F.embedding_bag(ti, tt, to, mode=m, per_sample_weights=tw)  # noqa: E731
    got = np.asarray(fn())
    if mode == "sum":
        np.testing.assert_array_equal(got, ref)  # bit-identical float32 sums
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    benchmark.group = f"embedding_bag-{mode}-{shape}"
    benchmark.pedantic(fn, rounds=10, warmup_rounds=1)
    add_bandwidth(benchmark, bag_bytes(table, ids, len(offsets)))


@pytest.mark.parametrize("impl", ["metarec", "torch", "numpy"])
def test_gather(benchmark, impl):
    shape = "target-1Mx64-65536x20"
    table, ids, _, _, _ = problem(shape)
    ids = ids[: 1 << 18]
    tt, ti = torch.from_numpy(table), torch.from_numpy(ids)
    fns = {
        "metarec": lambda: ops.gather(table, ids, num_threads=THREADS),
        "torch": lambda: F.embedding(ti, tt),
        "numpy": lambda: np.take(table, ids, axis=0),
    }
    fn = fns[impl]
    np.testing.assert_array_equal(np.asarray(fn()), table[ids])
    benchmark.group = f"gather-{shape}-262144ids"
    benchmark.pedantic(fn, rounds=10, warmup_rounds=1)
    add_bandwidth(benchmark, ids.size * (table.shape[1] * 4 * 2 + 8))


# ---------------------------------------------------------------------------
# backward


@pytest.mark.parametrize("shape", ["target-1Mx64-65536x20", "small-100kx32-4096x10"])
@pytest.mark.parametrize("impl", ["metarec", "torch"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_embedding_bag_backward(benchmark, shape, impl, sparse):
    table, ids, offsets, _, grad = problem(shape)
    num_rows = table.shape[0]
    ti, to, tg = torch.from_numpy(ids), torch.from_numpy(offsets), torch.from_numpy(grad)

    def torch_setup():
        t = torch.from_numpy(table).requires_grad_(True)
        out = F.embedding_bag(ti, t, to, mode="sum", sparse=sparse)
        return (t, out), {}

    def torch_backward(t, out):
        out.backward(tg)
        return t.grad

    ours = lambda: ops.embedding_bag_backward(grad, ids, offsets, num_rows, sparse=sparse, num_threads=THREADS)  # noqa: E731
    # reference check first
    t_grad = torch_backward(*torch_setup()[0])
    got = ours()
    if sparse:
        g = t_grad.coalesce()
        np.testing.assert_array_equal(got[0], g.indices()[0].numpy())
        np.testing.assert_allclose(got[1], g.values().numpy(), rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(got, t_grad.numpy(), rtol=1e-5, atol=1e-5)
    del got, t_grad
    benchmark.group = f"embedding_bag_backward-{'sparse' if sparse else 'dense'}-{shape}"
    if impl == "metarec":
        benchmark.pedantic(ours, rounds=5, warmup_rounds=1)
    else:
        # times only the backward pass (coalesced for the sparse form, as ours is)
        if sparse:
            benchmark.pedantic(lambda t, out: torch_backward(t, out).coalesce(), setup=torch_setup, rounds=5)
        else:
            benchmark.pedantic(torch_backward, setup=torch_setup, rounds=5)


# ---------------------------------------------------------------------------
# sparse optimisers (numpy peer: no row-wise Adagrad in torch)


@pytest.mark.parametrize("impl", ["metarec", "numpy"])
@pytest.mark.parametrize("opt", ["sgd", "adagrad"])
def test_sparse_optimiser(benchmark, impl, opt):
    rng = np.random.default_rng(1)
    table0 = rng.standard_normal((1_000_000, 64), dtype=np.float32)
    rows = rng.integers(0, 1_000_000, 200_000)
    grads = rng.standard_normal((200_000, 64), dtype=np.float32)
    lr = np.float32(0.01)

    def numpy_step(t, s):
        uniq, inv = np.unique(rows, return_inverse=True)
        g = np.zeros((len(uniq), t.shape[1]), np.float32)
        np.add.at(g, inv, grads)
        if opt == "sgd":
            t[uniq] -= lr * g
        else:
            s[uniq] += np.mean(g * g, axis=1)
            t[uniq] -= lr * g / (np.sqrt(s[uniq])[:, None] + np.float32(1e-10))

    def ours_step(t, s):
        if opt == "sgd":
            ops.sparse_sgd_(t, rows, grads, lr, num_threads=THREADS)
        else:
            ops.sparse_adagrad_(t, s, rows, grads, lr, num_threads=THREADS)

    a, sa = table0.copy(), np.zeros(1_000_000, np.float32)
    b, sb = table0.copy(), np.zeros(1_000_000, np.float32)
    ours_step(a, sa)
    numpy_step(b, sb)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    del b, sb
    step = ours_step if impl == "metarec" else numpy_step
    benchmark.group = f"sparse_{opt}-1Mx64-200000rows"
    benchmark.pedantic(step, args=(a, sa), rounds=5, warmup_rounds=1)


# ---------------------------------------------------------------------------
# copy bandwidth (the ceiling GB/s figures are compared with)


@pytest.mark.parametrize("impl", ["metarec-memcpy", "numpy-copyto"])
def test_copy_bandwidth(benchmark, impl):
    from metarec_fast import _core

    src = np.ones(1 << 25, np.float64)  # 256 MiB
    dst = np.empty_like(src)
    threads = THREADS
    fn = (lambda: _core._parallel_copy(src, dst, threads)) if impl == "metarec-memcpy" else (lambda: np.copyto(dst, src))
    fn()
    assert np.array_equal(src[:: 1 << 16], dst[:: 1 << 16])
    benchmark.group = "copy-256MiB"
    benchmark.pedantic(fn, rounds=10, warmup_rounds=1)
    add_bandwidth(benchmark, 2 * src.nbytes)


# ---------------------------------------------------------------------------


def _median(fn, rounds=11):
    return time_calls(fn, rounds, np.median)


def main() -> None:
    """Quick summary for RESULTS.md: the issue's target shape, ours vs torch."""
    torch.set_num_threads(THREADS)
    par = copy_bandwidth(num_threads=THREADS)
    src = np.ones(1 << 25, np.float64)
    dst = np.empty_like(src)
    single = 2 * src.nbytes / _median(lambda: np.copyto(dst, src), rounds=5) / 1e9
    copy = max(par, single)
    print(
        f"threads={THREADS}  copy bandwidth (read + write): parallel memcpy {par:.1f} GB/s, "
        f"numpy copyto {single:.1f} GB/s; ratios below use {copy:.1f} GB/s"
    )
    for shape in SHAPES:
        table, ids, offsets, weights, _ = problem(shape)
        tt, ti, to = torch.from_numpy(table), torch.from_numpy(ids), torch.from_numpy(offsets)
        ours = _median(lambda: ops.embedding_bag(table, ids, offsets, num_threads=THREADS))
        ref = _median(lambda: F.embedding_bag(ti, tt, to, mode="sum"))
        gbs = bag_bytes(table, ids, len(offsets)) / ours / 1e9
        print(
            f"embedding_bag sum {shape:>24}: metarec {ours * 1e3:7.2f} ms  torch {ref * 1e3:7.2f} ms  "
            f"speed-up {ref / ours:4.2f}x  {gbs:5.1f} GB/s = {gbs / copy:4.0%} of memcpy"
        )


if __name__ == "__main__":
    main()
