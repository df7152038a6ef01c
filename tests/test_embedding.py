"""Embedding kernels against torch / numpy references: gather, embedding_bag,
its backward (dense and sparse) and weight gradient, sparse SGD / row-wise
Adagrad; thread-count independence; hypothesis properties; every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fuzzing import examples

from metarec_fast import _core, ops

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


# ---------------------------------------------------------------------------
# References


def make_bags(rng, num_rows, sizes):
    sizes = np.asarray(sizes, dtype=np.int64)
    ids = rng.integers(0, num_rows, int(sizes.sum())) if num_rows else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else np.zeros(0, np.int64)
    return ids.astype(np.int64), offsets


def bag_problem(seed, num_rows, d, sizes, dtype, weighted):
    """A random table, bags of the given sizes, optional weights and an output gradient."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((num_rows, d)).astype(dtype)
    ids, offsets = make_bags(rng, num_rows, sizes)
    weights = rng.standard_normal(len(ids)).astype(dtype) if weighted else None
    grad_out = rng.standard_normal((len(sizes), d)).astype(dtype)
    return table, ids, offsets, weights, grad_out


def random_bag_sizes(rng, n_bags, max_size=30):
    """Bag sizes in [0, max_size), about a tenth of them empty."""
    sizes = rng.integers(0, max_size, n_bags)
    sizes[rng.random(n_bags) < 0.1] = 0
    return sizes


def bag_bounds(offsets, n_ids):
    ends = np.append(offsets[1:], n_ids) if len(offsets) else offsets
    return list(zip(offsets.tolist(), ends.tolist()))


def np_embedding_bag(table, ids, offsets, weights=None, mode="sum"):
    """Sequential float sum per bag, in the table's dtype."""
    d = table.shape[1]
    out = np.zeros((len(offsets), d), dtype=table.dtype)
    for b, (s, e) in enumerate(bag_bounds(offsets, len(ids))):
        acc = np.zeros(d, dtype=table.dtype)
        for j in range(s, e):
            row = table[ids[j]] if weights is None else weights[j] * table[ids[j]]
            acc = acc + row
        if mode == "mean" and e > s:
            acc = acc * (table.dtype.type(1) / table.dtype.type(e - s))
        out[b] = acc
    return out


def np_backward(grad_out, ids, offsets, num_rows, weights=None, mode="sum"):
    grad = np.zeros((num_rows, grad_out.shape[1]), dtype=np.float64)
    for b, (s, e) in enumerate(bag_bounds(offsets, len(ids))):
        for j in range(s, e):
            c = 1.0 if weights is None else float(weights[j])
            if mode == "mean":
                c = 1.0 / (e - s)
            grad[ids[j]] += c * grad_out[b].astype(np.float64)
    return grad


def torch_bag(table, ids, offsets, weights=None, mode="sum", sparse=False, requires_grad=False):
    t = torch.from_numpy(table.copy()).requires_grad_(requires_grad)
    w = None if weights is None else torch.from_numpy(weights.copy()).requires_grad_(requires_grad)
    out = F.embedding_bag(
        torch.from_numpy(ids), t, torch.from_numpy(offsets), mode=mode, per_sample_weights=w, sparse=sparse
    )
    return out, t, w


SHAPES = [
    # (num_rows, d, bag sizes)
    (50, 1, [3, 0, 5, 1]),
    (50, 3, [2, 2, 0, 0, 7]),
    (100, 16, [4] * 10),
    (100, 64, [20] * 9 + [0]),
    (300, 100, [1, 5, 0, 17, 3]),  # 64 + 32 + 4 columns for float32
    (30, 8, [6]),  # single bag
    (10, 5, [0, 0, 0]),  # empty ids, empty bags
]


# ---------------------------------------------------------------------------
# gather


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 7, 64, 130])
def test_gather_matches_numpy(dtype, d):
    rng = np.random.default_rng(d)
    table = rng.standard_normal((200, d)).astype(dtype)
    for shape in [(), (0,), (5,), (3, 4), (2, 0), (2, 3, 2)]:
        ids = rng.integers(0, 200, shape)
        out = ops.gather(table, ids)
        assert out.dtype == dtype and out.shape == shape + (d,)
        np.testing.assert_array_equal(out, table[ids])


@pytest.mark.parametrize("ids_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32])
def test_gather_any_integer_ids(ids_dtype):
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    ids = np.array([9, 0, 3], dtype=ids_dtype)
    np.testing.assert_array_equal(ops.gather(table, ids), table[[9, 0, 3]])


def test_gather_threads_bit_identical():
    rng = np.random.default_rng(1)
    table = rng.standard_normal((1000, 33)).astype(np.float32)
    ids = rng.integers(0, 1000, 10_000)
    a = ops.gather(table, ids, num_threads=1)
    b = ops.gather(table, ids, num_threads=2)
    assert a.tobytes() == b.tobytes()


def test_gather_torch_in_torch_out():
    table = torch.randn(10, 4, dtype=torch.float64)
    ids = torch.tensor([[1, 2], [9, 0]])
    out = ops.gather(table, ids)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, F.embedding(ids, table))


