"""CUDA embedding kernels against their CPU twins (bit for bit: both sum in
ascending position order with every multiply and add rounded on its own) and
the torch / numpy references of tests/test_embedding.py.

The GPU tests (marked ``cuda``) skip without a CUDA build and device. The rest
run everywhere:
* the dispatch errors (device strings, built without CUDA);
* the whole Python CUDA branch (input checks, workspace layout, sparse sizing)
  driven through an emulated ``_cuda`` module that reads and writes the
  tensors' memory through their addresses;
* the CUDA launchers and kernels themselves (cpp/cuda/embedding.cu) run on the
  host by the CUDA emulation in tests/cuda_emu, bit for bit against the CPU
  kernels and under AddressSanitizer: tests/test_cuda_emulated.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cuda_support import cuda_tests
from metarec_fast import _gpu, ops
from test_embedding import (
    SHAPES,
    bag_problem,
    make_bags,
    np_backward,
    np_embedding_bag,
    random_bag_sizes,
    torch_bag,
)

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}
MODES = [("sum", False), ("mean", False), ("sum", True)]
SEEDS = [0, 1, 2]

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def gpu(fn):
    """Marks a test ``cuda`` and skips it without a CUDA build and device."""
    for mark in cuda_tests:
        fn = mark(fn)
    return fn


def on_gpu(x):
    # np.array keeps 0-d ids 0-d (np.ascontiguousarray would make them 1-d)
    return None if x is None else torch.from_numpy(np.array(x)).cuda()


def host(x):
    return x.detach().cpu().numpy()



# ---------------------------------------------------------------------------
# GPU: gather


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3, 7, 64, 100, 130, 257])
@gpu
def test_cuda_gather_equals_cpu(dtype, d):
    rng = np.random.default_rng(d)
    table = rng.standard_normal((200, d)).astype(dtype)
    for shape in [(), (0,), (1,), (5,), (3, 4), (2, 0), (2, 3, 2), (10_000,)]:
        ids = rng.integers(0, 200, shape)
        out = ops.gather(on_gpu(table), on_gpu(ids))
        assert out.is_cuda and out.dtype == torch.from_numpy(table).dtype
        assert tuple(out.shape) == shape + (d,)
        np.testing.assert_array_equal(host(out), ops.gather(table, ids))
        np.testing.assert_array_equal(host(out), table[ids])


# ---------------------------------------------------------------------------
# GPU: embedding_bag forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-{len(s[2])}bags")
@gpu
def test_cuda_bag_forward_equals_cpu(dtype, mode, weighted, shape):
    num_rows, d, sizes = shape
    table, ids, offsets, weights, _ = bag_problem(num_rows * d, num_rows, d, sizes, dtype, weighted)
    cpu = ops.embedding_bag(table, ids, offsets, weights=weights, mode=mode)
    out = ops.embedding_bag(on_gpu(table), on_gpu(ids), on_gpu(offsets), on_gpu(weights), mode)
    assert out.is_cuda and tuple(out.shape) == (len(sizes), d)
    assert host(out).tobytes() == cpu.tobytes()  # bit-identical to the CPU kernel
    ref, _, _ = torch_bag(table, ids, offsets, weights, mode)
    np.testing.assert_allclose(host(out), ref.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(host(out), np_embedding_bag(table, ids, offsets, weights, mode), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", MODES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d", [1, 3, 8, 64, 100, 200])
@gpu
def test_cuda_bag_forward_random_equals_cpu_and_torch_cuda(dtype, mode, weighted, seed, d):
    rng = np.random.default_rng(seed)
    table, ids, offsets, weights, _ = bag_problem(seed, 3000, d, random_bag_sizes(rng, 700), dtype, weighted)
    cpu = ops.embedding_bag(table, ids, offsets, weights=weights, mode=mode)
    t, i, o, w = on_gpu(table), on_gpu(ids), on_gpu(offsets), on_gpu(weights)
    out = ops.embedding_bag(t, i, o, w, mode)
    assert host(out).tobytes() == cpu.tobytes()
    ref = F.embedding_bag(i, t, o, mode=mode, per_sample_weights=w)
    np.testing.assert_allclose(host(out), host(ref), **TOL[dtype])


@gpu
def test_cuda_bag_forward_one_bag_long_and_misaligned():
    rng = np.random.default_rng(4)
    for dtype in DTYPES:
        for d in (4, 64, 66):
            # a table whose first element is one element past a 16-byte boundary:
            # the kernels must fall back to narrower loads
            base = torch.randn(1000 * d + 1, dtype=TORCH_DTYPE[dtype]).cuda()
            table = base[1:].view(1000, d)
            ids = rng.integers(0, 1000, 5000)
            for offsets in ([0], [0, 0, 5000], [0, 1, 4999]):
                offs = np.array(offsets, np.int64)
                cpu = ops.embedding_bag(host(table), ids, offs)
                out = ops.embedding_bag(table, on_gpu(ids), on_gpu(offs))
                assert host(out).tobytes() == cpu.tobytes()


@gpu
def test_cuda_bag_2d_ids_empty_and_zero_width():
    rng = np.random.default_rng(3)
    table = rng.standard_normal((40, 6))
    ids = rng.integers(0, 40, (7, 4))
    w = rng.standard_normal((7, 4))
    for mode, weights in [("sum", None), ("mean", None), ("sum", w)]:
        out = ops.embedding_bag(on_gpu(table), on_gpu(ids), weights=on_gpu(weights), mode=mode)
        assert host(out).tobytes() == ops.embedding_bag(table, ids, weights=weights, mode=mode).tobytes()
    z = ops.embedding_bag(on_gpu(table), on_gpu(np.zeros((3, 0), np.int64)))
    assert z.is_cuda and host(z).tolist() == [[0.0] * 6] * 3
    e = ops.embedding_bag(on_gpu(table), on_gpu(np.zeros(0, np.int64)), on_gpu(np.zeros(0, np.int64)))
    assert tuple(e.shape) == (0, 6)
    e = ops.embedding_bag(np.ones((5, 3), np.float32), [], [0, 0], mode="mean", device="cuda")
    assert e.is_cuda and not host(e).any() and tuple(e.shape) == (2, 3)
    e = ops.embedding_bag(np.ones((3, 0)), [0, 1, 2], [0, 1], device="cuda")
    assert tuple(e.shape) == (2, 0)


# ---------------------------------------------------------------------------
# GPU: backward


def _cuda_backward(grad_out, ids, offsets, num_rows, weights, mode, sparse):
    return ops.embedding_bag_backward(
        on_gpu(grad_out), on_gpu(ids), on_gpu(offsets), num_rows, on_gpu(weights), mode, sparse
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-{len(s[2])}bags")
@gpu
def test_cuda_backward_equals_cpu(dtype, mode, weighted, shape):
    num_rows, d, sizes = shape
    table, ids, offsets, weights, grad_out = bag_problem(num_rows + d, num_rows, d, sizes, dtype, weighted)
    cpu_dense = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, mode)
    dense = _cuda_backward(grad_out, ids, offsets, num_rows, weights, mode, False)
    assert dense.is_cuda and tuple(dense.shape) == (num_rows, d)
    assert host(dense).tobytes() == cpu_dense.tobytes()
    np.testing.assert_allclose(host(dense), np_backward(grad_out, ids, offsets, num_rows, weights, mode), **TOL[dtype])
    out, t, w = torch_bag(table, ids, offsets, weights, mode, requires_grad=True)
    out.backward(torch.from_numpy(grad_out))
    np.testing.assert_allclose(host(dense), t.grad.numpy(), **TOL[dtype])

    rows, values = _cuda_backward(grad_out, ids, offsets, num_rows, weights, mode, True)
    cpu_rows, cpu_values = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, mode, sparse=True)
    assert rows.is_cuda and values.is_cuda and rows.dtype == torch.int64
    np.testing.assert_array_equal(host(rows), cpu_rows)
    assert host(values).tobytes() == cpu_values.tobytes()

    if weighted:
        wg = ops.embedding_bag_weight_grad(on_gpu(grad_out), on_gpu(table), on_gpu(ids), on_gpu(offsets))
        assert tuple(wg.shape) == ids.shape
        assert host(wg).tobytes() == ops.embedding_bag_weight_grad(grad_out, table, ids, offsets).tobytes()
        np.testing.assert_allclose(host(wg), w.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", MODES)
@pytest.mark.parametrize("seed", SEEDS)
@gpu
def test_cuda_backward_random_deterministic_and_equal_to_cpu(dtype, mode, weighted, seed):
    rng = np.random.default_rng(seed)
    d = [1, 40, 64, 100][seed % 4]
    # 200 rows for 700 bags: many repeats per row (long groups, unrolled path)
    table, ids, offsets, weights, grad_out = bag_problem(seed, 200, d, random_bag_sizes(rng, 700), dtype, weighted)
    runs = [host(_cuda_backward(grad_out, ids, offsets, 200, weights, mode, False)).tobytes() for _ in range(2)]
    assert runs[0] == runs[1]  # deterministic
    assert runs[0] == ops.embedding_bag_backward(grad_out, ids, offsets, 200, weights, mode).tobytes()
    sparse_runs = [_cuda_backward(grad_out, ids, offsets, 200, weights, mode, True) for _ in range(2)]
    assert host(sparse_runs[0][1]).tobytes() == host(sparse_runs[1][1]).tobytes()
    r, v = ops.embedding_bag_backward(grad_out, ids, offsets, 200, weights, mode, sparse=True)
    np.testing.assert_array_equal(host(sparse_runs[0][0]), r)
    assert host(sparse_runs[0][1]).tobytes() == v.tobytes()
    # torch's CUDA gradient, to tolerance
    t = on_gpu(table).requires_grad_(True)
    w = None if weights is None else on_gpu(weights).requires_grad_(True)
    F.embedding_bag(on_gpu(ids), t, on_gpu(offsets), mode=mode, per_sample_weights=w).backward(on_gpu(grad_out))
    np.testing.assert_allclose(np.frombuffer(runs[0], dtype).reshape(200, d), host(t.grad), **TOL[dtype])
    if weighted:
        wg = ops.embedding_bag_weight_grad(on_gpu(grad_out), on_gpu(table), on_gpu(ids), on_gpu(offsets))
        assert host(wg).tobytes() == ops.embedding_bag_weight_grad(grad_out, table, ids, offsets).tobytes()
        np.testing.assert_allclose(host(wg), host(w.grad), **TOL[dtype])


@gpu
def test_cuda_backward_hot_row_huge_table_and_empty():
    rng = np.random.default_rng(8)
    # one row looked up 20,000 times (one long sequential group)
    ids = np.zeros(20_000, np.int64)
    ids[::7] = 3
    offsets = np.arange(0, 20_000, 10, dtype=np.int64)
    grad_out = rng.standard_normal((len(offsets), 64)).astype(np.float32)
    for mode in ("sum", "mean"):
        cpu = ops.embedding_bag_backward(grad_out, ids, offsets, 5, mode=mode)
        assert host(_cuda_backward(grad_out, ids, offsets, 5, None, mode, False)).tobytes() == cpu.tobytes()
    # huge num_rows: all 30 key bits sorted, sparse result only
    ids_s, offs_s = make_bags(rng, 50, [3, 4, 0, 6])
    g = rng.standard_normal((4, 5))
    r_small, v_small = ops.embedding_bag_backward(g, ids_s, offs_s, 50, sparse=True)
    r_big, v_big = _cuda_backward(g, ids_s * 10**7, offs_s, 10**9, None, "sum", True)
    np.testing.assert_array_equal(host(r_big), r_small * 10**7)
    assert host(v_big).tobytes() == v_small.tobytes()
    # empty
    dense = ops.embedding_bag_backward(np.zeros((0, 3), np.float32), [], [], 4, device="cuda")
    assert dense.is_cuda and tuple(dense.shape) == (4, 3) and not host(dense).any()
    rows, values = ops.embedding_bag_backward(np.zeros((2, 3), np.float32), [], [0, 0], 4, sparse=True, device="cuda")
    assert tuple(rows.shape) == (0,) and tuple(values.shape) == (0, 3) and values.dtype == torch.float32
    rows, values = ops.embedding_bag_backward(torch.ones(2, 3).cuda(), torch.tensor([1, 1, 0]).cuda(),
                                              torch.tensor([0, 2]).cuda(), 4, sparse=True)
    assert host(rows).tolist() == [0, 1] and host(values).tolist() == [[1.0] * 3, [2.0] * 3]
    # zero width: rows still reported
    rows, values = ops.embedding_bag_backward(np.zeros((2, 0)), [1, 1, 0], [0, 2], 4, sparse=True, device="cuda")
    assert host(rows).tolist() == [0, 1] and tuple(values.shape) == (2, 0)


@gpu
def test_cuda_side_stream_and_device_kinds():
    rng = np.random.default_rng(2)
    table, ids, offsets, weights, grad_out = bag_problem(2, 500, 32, random_bag_sizes(rng, 100), np.float32, True)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = ops.embedding_bag(on_gpu(table), on_gpu(ids), on_gpu(offsets), on_gpu(weights))
        dense = _cuda_backward(grad_out, ids, offsets, 500, weights, "sum", False)
    s.synchronize()
    assert host(out).tobytes() == ops.embedding_bag(table, ids, offsets, weights).tobytes()
    assert host(dense).tobytes() == ops.embedding_bag_backward(grad_out, ids, offsets, 500, weights).tobytes()
    # numpy in with device="cuda" / "cuda:0": torch CUDA tensors out
    for dev in ("cuda", "cuda:0"):
        out = ops.embedding_bag(table, ids, offsets, device=dev)
        assert isinstance(out, torch.Tensor) and out.device == torch.device("cuda", 0)
        g = ops.gather(table, ids[:5], device=dev)
        assert g.is_cuda


# ---------------------------------------------------------------------------
# GPU: bad input (same exception types as the CPU path)


@gpu
def test_cuda_bad_inputs():
    # The input checks run on every device in tests/test_embedding.py (the
    # `device` fixture: test_bad_* and test_bad_inputs_as_tensors); here only
    # the device rules with real CUDA tensors.
    table = torch.ones((10, 4), device="cuda")
    ids = torch.tensor([1, 2, 3, 4], device="cuda")
    offsets = torch.tensor([0, 2], device="cuda")
    with pytest.raises(ValueError, match="is on the CPU"):
        ops.embedding_bag(table, ids.cpu(), offsets)
    with pytest.raises(ValueError, match="device='cpu'"):
        ops.embedding_bag(table, ids, offsets, device="cpu")


# ---------------------------------------------------------------------------
# Everywhere: dispatch rules


@pytest.fixture
def bag():
    table = np.ones((10, 4), np.float32)
    ids = np.array([1, 2, 3, 4], np.int64)
    offsets = np.array([0, 2], np.int64)
    return table, ids, offsets


def _all_ops(table, ids, offsets, **kw):
    g = np.ones((2, 4), np.float32)
    return [
        lambda: ops.gather(table, ids, **kw),
        lambda: ops.embedding_bag(table, ids, offsets, **kw),
        lambda: ops.embedding_bag_backward(g, ids, offsets, 10, **kw),
        lambda: ops.embedding_bag_backward(g, ids, offsets, 10, sparse=True, **kw),
        lambda: ops.embedding_bag_weight_grad(g, table, ids, offsets, **kw),
    ]


def test_device_cuda_without_cuda_build_raises(bag, monkeypatch):
    def no_cuda():
        raise RuntimeError(_gpu.BUILT_WITHOUT_CUDA)

    monkeypatch.setattr(_gpu, "cuda_module", no_cuda)
    for dev in ("cuda", "cuda:0"):
        for op in _all_ops(*bag, device=dev):
            with pytest.raises(RuntimeError, match="built without CUDA"):
                op()


@pytest.mark.xfail(
    _gpu.built_with_cuda() and not torch.backends.cuda.is_built(),
    reason="_gpu.resolve_device calls torch.cuda.current_device() before its device check, "
    "which raises AssertionError with a CPU-only torch",
    strict=False,
)
def test_device_cuda_without_a_device_raises(bag):
    if _gpu.cuda_available():
        pytest.skip("a CUDA device is present")
    for op in _all_ops(*bag, device="cuda"):
        with pytest.raises(RuntimeError, match="built without CUDA|no CUDA device"):
            op()


def test_device_cpu_and_none_take_the_cpu_path(bag):
    table, ids, offsets = bag
    t = torch.from_numpy(table)
    for tab in (table, t):
        for op_cpu, op_none in zip(_all_ops(tab, ids, offsets, device="cpu"), _all_ops(tab, ids, offsets)):
            a, b = op_cpu(), op_none()
            if isinstance(a, tuple):
                for x, y in zip(a, b):
                    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
            else:
                assert type(a) is type(b)
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_device_string(bag):
    for op in _all_ops(*bag, device="gpu"):
        with pytest.raises(ValueError, match="device must be None, 'cpu', 'cuda' or 'cuda:N'"):
            op()


# ---------------------------------------------------------------------------
# Everywhere: the Python CUDA branch end to end, through the real CUDA
# bindings, launchers and kernels compiled for the host emulation
# (tests/cuda_backends.py; CPU torch tensors stand in for device memory). The
# check kernels, the workspace layout and the sparse sizing are the real ones.


@pytest.fixture
def fake_cuda(emulated_cuda):
    return emulated_cuda


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-{len(s[2])}bags")
def test_python_cuda_branch_emulated(fake_cuda, dtype, mode, weighted, shape):
    num_rows, d, sizes = shape
    table, ids, offsets, weights, grad_out = bag_problem(num_rows * 3 + d, num_rows, d, sizes, dtype, weighted)
    T = torch.from_numpy
    tw = None if weights is None else T(weights)
    out = ops.embedding_bag(T(table), T(ids), T(offsets), tw, mode, device="cuda")
    assert isinstance(out, torch.Tensor)
    assert out.numpy().tobytes() == ops.embedding_bag(table, ids, offsets, weights, mode).tobytes()
    g = ops.gather(table, ids.reshape(-1, 1), device="cuda")
    np.testing.assert_array_equal(g.numpy(), table[ids.reshape(-1, 1)])
    dense = ops.embedding_bag_backward(T(grad_out), T(ids), T(offsets), num_rows, tw, mode, device="cuda")
    cpu_dense = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, mode)
    assert dense.numpy().tobytes() == cpu_dense.tobytes()
    rows, values = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, mode, sparse=True,
                                              device="cuda")
    r, v = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, mode, sparse=True)
    np.testing.assert_array_equal(rows.numpy(), r)
    assert values.numpy().tobytes() == v.tobytes()
    if weighted:
        wg = ops.embedding_bag_weight_grad(grad_out, table, ids, offsets, device="cuda")
        assert wg.numpy().tobytes() == ops.embedding_bag_weight_grad(grad_out, table, ids, offsets).tobytes()
    if len(ids):
        assert "group" in fake_cuda.calls and "forward" in fake_cuda.calls


def test_python_cuda_branch_emulated_2d_ids(fake_cuda):
    rng = np.random.default_rng(3)
    table = rng.standard_normal((40, 6))
    ids = rng.integers(0, 40, (7, 4))
    w = rng.standard_normal((7, 4))
    for mode, weights in [("sum", None), ("mean", None), ("sum", w)]:
        out = ops.embedding_bag(table, ids, weights=weights, mode=mode, device="cuda")
        assert out.numpy().tobytes() == ops.embedding_bag(table, ids, weights=weights, mode=mode).tobytes()
    g = rng.standard_normal((7, 6))
    wg = ops.embedding_bag_weight_grad(g, table, ids, device="cuda")
    assert wg.shape == (7, 4)
    np.testing.assert_array_equal(wg.numpy(), ops.embedding_bag_weight_grad(g, table, ids))
    assert ops.gather(table, 5, device="cuda").shape == (6,)
    # the checks and messages: on every device in tests/test_embedding.py (test_bad_*)


def test_emulated_backend_is_the_real_module(emulated_cuda_module):
    # The emulation runs the compiled bindings themselves (no stand-in whose
    # signatures could drift): the launchers of cpp/cuda/bindings/embedding.cpp
    # and the real workspace layout.
    real = emulated_cuda_module
    names = [n for n in dir(real) if n.startswith("embedding_") and n != "embedding_group_layout"]
    assert len(names) == 11  # 4 launchers x 2 dtypes, check, check_ids, group
    assert real.embedding_group_layout(5) == {
        **dict(words=7 * 5 + 2, sorted_rows=0, perm=5, rows=5 * 5, starts=6 * 5, n_unique=7 * 5 + 1), "words": 37}
