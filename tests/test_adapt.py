"""The C++ linear-head inner loop: forward against numpy, backward against torch
autograd on the unrolled loop, thread independence, gradcheck and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from metarec_fast.ops.adapt import linear_head_adapt


def numpy_adapt(H, c, indptr, items, targets, p0, b0, alpha_p, alpha_b, steps, l2, loss):
    """Plain loops: the slow reference."""
    n_users = len(indptr) - 1
    d = H.shape[1]
    P = np.zeros((n_users, d))
    B = np.zeros(n_users)
    for u in range(n_users):
        p = np.array(p0[u] if p0.ndim == 2 else p0, dtype=np.float64)
        b = float(b0[u] if np.ndim(b0) == 1 else b0)
        it = items[indptr[u] : indptr[u + 1]]
        y = targets[indptr[u] : indptr[u + 1]].astype(np.float64)
        for _ in range(steps):
            f = H[it] @ p + b + c[it]
            d1 = 2 * (f - y) if loss == "mse" else 1 / (1 + np.exp(-f)) - y
            n = max(len(it), 1)
            gp = (d1[:, None] * H[it]).sum(0) / n + l2 * p
            gb = d1.sum() / n
            p, b = p - alpha_p * gp, b - alpha_b * gb
        P[u], B[u] = p, b
    return P, B


def random_problem(seed, n_users=7, n_items=40, d=5, max_support=12, dtype=np.float64, loss="mse"):
    rng = np.random.default_rng(seed)
    H = rng.normal(scale=0.5, size=(n_items, d)).astype(dtype)
    c = rng.normal(size=n_items).astype(dtype)
    counts = rng.integers(0, max_support + 1, n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    items = np.concatenate([rng.choice(n_items, k, replace=False) for k in counts]).astype(np.int64)
    if loss == "mse":
        targets = rng.integers(1, 6, indptr[-1]).astype(dtype)
    else:
        targets = rng.integers(0, 2, indptr[-1]).astype(dtype)
    q_counts = rng.integers(0, 6, n_users)
    q_indptr = np.concatenate([[0], np.cumsum(q_counts)]).astype(np.int64)
    q_items = rng.integers(0, n_items, q_indptr[-1]).astype(np.int64)
    return H, c, (indptr, items, targets), (q_indptr, q_items)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-4)])
@pytest.mark.parametrize("loss", ["mse", "logistic"])
@pytest.mark.parametrize("steps", [0, 1, 5, 20])
@pytest.mark.parametrize("per_user", [False, True])
@pytest.mark.parametrize("per_param", [False, True])
def test_forward_matches_numpy(dtype, tol, loss, steps, per_user, per_param):
    H, c, support, query = random_problem(steps, dtype=dtype, loss=loss)
    n_users, d = len(support[0]) - 1, H.shape[1]
    rng = np.random.default_rng(1)
    p0 = rng.normal(size=(n_users, d) if per_user else d).astype(dtype)
    b0 = rng.normal(size=n_users if per_user else ()).astype(dtype)
    alpha = rng.uniform(0.05, 0.2, d).astype(dtype) if per_param else 0.1
    res = linear_head_adapt(H, c, support, p0, b0, alpha=alpha, alpha_b=0.15, steps=steps,
                            l2=0.01, loss=loss, query=query)
    P, B = numpy_adapt(H.astype(float), c.astype(float), *support, p0, b0,
                       np.asarray(alpha, dtype=float), 0.15, steps, 0.01, loss)
    np.testing.assert_allclose(res.p, P, rtol=tol, atol=tol)
    np.testing.assert_allclose(res.b, B, rtol=tol, atol=tol)
    q_indptr, q_items = query
    rows = np.repeat(np.arange(n_users), np.diff(q_indptr))
    expected = (H[q_items] * P[rows]).sum(1) + B[rows] + c[q_items]
    np.testing.assert_allclose(res.query_pred, expected, rtol=tol * 10, atol=tol * 10)
    assert res.p.dtype == dtype and res.query_pred.dtype == dtype


def test_large_support_sets_and_scipy_input():
    rng = np.random.default_rng(3)
    n_items, d = 300, 8
    H = rng.normal(scale=0.2, size=(n_items, d))
    c = np.zeros(n_items)
    rows = [rng.choice(n_items, k, replace=False) for k in (1, 200, 57)]
    support = sp.csr_matrix(
        (np.concatenate([rng.integers(1, 6, len(r)) for r in rows]).astype(float),
         np.concatenate(rows), np.concatenate([[0], np.cumsum([len(r) for r in rows])])),
        shape=(3, n_items),
    )
    res = linear_head_adapt(H, c, support, np.zeros(d), 0.0, alpha=0.05, steps=10)
    P, B = numpy_adapt(H, c, support.indptr, support.indices, support.data, np.zeros(d), 0.0,
                       0.05, 0.05, 10, 0.0, "mse")
    np.testing.assert_allclose(res.p, P, rtol=1e-12, atol=1e-12)
    assert res.query_pred.shape == (0,)


def test_identical_for_any_thread_count():
    H, c, support, query = random_problem(5, n_users=300, n_items=200, d=16, max_support=40)
    kw = dict(p0=np.ones(16) * 0.1, b0=0.0, alpha=0.05, steps=7, l2=0.1, query=query)
    one = linear_head_adapt(H, c, support, num_threads=1, **kw)
    two = linear_head_adapt(H, c, support, num_threads=2, **kw)
    assert np.array_equal(one.trajectory, two.trajectory)
    assert np.array_equal(one.query_pred, two.query_pred)


torch = pytest.importorskip("torch")


def _torch_problem(seed, dtype, per_user, per_param, loss, n_users=6, max_support=10):
    from metarec_fast.meta import TaskBatch

    H, c, (indptr, items, targets), (q_indptr, q_items) = random_problem(
        seed, n_users=n_users, dtype=np.float64, loss=loss, max_support=max_support)
    support = [(items[indptr[u]:indptr[u + 1]].tolist(), targets[indptr[u]:indptr[u + 1]].tolist())
               for u in range(n_users)]
    rng = np.random.default_rng(seed)
    q_t = rng.integers(0, 2, len(q_items)) if loss == "logistic" else rng.integers(1, 6, len(q_items))
    query = [(q_items[q_indptr[u]:q_indptr[u + 1]].tolist(), q_t[q_indptr[u]:q_indptr[u + 1]].tolist())
             for u in range(n_users)]
    batch = TaskBatch.from_lists(support, query, dtype=dtype)
    d = H.shape[1]
    t = lambda a: torch.tensor(a, dtype=dtype, requires_grad=True)  # noqa: E731
    p0 = t(rng.normal(size=(n_users, d) if per_user else d))
    b0 = t(rng.normal(size=n_users if per_user else ()))
    alpha_p = t(rng.uniform(0.05, 0.2, d)) if per_param else t(0.1)
    alpha_b = t(0.12)
    return t(H), t(c), p0, b0, alpha_p, alpha_b, batch


def _unrolled(H, c, p0, b0, alpha_p, alpha_b, batch, steps, l2, loss, weights):
    """The per-user autograd loop, create_graph=True: the reference for every gradient."""
    total = 0
    for u in range(batch.n_tasks):
        p = p0[u] if p0.ndim == 2 else p0
        b = b0[u] if b0.ndim == 1 else b0
        m = batch.support_mask[u] > 0
        it, y = batch.support_items[u][m], batch.support_ratings[u][m]
        for _ in range(steps):
            f = H[it] @ p + b + c[it]
            if loss == "mse":
                lv = ((f - y) ** 2).sum() / max(len(it), 1)
            else:
                lv = torch.nn.functional.binary_cross_entropy_with_logits(f, y, reduction="sum") / max(len(it), 1)
            lv = lv + 0.5 * l2 * (p ** 2).sum()
            gp, gb = torch.autograd.grad(lv, (p, b), create_graph=True)
            p, b = p - alpha_p * gp, b - alpha_b * gb
        qm = batch.query_mask[u] > 0
        qit = batch.query_items[u][qm]
        if len(qit):
            total = total + (weights[u][: len(qit)] * (H[qit] @ p + b + c[qit])).sum()
    return total


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("loss", ["mse", "logistic"])
@pytest.mark.parametrize("per_user", [False, True])
@pytest.mark.parametrize("per_param", [False, True])
@pytest.mark.parametrize("steps", [0, 2, 20])
def test_backward_matches_unrolled_autograd(dtype, rtol, loss, per_user, per_param, steps):
    from metarec_fast.meta.cpp_engine import linear_head_query_predictions

    H, c, p0, b0, alpha_p, alpha_b, batch = _torch_problem(steps + 11, dtype, per_user, per_param, loss)
    pred, _, rows = linear_head_query_predictions(p0, b0, alpha_p, alpha_b, H, c, batch, steps, 0.05, loss)
    weights = torch.randn(batch.n_tasks, batch.query_items.shape[1], dtype=dtype,
                          generator=torch.Generator().manual_seed(0))
    pos = torch.cat([torch.arange(int(n)) for n in (batch.query_mask > 0).sum(1)]) if len(rows) else rows
    ours = (weights[rows, pos] * pred).sum() if len(rows) else pred.sum()
    ref = _unrolled(H, c, p0, b0, alpha_p, alpha_b, batch, steps, 0.05, loss, weights)
    inputs = (p0, b0, alpha_p, alpha_b, H, c)
    g_ours = torch.autograd.grad(ours, inputs, allow_unused=True)
    g_ref = torch.autograd.grad(ref, inputs, allow_unused=True) if torch.is_tensor(ref) else [None] * 6
    for name, a, b in zip(("p0", "b0", "alpha_p", "alpha_b", "H", "c"), g_ours, g_ref):
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * 1e-2, msg=name)


def test_gradcheck_small_case(device):
    # One autograd Function, on every device (the emulated CUDA backend runs
    # the real CUDA forward and backward kernels).
    from metarec_fast.meta.cpp_engine import linear_head_query_predictions

    H, c, p0, b0, alpha_p, alpha_b, batch = _torch_problem(2, torch.float64, True, True, "logistic",
                                                           n_users=3, max_support=4)
    if device == "cuda" and torch.cuda.is_available():
        H, c, p0, b0, alpha_p, alpha_b = (t.detach().cuda().requires_grad_() for t in (H, c, p0, b0, alpha_p, alpha_b))

    def f(p0, b0, alpha_p, alpha_b, H, c):
        return linear_head_query_predictions(p0, b0, alpha_p, alpha_b, H, c, batch, 3, 0.1, "logistic")[0]

    assert torch.autograd.gradcheck(f, (p0, b0, alpha_p, alpha_b, H, c), eps=1e-6, atol=1e-7)


def test_backward_identical_for_any_thread_count():
    from metarec_fast import _core
    from metarec_fast.meta.cpp_engine import batch_to_csr

    H, c, p0, b0, alpha_p, alpha_b, batch = _torch_problem(4, torch.float64, False, True, "mse",
                                                           n_users=200, max_support=30)
    tasks, _ = batch_to_csr(batch, torch.float64)
    args = (H.detach().numpy(), c.detach().numpy(), tasks["s_indptr"], tasks["s_items"],
            tasks["s_targets"], tasks["q_indptr"], tasks["q_items"], p0.detach().numpy()[None],
            b0.detach().numpy().reshape(1), False, alpha_p.detach().numpy(), 0.1, 5, 0.01, "mse")
    traj, pred = _core.linear_head_forward(*args, 1)
    grad = np.random.default_rng(0).normal(size=pred.shape)
    g1 = _core.linear_head_backward(*args, traj, grad, True, True, 1)
    g2 = _core.linear_head_backward(*args, traj, grad, True, True, 2)
    for key in ("p0", "b0", "alpha_p", "H", "c"):
        assert np.array_equal(g1[key], g2[key]), key
    # Skipping the learning-rate gradient changes nothing else.
    g3 = _core.linear_head_backward(*args, traj, grad, True, False, 2)
    for key in ("p0", "b0", "H", "c"):
        assert np.array_equal(g1[key], g3[key]), key
    assert not g3["alpha_p"].any() and g3["alpha_b"] == 0 and g1["alpha_p"].any()


def test_bad_input():
    H, c, support, query = random_problem(0)
    d = H.shape[1]
    indptr, items, targets = support
    bad_items = items.copy()
    bad_items[0] = 999
    with pytest.raises(IndexError, match="999"):
        linear_head_adapt(H, c, (indptr, bad_items, targets), np.zeros(d), 0.0)
    nan_t = targets.copy()
    nan_t[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        linear_head_adapt(H, c, (indptr, items, nan_t), np.zeros(d), 0.0)
    with pytest.raises(ValueError, match="p0"):
        linear_head_adapt(H, c, support, np.zeros(d + 1), 0.0)
    with pytest.raises(ValueError, match="c must have"):
        linear_head_adapt(H, c[:-1], support, np.zeros(d), 0.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        linear_head_adapt(H.astype(np.int64), c, support, np.zeros(d), 0.0)
    with pytest.raises(ValueError, match="steps"):
        linear_head_adapt(H, c, support, np.zeros(d), 0.0, steps=-1)
    with pytest.raises(ValueError, match="loss"):
        linear_head_adapt(H, c, support, np.zeros(d), 0.0, loss="hinge")
    with pytest.raises(ValueError, match="targets"):
        linear_head_adapt(H, c, (indptr, items), np.zeros(d), 0.0)
    with pytest.raises(ValueError, match="indptr"):
        linear_head_adapt(H, c, (indptr[::-1].copy(), items, targets), np.zeros(d), 0.0)


_LEVELS = ["generic", "avx2", "avx512"]


def _supported_levels():
    from metarec_fast import _core

    best = _LEVELS.index(_core.simd_detected())
    return _LEVELS[: best + 1]


def _level_outputs(args, grad_seed, level, threads):
    from metarec_fast import _core

    traj, pred = _core.linear_head_forward(*args, threads, simd=level)
    grad = np.random.default_rng(grad_seed).normal(size=pred.shape).astype(pred.dtype)
    out = {"traj": traj, "pred": pred}
    for second in (True, False):
        g = _core.linear_head_backward(*args, traj, grad, second, True, threads, simd=level)
        out.update({f"{k}{int(second)}": np.asarray(v) for k, v in g.items()})
    return out


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("loss", ["mse", "logistic"])
@pytest.mark.parametrize("d", [1, 5, 37, 64, 131])
def test_simd_levels_agree(dtype, rtol, loss, d):
    """Every SIMD level the CPU supports (AVX2+FMA, AVX-512) matches the generic
    level up to rounding, and each level is identical for 1 and 2 threads. The
    widths cover the 4-vector blocks, single-vector blocks and scalar tails."""
    H, c, (indptr, items, targets), (q_indptr, q_items) = random_problem(
        d, n_users=70, n_items=60, d=d, max_support=15, dtype=dtype, loss=loss)
    rng = np.random.default_rng(d)
    p0 = (rng.normal(scale=0.3, size=(1, d))).astype(dtype)
    alpha_p = rng.uniform(0.05, 0.2, d).astype(dtype)
    args = (H, c, indptr, items, targets, q_indptr, q_items, p0, np.array([0.1], dtype), False,
            alpha_p, dtype(0.1), 4, dtype(0.01), loss)
    ref = _level_outputs(args, d, "generic", 1)
    for level in _supported_levels():
        one = _level_outputs(args, d, level, 1)
        two = _level_outputs(args, d, level, 2)
        for key, want in ref.items():
            np.testing.assert_array_equal(one[key], two[key], err_msg=f"{level} {key}")
            scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
            np.testing.assert_allclose(one[key], want, rtol=rtol, atol=rtol * scale,
                                       err_msg=f"{level} {key}")


def test_simd_level_argument_errors():
    from metarec_fast import _core

    H, c, (indptr, items, targets), (q_indptr, q_items) = random_problem(0)
    d = H.shape[1]
    args = (H, c, indptr, items, targets, q_indptr, q_items, np.zeros((1, d)), np.zeros(1), False,
            np.array([0.1]), 0.1, 2, 0.0, "mse")
    with pytest.raises(ValueError, match="sse9"):
        _core.linear_head_forward(*args, 1, simd="sse9")
    unsupported = [lv for lv in _LEVELS if lv not in _supported_levels()]
    for level in unsupported:
        with pytest.raises(ValueError, match="not supported"):
            _core.linear_head_forward(*args, 1, simd=level)
    traj, pred = _core.linear_head_forward(*args, 1)
    with pytest.raises(ValueError, match="sse9"):
        _core.linear_head_backward(*args, traj, np.ones_like(pred), True, True, 1, simd="sse9")