# ---------------------------------------------------------------------------
# embedding_bag forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", [("sum", False), ("mean", False), ("sum", True)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-{len(s[2])}bags")
def test_embedding_bag_matches_torch(dtype, mode, weighted, shape):
    num_rows, d, sizes = shape
    rng = np.random.default_rng(num_rows * d)
    table = rng.standard_normal((num_rows, d)).astype(dtype)
    ids, offsets = make_bags(rng, num_rows, sizes)
    weights = rng.standard_normal(len(ids)).astype(dtype) if weighted else None
    ours = ops.embedding_bag(table, ids, offsets, weights=weights, mode=mode)
    assert ours.dtype == dtype and ours.shape == (len(sizes), d)
    ref, _, _ = torch_bag(table, ids, offsets, weights, mode)
    np.testing.assert_allclose(ours, ref.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(ours, np_embedding_bag(table, ids, offsets, weights, mode), **TOL[dtype])


def test_embedding_bag_sum_float32_bitwise_equal_to_torch():
    # Same left-to-right float32 sum per column as torch/FBGEMM.
    rng = np.random.default_rng(7)
    for d in (64, 100):
        table = rng.standard_normal((5000, d)).astype(np.float32)
        ids, offsets = make_bags(rng, 5000, rng.integers(0, 30, 500))
        ours = ops.embedding_bag(table, ids, offsets)
        ref, _, _ = torch_bag(table, ids, offsets)
        np.testing.assert_array_equal(ours, ref.numpy())


def test_embedding_bag_2d_ids_without_offsets():
    rng = np.random.default_rng(3)
    table = rng.standard_normal((40, 6))
    ids = rng.integers(0, 40, (7, 4))
    w = rng.standard_normal((7, 4))
    for mode, weights in [("sum", None), ("mean", None), ("sum", w)]:
        ours = ops.embedding_bag(table, ids, weights=weights, mode=mode)
        ref = F.embedding_bag(
            torch.from_numpy(ids), torch.from_numpy(table), mode=mode,
            per_sample_weights=None if weights is None else torch.from_numpy(weights),
        )
        np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-12)
    assert ops.embedding_bag(table, np.zeros((3, 0), np.int64)).tolist() == [[0.0] * 6] * 3


def test_embedding_bag_empty_inputs():
    table = np.ones((5, 3), np.float32)
    out = ops.embedding_bag(table, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert out.shape == (0, 3) and out.dtype == np.float32
    out = ops.embedding_bag(table, [], [0, 0], mode="mean")
    np.testing.assert_array_equal(out, np.zeros((2, 3), np.float32))
    out = ops.embedding_bag(np.zeros((0, 4)), [], [0])
    assert out.shape == (1, 4) and not out.any()
    out = ops.embedding_bag(np.ones((3, 0)), [0, 1, 2], [0, 1])
    assert out.shape == (2, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", [("sum", False), ("mean", False), ("sum", True)])
def test_embedding_bag_threads_bit_identical(dtype, mode, weighted):
    rng = np.random.default_rng(11)
    table = rng.standard_normal((2000, 72)).astype(dtype)
    ids, offsets = make_bags(rng, 2000, rng.integers(0, 40, 3000))
    weights = rng.standard_normal(len(ids)).astype(dtype) if weighted else None
    a = ops.embedding_bag(table, ids, offsets, weights, mode, num_threads=1)
    b = ops.embedding_bag(table, ids, offsets, weights, mode, num_threads=2)
    c = ops.embedding_bag(table, ids, offsets, weights, mode, num_threads=-1)
    assert a.tobytes() == b.tobytes() == c.tobytes()


def test_embedding_bag_torch_in_torch_out():
    table = torch.randn(20, 5)
    ids = torch.tensor([1, 2, 3, 19])
    offsets = torch.tensor([0, 3])
    out = ops.embedding_bag(table, ids, offsets, mode="mean")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, F.embedding_bag(ids, table, offsets, mode="mean"))


# ---------------------------------------------------------------------------
# backward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", [("sum", False), ("mean", False), ("sum", True)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-{len(s[2])}bags")
def test_backward_matches_torch_autograd(dtype, mode, weighted, shape):
    num_rows, d, sizes = shape
    rng = np.random.default_rng(num_rows + d)
    table = rng.standard_normal((num_rows, d)).astype(dtype)
    ids, offsets = make_bags(rng, num_rows, sizes)
    weights = rng.standard_normal(len(ids)).astype(dtype) if weighted else None
    grad_out = rng.standard_normal((len(sizes), d)).astype(dtype)

    out, t, w = torch_bag(table, ids, offsets, weights, mode, requires_grad=True)
    out.backward(torch.from_numpy(grad_out))
    dense = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, mode)
    assert dense.dtype == dtype and dense.shape == (num_rows, d)
    np.testing.assert_allclose(dense, t.grad.numpy(), **TOL[dtype])
    np.testing.assert_allclose(dense, np_backward(grad_out, ids, offsets, num_rows, weights, mode), **TOL[dtype])

    rows, values = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, mode, sparse=True)
    assert rows.dtype == np.int64 and values.dtype == dtype
    np.testing.assert_array_equal(rows, np.unique(ids))
    assert values.shape == (len(rows), d)
    np.testing.assert_array_equal(values, dense[rows])

    # torch's sparse gradient, coalesced (sorted unique ids)
    out_s, t_s, _ = torch_bag(table, ids, offsets, weights, mode, sparse=True, requires_grad=True)
    out_s.backward(torch.from_numpy(grad_out))
    if len(ids):
        g = t_s.grad.coalesce()
        np.testing.assert_array_equal(rows, g.indices()[0].numpy())
        np.testing.assert_allclose(values, g.values().numpy(), **TOL[dtype])

    if weighted:
        wg = ops.embedding_bag_weight_grad(grad_out, table, ids, offsets)
        assert wg.shape == ids.shape and wg.dtype == dtype
        np.testing.assert_allclose(wg, w.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_threads_bit_identical(dtype):
    rng = np.random.default_rng(5)
    d, n_bags = 40, 2500
    ids, offsets = make_bags(rng, 1000, rng.integers(0, 12, n_bags))  # many repeats
    grad_out = rng.standard_normal((n_bags, d)).astype(dtype)
    weights = rng.standard_normal(len(ids)).astype(dtype)
    for mode, w in [("sum", None), ("mean", None), ("sum", weights)]:
        results = []
        # 1000 rows: counting-sort grouping; 10**7 rows: (id, position) sort grouping
        for num_rows, scale in [(1000, 1), (10**7, 9973)]:
            for threads in (1, 2):
                r, v = ops.embedding_bag_backward(
                    grad_out, ids * scale, offsets, num_rows, w, mode, sparse=True, num_threads=threads
                )
                results.append((r // scale, v.tobytes()))
        for r, v in results[1:]:
            np.testing.assert_array_equal(r, results[0][0])
            assert v == results[0][1]
        dense = [
            ops.embedding_bag_backward(grad_out, ids, offsets, 1000, w, mode, num_threads=t).tobytes()
            for t in (1, 2)
        ]
        assert dense[0] == dense[1]


def test_backward_sparse_huge_table_matches_dense_small():
    # The pair-sort grouping (few ids, huge num_rows) equals the counting sort.
    rng = np.random.default_rng(9)
    ids, offsets = make_bags(rng, 50, [3, 4, 0, 6])
    grad_out = rng.standard_normal((4, 5))
    r_small, v_small = ops.embedding_bag_backward(grad_out, ids, offsets, 50, sparse=True)
    r_big, v_big = ops.embedding_bag_backward(grad_out, ids * 10**6, offsets, 10**9, sparse=True)
    np.testing.assert_array_equal(r_big, r_small * 10**6)
    assert v_big.tobytes() == v_small.tobytes()


def test_backward_empty_and_torch_kinds():
    g = np.zeros((0, 3), np.float32)
    dense = ops.embedding_bag_backward(g, [], [], 4)
    assert dense.shape == (4, 3) and not dense.any()
    rows, values = ops.embedding_bag_backward(g, [], [], 4, sparse=True)
    assert rows.shape == (0,) and values.shape == (0, 3) and values.dtype == np.float32
    rows, values = ops.embedding_bag_backward(torch.ones(2, 3), torch.tensor([1, 1, 0]), torch.tensor([0, 2]), 4, sparse=True)
    assert isinstance(rows, torch.Tensor) and isinstance(values, torch.Tensor)
    assert rows.tolist() == [0, 1] and values.tolist() == [[1.0] * 3, [2.0] * 3]


# ---------------------------------------------------------------------------
# sparse optimisers


def np_sgd(table, rows, grads, lr):
    t = table.copy()
    summed = {}
    for j, r in enumerate(rows):
        summed[r] = summed[r] + grads[j] if r in summed else grads[j].copy()
    for r, g in summed.items():
        t[r] = t[r] - t.dtype.type(lr) * g
    return t


def np_adagrad(table, state, rows, grads, lr, eps):
    t, s = table.copy(), state.copy()
    summed = {}
    for j, r in enumerate(rows):
        summed[r] = summed[r] + grads[j] if r in summed else grads[j].copy()
    for r, g in summed.items():
        s[r] += np.mean(g.astype(np.float64) ** 2)
        t[r] -= lr * g / (np.sqrt(s[r]) + eps)
    return t, s


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", [1, 2])
def test_sparse_sgd_matches_numpy(dtype, num_threads):
    rng = np.random.default_rng(2)
    table = rng.standard_normal((300, 9)).astype(dtype)
    rows = rng.integers(0, 300, 800)  # many duplicates
    grads = rng.standard_normal((800, 9)).astype(dtype)
    ref = np_sgd(table, rows, grads, 0.05)
    t = table.copy()
    out = ops.sparse_sgd_(t, rows, grads, 0.05, num_threads=num_threads)
    assert out is t
    np.testing.assert_allclose(t, ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", [1, 2])
def test_sparse_adagrad_matches_numpy(dtype, num_threads):
    rng = np.random.default_rng(4)
    table = rng.standard_normal((300, 9)).astype(dtype)
    state = rng.random(300).astype(dtype)
    rows = np.concatenate([rng.integers(0, 300, 600), [7, 7, 7]])
    grads = rng.standard_normal((len(rows), 9)).astype(dtype)
    t, s = table.copy(), state.copy()
    for _ in range(3):  # state accumulates over steps
        ops.sparse_adagrad_(t, s, rows, grads, 0.1, eps=1e-8, num_threads=num_threads)
    rt, rs = table, state
    for _ in range(3):
        rt, rs = np_adagrad(rt, rs, rows, grads, 0.1, 1e-8)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s, rs, **tol)
    np.testing.assert_allclose(t, rt, **tol)


def test_optimisers_threads_bit_identical_and_duplicates_summed():
    rng = np.random.default_rng(6)
    table = rng.standard_normal((5000, 16)).astype(np.float32)
    rows = rng.integers(0, 5000, 20000)
    grads = rng.standard_normal((20000, 16)).astype(np.float32)
    res = []
    for threads in (1, 2):
        t, s = table.copy(), np.zeros(5000, np.float32)
        ops.sparse_adagrad_(t, s, rows, grads, 0.01, num_threads=threads)
        ops.sparse_sgd_(t, rows, grads, 0.01, num_threads=threads)
        res.append((t.tobytes(), s.tobytes()))
    assert res[0] == res[1]
    # a duplicated row is one step on the summed gradient
    t = np.zeros((2, 2))
    ops.sparse_sgd_(t, [1, 1], np.array([[1.0, 2.0], [3.0, 4.0]]), 1.0)
    assert t.tolist() == [[0, 0], [-4.0, -6.0]]
    t, s = np.zeros((2, 2)), np.zeros(2)
    ops.sparse_adagrad_(t, s, [1, 1], np.array([[1.0, 1.0], [2.0, 2.0]]), 1.0, eps=0.0)
    assert s.tolist() == [0.0, 9.0] and t.tolist() == [[0, 0], [-1.0, -1.0]]


def test_finite_check_survives_overflowing_sums():
    # huge but finite gradients/weights: their sum overflows, the check must not fire
    t = np.zeros((2, 2), np.float32)
    big = np.full((2, 2), 3e38, np.float32)
    ops.sparse_sgd_(t, [0, 1], big, 1e-38)
    assert np.isfinite(t).all()
    w = np.array([3e38, 3e38], np.float32)
    out = ops.embedding_bag(np.ones((1, 1), np.float32), [0, 0], [0], weights=w)
    assert np.isinf(out).all()  # the overflow itself is the caller's business


def test_optimisers_update_torch_tensors_in_place_and_empty():
    t = torch.zeros(4, 3)
    s = torch.zeros(4)
    out = ops.sparse_sgd_(t, torch.tensor([2]), torch.ones(1, 3), 0.5)
    assert out is t and t[2].tolist() == [-0.5] * 3
    ops.sparse_adagrad_(t, s, torch.tensor([0]), torch.ones(1, 3), 1.0)
    assert s[0].item() == 1.0
    before = t.clone()
    ops.sparse_sgd_(t, [], np.zeros((0, 3), np.float32), 1.0)
    ops.sparse_adagrad_(t, s, [], np.zeros((0, 3), np.float32), 1.0)
    assert torch.equal(t, before)


# ---------------------------------------------------------------------------
# hypothesis properties


@st.composite
def bag_problems(draw):
    num_rows = draw(st.integers(1, 30))
    d = draw(st.integers(1, 20))
    sizes = draw(st.lists(st.integers(0, 6), min_size=0, max_size=12))
    n = sum(sizes)
    ids = np.array(draw(st.lists(st.integers(0, num_rows - 1), min_size=n, max_size=n)), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, np.int64)
    seed = draw(st.integers(0, 2**32 - 1))
    mode = draw(st.sampled_from(["sum", "mean", "weighted"]))
    return num_rows, d, ids, offsets, seed, mode


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bag_problems())
def test_property_forward_backward(problem):
    num_rows, d, ids, offsets, seed, mode = problem
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((num_rows, d))
    grad_out = rng.standard_normal((len(offsets), d))
    weights = rng.standard_normal(len(ids)) if mode == "weighted" else None
    m = "mean" if mode == "mean" else "sum"
    out = ops.embedding_bag(table, ids, offsets, weights, m)
    np.testing.assert_allclose(out, np_embedding_bag(table, ids, offsets, weights, m), rtol=1e-12, atol=1e-12)
    dense = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, m)
    np.testing.assert_allclose(dense, np_backward(grad_out, ids, offsets, num_rows, weights, m), rtol=1e-12, atol=1e-12)
    rows, values = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, m, sparse=True)
    np.testing.assert_array_equal(rows, np.unique(ids))
    np.testing.assert_array_equal(values, dense[rows])
    # adjoint identity: <grad_out, bag(table)> == <backward(grad_out), table>
    lhs = float(np.sum(grad_out * out))
    rhs = float(np.sum(dense * table))
    assert abs(lhs - rhs) <= 1e-9 * (1 + abs(lhs))


@settings(max_examples=examples(40), deadline=None)
@given(
    st.integers(1, 20),
    st.lists(st.integers(0, 19), max_size=30),
    st.integers(0, 2**32 - 1),
)
def test_property_sgd(num_rows, rows, seed):
    rows = [r % num_rows for r in rows]
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((num_rows, 3))
    grads = rng.standard_normal((len(rows), 3))
    t = table.copy()
    ops.sparse_sgd_(t, np.array(rows, dtype=np.int64), grads, 0.3)
    np.testing.assert_allclose(t, np_sgd(table, rows, grads, 0.3), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# bad input: every case on every device (conftest.py's `device`: the CPU, the
# real CUDA kernels under the host emulation, a GPU when present), same messages


@pytest.fixture
def bag():
    table = np.ones((10, 4), np.float32)
    ids = np.array([1, 2, 3, 4], np.int64)
    offsets = np.array([0, 2], np.int64)
    return table, ids, offsets


def test_bad_dtypes(bag, device):
    table, ids, offsets = bag
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        ops.embedding_bag(table.astype(np.int64), ids, offsets, device=device)
    with pytest.raises(TypeError, match="ids must have an integer dtype, got float64"):
        ops.embedding_bag(table, ids.astype(np.float64), offsets, device=device)
    with pytest.raises(TypeError, match="offsets must have an integer dtype"):
        ops.embedding_bag(table, ids, offsets.astype(np.float32), device=device)
    with pytest.raises(TypeError, match="weights must have dtype float32"):
        ops.embedding_bag(table, ids, offsets, weights=np.ones(4, np.float64), device=device)
    with pytest.raises(TypeError, match="ids must have an integer dtype, got bool"):
        ops.gather(table, np.array([True, False]), device=device)
    with pytest.raises(TypeError, match="grad_out must have dtype float32"):
        ops.embedding_bag_weight_grad(np.ones((2, 4)), table, ids, offsets, device=device)
    with pytest.raises(TypeError, match="num_rows must be an int"):
        ops.embedding_bag_backward(np.ones((2, 4)), ids, offsets, 10.0, device=device)


def test_bad_ids_name_first_bad_id(bag, device):
    table, ids, offsets = bag
    with pytest.raises(IndexError, match=r"ids contains id 10, outside \[0, 10\)"):
        ops.embedding_bag(table, [1, 10, -1, 99], offsets, device=device)
    with pytest.raises(IndexError, match=r"ids contains id -1, outside \[0, 10\)"):
        ops.embedding_bag(table, [1, 2, -1, 99], offsets, device=device)
    with pytest.raises(IndexError, match="ids contains id 12"):
        ops.gather(table, [[0, 12], [13, 1]], device=device)
    # the first bad id even when a later chunk (another thread) fails first
    big = np.zeros(200_000, np.int64)
    big[150_000], big[190_000] = 77, 55
    with pytest.raises(IndexError, match="ids contains id 77,"):
        ops.embedding_bag(table, big, np.arange(0, 200_000, 10), num_threads=2, device=device)
    with pytest.raises(IndexError, match="ids contains id 77,"):
        ops.gather(table, big, num_threads=2, device=device)
    with pytest.raises(IndexError, match=r"ids contains id 5, outside \[0, 5\)"):
        ops.embedding_bag_backward(np.ones((2, 4), np.float32), [0, 5, 1, 1], offsets, 5, device=device)
    with pytest.raises(IndexError, match=r"ids contains id 10"):
        ops.embedding_bag_weight_grad(np.ones((2, 4), np.float32), table, [0, 10, 1, 1], offsets, device=device)
    if device == "cpu":  # the sparse optimisers run on the CPU only
        with pytest.raises(IndexError, match=r"rows contains id 10, outside \[0, 10\)"):
            ops.sparse_sgd_(table.copy(), [3, 10], np.ones((2, 4), np.float32), 0.1)


def test_bad_offsets(bag, device):
    table, ids, _ = bag
    with pytest.raises(ValueError, match=r"offsets must start at 0, got offsets\[0\] = 1"):
        ops.embedding_bag(table, ids, [1, 2], device=device)
    with pytest.raises(ValueError, match=r"non-decreasing, got offsets\[2\] = 1 < offsets\[1\] = 3"):
        ops.embedding_bag(table, ids, [0, 3, 1], device=device)
    with pytest.raises(ValueError, match=r"offsets\[1\] = 5 is beyond len\(ids\) = 4"):
        ops.embedding_bag(table, ids, [0, 5], device=device)
    with pytest.raises(ValueError, match="offsets is empty but ids has 4 entries"):
        ops.embedding_bag(table, ids, [], device=device)
    with pytest.raises(ValueError, match="offsets must be 1-d"):
        ops.embedding_bag(table, ids, [[0, 2]], device=device)
    with pytest.raises(ValueError, match="ids must be 1-d"):
        ops.embedding_bag(table, [[1, 2]], [0], device=device)
    with pytest.raises(ValueError, match="ids must be 2-d"):
        ops.embedding_bag(table, ids, device=device)
    with pytest.raises(ValueError, match="offsets must start at 0"):
        ops.embedding_bag_backward(np.ones((2, 4), np.float32), ids, [2, 3], 10, device=device)


def test_bad_values_and_shapes(bag, device):
    table, ids, offsets = bag
    with pytest.raises(ValueError, match="mode must be 'sum' or 'mean', got 'max'"):
        ops.embedding_bag(table, ids, offsets, mode="max", device=device)
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        ops.embedding_bag(table, ids, offsets, weights=np.ones(4, np.float32), mode="mean", device=device)
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        ops.embedding_bag_backward(np.ones((2, 4), np.float32), ids, offsets, 10, np.ones(4, np.float32), "mean", device=device)
    w = np.ones(4, np.float32)
    w[2] = np.nan
    with pytest.raises(ValueError, match="weights contains NaN or inf at index 2"):
        ops.embedding_bag(table, ids, offsets, weights=w, device=device)
    with pytest.raises(ValueError, match=r"weights must have the shape of ids \(4,\), got \(3,\)"):
        ops.embedding_bag(table, ids, offsets, weights=np.ones(3, np.float32), device=device)
    with pytest.raises(ValueError, match="table must be 2-d"):
        ops.embedding_bag(np.ones(10, np.float32), ids, offsets, device=device)
    with pytest.raises(ValueError, match="grad_out has 3 rows but there are 2 bags"):
        ops.embedding_bag_backward(np.ones((3, 4), np.float32), ids, offsets, 10, device=device)
    with pytest.raises(ValueError, match="num_rows must be non-negative, got -1"):
        ops.embedding_bag_backward(np.ones((2, 4), np.float32), ids, offsets, -1, device=device)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 4\)"):
        ops.embedding_bag_weight_grad(np.ones((2, 3), np.float32), table, ids, offsets, device=device)
    with pytest.raises(ValueError, match="num_threads must be None, -1 or a positive integer, got 0"):
        ops.embedding_bag(table, ids, offsets, num_threads=0, device=device)


def test_bad_inputs_as_tensors(device):
    # The same cases with torch tensors (read without numpy on a device), on
    # every device: were test_cuda_bad_inputs (GPU) and the emulated list.
    dev = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"

    def T(x, dtype=None):  # noqa: N802
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=dev)

    table, ids, offsets, g = T(np.ones((10, 4), np.float32)), T([1, 2, 3, 4]), T([0, 2]), T(np.ones((2, 4), np.float32))
    kw = dict(device=device)
    with pytest.raises(IndexError, match=r"ids contains id 10, outside \[0, 10\)"):
        ops.embedding_bag(table, T([1, 10, -1, 99]), offsets, **kw)
    with pytest.raises(IndexError, match=r"ids contains id -1, outside \[0, 10\)"):
        ops.gather(table, T([[1, 2], [-1, 99]]), **kw)
    with pytest.raises(IndexError, match=r"ids contains id 12, outside \[0, 10\)"):
        ops.gather(table, T([[0, 12], [13, 1]]), **kw)
    with pytest.raises(IndexError, match=r"ids contains id 5, outside \[0, 5\)"):
        ops.embedding_bag_backward(g, T([0, 5, 1, 1]), offsets, 5, **kw)
    with pytest.raises(IndexError, match="ids contains id 10"):
        ops.embedding_bag_weight_grad(g, table, T([0, 10, 1, 1]), offsets, **kw)
    with pytest.raises(ValueError, match=r"offsets must start at 0, got offsets\[0\] = 1"):
        ops.embedding_bag(table, ids, T([1, 2]), **kw)
    with pytest.raises(ValueError, match=r"non-decreasing, got offsets\[2\] = 1 < offsets\[1\] = 3"):
        ops.embedding_bag(table, ids, T([0, 3, 1]), **kw)
    with pytest.raises(ValueError, match=r"offsets\[1\] = 5 is beyond len\(ids\) = 4"):
        ops.embedding_bag(table, ids, T([0, 5]), **kw)
    with pytest.raises(ValueError, match="offsets is empty but ids has 4 entries"):
        ops.embedding_bag(table, ids, T(np.zeros(0, np.int64)), **kw)
    with pytest.raises(ValueError, match="ids must be 1-d"):
        ops.embedding_bag(table, T([[1, 2]]), T([0]), **kw)
    with pytest.raises(ValueError, match="ids must be 2-d"):
        ops.embedding_bag(table, ids, **kw)
    with pytest.raises(TypeError, match="ids must have an integer dtype, got float32"):
        ops.embedding_bag(table, ids.float(), offsets, **kw)
    with pytest.raises(TypeError, match="ids must have an integer dtype, got bool"):
        ops.gather(table, T([True, False]), **kw)
    with pytest.raises(TypeError, match=r"weights must have dtype float32 \(the table's dtype\), got float64"):
        ops.embedding_bag(table, ids, offsets, weights=T(np.ones(4)), **kw)
    w = T(np.ones(4, np.float32))
    w[2] = float("nan")
    with pytest.raises(ValueError, match="weights contains NaN or inf"):
        ops.embedding_bag(table, ids, offsets, weights=w, **kw)
    w[2] = float("inf")
    with pytest.raises(ValueError, match="weights contains NaN or inf"):
        ops.embedding_bag(table, ids, offsets, weights=w, **kw)
    with pytest.raises(ValueError, match=r"weights must have the shape of ids \(4,\), got \(3,\)"):
        ops.embedding_bag(table, ids, offsets, weights=T(np.ones(3, np.float32)), **kw)
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        ops.embedding_bag(table, ids, offsets, weights=T(np.ones(4, np.float32)), mode="mean", **kw)
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        ops.embedding_bag_backward(g, ids, offsets, 10, T(np.ones(4, np.float32)), "mean", **kw)
    with pytest.raises(ValueError, match="grad_out has 3 rows but there are 2 bags"):
        ops.embedding_bag_backward(T(np.ones((3, 4), np.float32)), ids, offsets, 10, **kw)
    with pytest.raises(ValueError, match="num_rows must be non-negative, got -1"):
        ops.embedding_bag_backward(g, ids, offsets, -1, **kw)
    with pytest.raises(TypeError, match="grad_out must have dtype float32"):
        ops.embedding_bag_weight_grad(T(np.ones((2, 4))), table, ids, offsets, **kw)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 4\)"):
        ops.embedding_bag_weight_grad(T(np.ones((2, 3), np.float32)), table, ids, offsets, **kw)
    with pytest.raises(ValueError, match="mode must be 'sum' or 'mean', got 'max'"):
        ops.embedding_bag(table, ids, offsets, mode="max", **kw)
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.embedding_bag(table.long(), ids, offsets, **kw)


def test_bad_optimiser_inputs():
    table = np.zeros((5, 3), np.float32)
    state = np.zeros(5, np.float32)
    g = np.ones((2, 3), np.float32)
    ro = table.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="table is read-only"):
        ops.sparse_sgd_(ro, [0, 1], g, 0.1)
    with pytest.raises(ValueError, match="table must be C-contiguous"):
        ops.sparse_sgd_(np.zeros((5, 6), np.float32)[:, ::2], [0, 1], g, 0.1)
    with pytest.raises(ValueError, match="table must be C-contiguous"):
        ops.sparse_sgd_(np.asfortranarray(np.zeros((5, 3), np.float32)), [0, 1], g, 0.1)
    with pytest.raises(ValueError, match="table must be C-contiguous"):
        ops.sparse_sgd_(torch.zeros(3, 5).t(), [0, 1], g, 0.1)
    with pytest.raises(TypeError, match="table must have dtype float32 or float64"):
        ops.sparse_sgd_(np.zeros((5, 3), np.int32), [0, 1], g, 0.1)
    with pytest.raises(TypeError, match="grads must have dtype float32, got float64"):
        ops.sparse_sgd_(table, [0, 1], g.astype(np.float64), 0.1)
    with pytest.raises(ValueError, match=r"grads must have shape \(2, 3\)"):
        ops.sparse_sgd_(table, [0, 1], np.ones((3, 3), np.float32), 0.1)
    bad = g.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"grads contains NaN or inf at index \(1, 2\)"):
        ops.sparse_sgd_(table, [0, 1], bad, 0.1)
    with pytest.raises(ValueError, match="lr must be finite, got nan"):
        ops.sparse_sgd_(table, [0, 1], g, float("nan"))
    with pytest.raises(TypeError, match="lr must be a real number, got str"):
        ops.sparse_sgd_(table, [0, 1], g, "0.1")
    with pytest.raises(ValueError, match=r"eps must be >= 0.0, got -1.0"):
        ops.sparse_adagrad_(table, state, [0, 1], g, 0.1, eps=-1.0)
    with pytest.raises(TypeError, match="state must have dtype float32"):
        ops.sparse_adagrad_(table, state.astype(np.float64), [0, 1], g, 0.1)
    with pytest.raises(ValueError, match=r"state must have shape \(5,\)"):
        ops.sparse_adagrad_(table, np.zeros(4, np.float32), [0, 1], g, 0.1)
    ros = state.copy()
    ros.flags.writeable = False
    with pytest.raises(ValueError, match="state is read-only"):
        ops.sparse_adagrad_(table, ros, [0, 1], g, 0.1)
    with pytest.raises(IndexError, match="rows contains id -1"):
        ops.sparse_adagrad_(table, state, [0, -1], g, 0.1)
    assert not table.any() and not state.any()  # nothing was touched


def test_core_checks_again_without_python_validation():
    """The compiled core never trusts its caller: bad ids/offsets raise, no crash."""
    table = np.ones((4, 2), np.float32)
    with pytest.raises(IndexError, match="ids contains id 9"):
        _core.embedding_bag_forward(table, np.array([0, 9], np.int64), np.array([0], np.int64), None, "sum", 1)
    with pytest.raises(IndexError, match="ids contains id -3"):
        _core.embedding_gather(table, np.array([-3], np.int64), 1)
    with pytest.raises(ValueError, match="offsets must start at 0"):
        _core.embedding_bag_forward(table, np.array([0, 1], np.int64), np.array([1], np.int64), None, "sum", 1)
    with pytest.raises(ValueError, match="non-decreasing"):
        _core.embedding_bag_forward(table, np.array([0, 1], np.int64), np.array([0, 2, 1], np.int64), None, "sum", 1)
    with pytest.raises(ValueError, match="beyond the number of ids"):
        _core.embedding_bag_backward(np.ones((2, 2), np.float32), np.array([0], np.int64), np.array([0, 3], np.int64), 4, None, "sum", False, 1)
    with pytest.raises(IndexError, match="ids contains id 4"):
        _core.sparse_sgd(table, np.array([4], np.int64), np.ones((1, 2), np.float32), 0.1, 1)
    with pytest.raises(TypeError):  # float64 weights for a float32 table: no silent conversion
        _core.embedding_bag_forward(table, np.array([0], np.int64), np.array([0], np.int64), np.ones(1), "sum", 1)
    ro = table.copy()
    ro.flags.writeable = False
    with pytest.raises((ValueError, TypeError)):
        _core.sparse_sgd(ro, np.array([0], np.int64), np.ones((1, 2), np.float32), 0.1, 1)
    assert (ro == 1).all()


# ---------------------------------------------------------------------------
# SIMD levels (the forward bag loop is compiled per instruction set and picked
# once at run time; METAREC_SIMD in a subprocess: tests/test_simd_levels.py)

SIMD_LEVELS = ["generic", "avx2", "avx512"]
SIMD_SUPPORTED = SIMD_LEVELS[: SIMD_LEVELS.index(_core.simd_detected()) + 1]
# Widths that exercise the 256-byte tiles, the one-cache-line tiles and the tail.
SIMD_WIDTHS = [1, 7, 16, 17, 64, 100, 130, 259]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", [("sum", False), ("mean", False), ("sum", True)])
def test_embedding_bag_simd_levels_bit_identical_to_numpy(dtype, mode, weighted):
    """Every level the CPU supports gives the numpy reference's bits exactly
    (same per-column left-to-right sum, multiply then add, no FMA)."""
    rng = np.random.default_rng(2024)
    for d in SIMD_WIDTHS:
        table = rng.standard_normal((120, d)).astype(dtype)
        ids, offsets = make_bags(rng, 120, rng.integers(0, 25, 40))
        weights = rng.standard_normal(len(ids)).astype(dtype) if weighted else None
        ref = np_embedding_bag(table, ids, offsets, weights, mode)
        for level in SIMD_SUPPORTED:
            for threads in (1, 2):
                got = _core.embedding_bag_forward(table, ids, offsets, weights, mode, threads, simd=level)
                assert got.tobytes() == ref.tobytes(), (d, level, threads)
        assert ops.embedding_bag(table, ids, offsets, weights, mode).tobytes() == ref.tobytes()


def test_embedding_bag_simd_levels_bad_ids_and_empty():
    table = np.ones((4, 70), np.float32)
    for level in SIMD_SUPPORTED:
        with pytest.raises(IndexError, match="contains id 9"):
            _core.embedding_bag_forward(table, np.array([1, 9, 2]), np.array([0, 1]), None, "sum", 2, simd=level)
        out = _core.embedding_bag_forward(table, np.zeros(0, np.int64), np.array([0, 0]), None, "mean", 1, simd=level)
        assert out.shape == (2, 70) and not out.any()


def test_embedding_bag_simd_level_errors_and_reporting():
    table, ids, offsets = np.ones((3, 2), np.float32), np.array([0, 1]), np.array([0])
    with pytest.raises(ValueError, match="bogus"):
        _core.embedding_bag_forward(table, ids, offsets, None, "sum", 1, simd="bogus")
    for level in SIMD_LEVELS[len(SIMD_SUPPORTED):]:
        with pytest.raises(ValueError, match=level):
            _core.embedding_bag_forward(table, ids, offsets, None, "sum", 1, simd=level)
    for level in SIMD_SUPPORTED:
        used = _core.embedding_simd_level(level)
        assert used in SIMD_LEVELS and SIMD_LEVELS.index(used) <= SIMD_LEVELS.index(level)
    assert _core.embedding_simd_level("generic") == "generic"
    assert _core.embedding_simd_level() == _core.embedding_simd_level(_core.simd_level())
