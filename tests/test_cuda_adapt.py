"""The CUDA linear-head inner loop against its CPU twin.

Tests marked ``@gpu`` need metarec-fast built with CUDA and a device (they
skip elsewhere): every output of the CUDA forward and every gradient of its
backward equals the C++ CPU kernel's (float64 ~1e-9 relative, float32 1e-4)
across losses, scalar / per-parameter alpha, shared / per-user theta_0, first
and second order, T in {0, 1, 5}, d on both sides of every register-slot
boundary, empty support and query sets and single-item users; the meta-learners
and a MetaTrainer run with engine="cpp" on a CUDA model equal the CPU run.

The rest runs everywhere: the dispatch errors, and the Python plumbing of the
CUDA path (argument dicts, pointers, output buffers, the autograd Function,
the device CSR of a batch) driven through a stand-in for the compiled module
that runs the CPU kernels on the tensors' host memory.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cuda_support import cuda_tests  # noqa: E402
from linear_tasks import DIM, N_ITEMS, linear_tasks  # noqa: E402

from metarec_fast import _core, _gpu  # noqa: E402
from metarec_fast.meta import MetaLearner, MetaTrainer, TaskBatch, cpp_engine  # noqa: E402
from metarec_fast.models import MetaMF  # noqa: E402
from metarec_fast.ops import adapt as adapt_ops  # noqa: E402
from metarec_fast.ops.adapt import linear_head_adapt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = {np.float64: 1e-9, np.float32: 1e-4}


def gpu(f):
    for mark in cuda_tests:
        f = mark(f)
    return f


# ---------------------------------------------------------------- problems


def problem(seed, n_users=9, n_items=30, d=5, max_support=8, max_query=6, loss="mse",
            dtype=np.float64, per_user=False, per_param=False):
    """Random tasks with shared and repeated items; user 0 has one support
    item, user 1 none, user 2 no query, user 3 one query item."""
    rng = np.random.default_rng(seed)
    H = (rng.normal(size=(n_items, d)) * 0.5 / np.sqrt(max(d / 5, 1))).astype(dtype)
    c = rng.normal(size=n_items).astype(dtype)
    s_counts = rng.integers(0, max_support + 1, n_users)
    q_counts = rng.integers(0, max_query + 1, n_users)
    for u, (s, q) in enumerate([(1, None), (0, None), (None, 0), (None, 1)]):
        if u < n_users:
            s_counts[u] = s if s is not None else s_counts[u]
            q_counts[u] = q if q is not None else q_counts[u]
    s_indptr = np.concatenate([[0], np.cumsum(s_counts)]).astype(np.int64)
    q_indptr = np.concatenate([[0], np.cumsum(q_counts)]).astype(np.int64)
    s_items = rng.integers(0, n_items, s_indptr[-1]).astype(np.int64) if n_items else np.zeros(0, np.int64)
    q_items = rng.integers(0, n_items, q_indptr[-1]).astype(np.int64) if n_items else np.zeros(0, np.int64)
    if loss == "mse":
        s_targets = rng.integers(1, 6, s_indptr[-1]).astype(dtype) - 3
    else:
        s_targets = rng.integers(0, 2, s_indptr[-1]).astype(dtype)
    n_theta = n_users if per_user else 1
    p0 = (rng.normal(size=(n_theta, d)) * 0.3).astype(dtype)
    b0 = rng.normal(size=n_theta).astype(dtype)
    alpha_p = rng.uniform(0.05, 0.2, d if per_param else 1).astype(dtype)
    return dict(H=H, c=c, s_indptr=s_indptr, s_items=s_items, s_targets=s_targets, q_indptr=q_indptr,
                q_items=q_items, p0=p0, b0=b0, per_user=per_user, alpha_p=alpha_p, alpha_b=0.13,
                loss=loss, gq=rng.normal(size=q_indptr[-1]).astype(dtype))


def cpu_run(pb, steps, l2, second_order, alpha_grad=True):
    args = (pb["H"], pb["c"], pb["s_indptr"], pb["s_items"], pb["s_targets"], pb["q_indptr"],
            pb["q_items"], pb["p0"], pb["b0"], pb["per_user"], pb["alpha_p"], pb["alpha_b"], steps, l2,
            pb["loss"])
    traj, pred = _core.linear_head_forward(*args, 1)
    g = _core.linear_head_backward(*args, traj, pb["gq"], second_order, alpha_grad=alpha_grad, num_threads=1)
    g["alpha_b"] = np.array([g["alpha_b"]])
    return traj, pred, g


def device_args(pb, device):
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    tasks = {"s_indptr": t(pb["s_indptr"]), "s_items": t(pb["s_items"]), "s_targets": t(pb["s_targets"]),
             "q_indptr": t(pb["q_indptr"]), "q_items": t(pb["q_items"])}
    return dict(H=t(pb["H"]), c=t(pb["c"]), tasks=tasks, p0=t(pb["p0"]), b0=t(pb["b0"]),
                per_user=pb["per_user"], alpha_p=t(pb["alpha_p"]), alpha_b=pb["alpha_b"])


def device_run(pb, steps, l2, second_order, device, alpha_grad=True):
    args = device_args(pb, device)
    traj, pred = adapt_ops.cuda_linear_head_forward(**args, steps=steps, l2=l2, loss=pb["loss"])
    g = adapt_ops.cuda_linear_head_backward(**args, steps=steps, l2=l2, loss=pb["loss"], trajectory=traj,
                                            grad_query_pred=torch.from_numpy(pb["gq"]).to(device),
                                            second_order=second_order, alpha_grad=alpha_grad)
    return traj.cpu().numpy(), pred.cpu().numpy(), {k: v.cpu().numpy() for k, v in g.items()}


def assert_close(got, want, rtol, name):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-3), err_msg=name)


def assert_runs_match(got, want, rtol):
    (t1, p1, g1), (t2, p2, g2) = got, want
    assert_close(t1, t2, rtol, "trajectory")
    assert_close(p1, p2, rtol, "query_pred")
    for name in ("p0", "b0", "alpha_p", "alpha_b", "H", "c"):
        assert_close(g1[name], g2[name], rtol, name)


# ---------------------------------------------------------------- GPU: kernels vs the CPU twin


@gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss", ["mse", "logistic"])
@pytest.mark.parametrize("per_user", [False, True])
@pytest.mark.parametrize("per_param", [False, True])
@pytest.mark.parametrize("steps", [0, 1, 5])
@pytest.mark.parametrize("second_order", [True, False])
def test_kernels_match_cpu(dtype, loss, per_user, per_param, steps, second_order):
    pb = problem(steps * 7 + per_user * 3 + per_param, loss=loss, dtype=dtype, per_user=per_user,
                 per_param=per_param)
    want = cpu_run(pb, steps, 0.05, second_order)
    got = device_run(pb, steps, 0.05, second_order, "cuda")
    assert_runs_match(got, want, TOL[dtype])


@gpu
@pytest.mark.parametrize("d", [1, 2, 31, 32, 33, 64, 65, 100, 128, 129, 200, 256, 257, 300, 700])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_register_layout_matches_cpu(d, dtype):
    # d <= 32, 64, 128, 256: 1, 2, 4, 8 register slots per lane; above: global scratch.
    for loss, per_param in (("mse", True), ("logistic", False)):
        pb = problem(d, n_users=13, n_items=40, d=d, loss=loss, dtype=dtype, per_param=per_param,
                     per_user=d % 2 == 0)
        assert_runs_match(device_run(pb, 3, 0.1, True, "cuda"), cpu_run(pb, 3, 0.1, True), TOL[dtype])


@gpu
@pytest.mark.parametrize("second_order", [True, False])
def test_without_alpha_gradient(second_order):
    pb = problem(5, per_param=True)
    got = device_run(pb, 4, 0.0, second_order, "cuda", alpha_grad=False)
    want = cpu_run(pb, 4, 0.0, second_order, alpha_grad=False)
    assert_runs_match(got, want, 1e-9)
    assert not got[2]["alpha_p"].any() and not got[2]["alpha_b"].any()


@gpu
@pytest.mark.parametrize("case", ["no_users", "no_support", "no_query", "one_item", "single_user",
                                  "many_users_one_item"])
@pytest.mark.parametrize("per_user", [False, True])
def test_empty_and_tiny_inputs(case, per_user):
    kw = dict(per_user=per_user, per_param=True)
    if case == "no_users":
        pb = problem(1, n_users=0, **kw)
    elif case == "no_support":
        pb = problem(2, max_support=0, **kw)
    elif case == "no_query":
        pb = problem(3, max_query=0, **kw)
    elif case == "one_item":
        pb = problem(4, n_items=1, **kw)
    elif case == "single_user":
        pb = problem(5, n_users=1, **kw)
    else:  # every entry on one item: the longest per-item reduction
        pb = problem(6, n_users=3000, n_items=1, max_support=3, max_query=3, **kw)
    for steps, second in ((0, True), (2, True), (2, False)):
        assert_runs_match(device_run(pb, steps, 0.05, second, "cuda"), cpu_run(pb, steps, 0.05, second), 1e-9)


@gpu
def test_items_without_entries_get_zero_gradients_and_runs_are_bitwise_repeatable():
    pb = problem(8, n_users=50, n_items=500, d=40)
    first = device_run(pb, 5, 0.05, True, "cuda")
    again = device_run(pb, 5, 0.05, True, "cuda")
    for name in first[2]:
        assert np.array_equal(first[2][name], again[2][name]), name
    used = np.zeros(500, bool)
    used[pb["s_items"]] = used[pb["q_items"]] = True
    assert not first[2]["H"][~used].any() and not first[2]["c"][~used].any()


@gpu
def test_runs_on_the_callers_stream():
    pb = problem(9, n_users=200, d=64, dtype=np.float32)
    want = cpu_run(pb, 5, 0.05, True)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = device_run(pb, 5, 0.05, True, "cuda")
    assert_runs_match(got, want, 1e-4)


@gpu
def test_large_batch_float32():
    pb = problem(10, n_users=5000, n_items=2000, d=64, max_support=25, max_query=25, dtype=np.float32,
                 per_param=True)
    assert_runs_match(device_run(pb, 5, 0.01, True, "cuda"), cpu_run(pb, 5, 0.01, True), 1e-4)


@gpu
def test_bad_device_arrays_raise_and_leave_the_device_usable():
    pb = problem(11)
    bad_item = dict(pb, s_items=pb["s_items"].copy())
    bad_item["s_items"][3] = 30
    with pytest.raises(IndexError, match="support items contains id 30"):
        device_run(bad_item, 2, 0.0, True, "cuda")
    bad_q = dict(pb, q_items=pb["q_items"].copy())
    bad_q["q_items"][-1] = -1
    with pytest.raises(IndexError, match="query items contains id -1"):
        device_run(bad_q, 2, 0.0, True, "cuda")
    bad_ptr = dict(pb, s_indptr=pb["s_indptr"].copy())
    bad_ptr["s_indptr"][2], bad_ptr["s_indptr"][3] = bad_ptr["s_indptr"][3] + 1, bad_ptr["s_indptr"][2]
    with pytest.raises(ValueError, match="support indptr decreases"):
        device_run(bad_ptr, 2, 0.0, True, "cuda")
    bad_end = dict(pb, q_indptr=pb["q_indptr"].copy())
    bad_end["q_indptr"][-1] -= 1
    bad_end["gq"] = pb["gq"]
    with pytest.raises(ValueError, match="query indptr (ends at|decreases)"):
        device_run(bad_end, 2, 0.0, True, "cuda")
    assert_runs_match(device_run(pb, 2, 0.0, True, "cuda"), cpu_run(pb, 2, 0.0, True), 1e-9)


# ---------------------------------------------------------------- GPU: the public op


@gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_head_adapt_on_cuda_matches_cpu(dtype):
    pb = problem(12, dtype=dtype, per_user=True, per_param=True)
    support = (pb["s_indptr"], pb["s_items"], pb["s_targets"])
    query = (pb["q_indptr"], pb["q_items"])
    kw = dict(alpha=pb["alpha_p"], alpha_b=0.1, steps=4, l2=0.02, query=query)
    want = linear_head_adapt(pb["H"], pb["c"], support, pb["p0"], pb["b0"], **kw)
    got = linear_head_adapt(pb["H"], pb["c"], support, pb["p0"], pb["b0"], device="cuda", **kw)
    assert got.trajectory.is_cuda and got.query_pred.is_cuda and got.p.is_cuda
    for name in ("p", "b", "query_pred", "trajectory"):
        assert_close(getattr(got, name).cpu().numpy(), getattr(want, name), TOL[dtype], name)
    # CUDA tensors in (CSR included) -> CUDA out, without device=.
    cu = lambda a: torch.from_numpy(np.ascontiguousarray(a)).cuda()  # noqa: E731
    again = linear_head_adapt(cu(pb["H"]), cu(pb["c"]), tuple(map(cu, support)), cu(pb["p0"]), cu(pb["b0"]),
                              alpha=cu(pb["alpha_p"]), alpha_b=0.1, steps=4, l2=0.02,
                              query=tuple(map(cu, query)))
    assert torch.equal(again.trajectory, got.trajectory)
    with pytest.raises(IndexError, match="id 30"):
        bad = cu(pb["s_items"])
        bad[0] = 30
        linear_head_adapt(cu(pb["H"]), cu(pb["c"]), (cu(pb["s_indptr"]), bad, cu(pb["s_targets"])),
                          cu(pb["p0"]), cu(pb["b0"]), steps=2)
    with pytest.raises(ValueError, match="is on the CPU"):
        linear_head_adapt(cu(pb["H"]), pb["c"], support, pb["p0"], pb["b0"])
    with pytest.raises(ValueError, match="device='cpu'"):
        linear_head_adapt(cu(pb["H"]), cu(pb["c"]), support, pb["p0"], pb["b0"], device="cpu")


# ---------------------------------------------------------------- GPU: the meta-learners and the trainer


def _learner(algorithm, dtype=torch.float64, device="cpu", loss="mse", features=None):
    model = MetaMF(N_ITEMS, dim=DIM, random_state=4, dtype=dtype, global_bias=3.0, loss=loss,
                   user_feature_dim=features)
    if features:
        with torch.no_grad():
            model.init_net.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
    model.to(device)
    return MetaLearner(model, algorithm, inner_steps=3, inner_lr=0.1, l2=0.01, engine="cpp")


def _meta_gradients(learner, batch):
    learner.zero_grad(set_to_none=True)
    loss = learner.meta_backward(batch)
    return loss, {n: p.grad.detach().cpu().clone() for n, p in learner.named_parameters() if p.grad is not None}


def _assert_same_gradients(a, b, rtol):
    (la, ga), (lb, gb) = a, b
    assert la == pytest.approx(lb, rel=rtol)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=rtol, atol=rtol * 0.1, msg=name)


def _batch_with_features(n, seed, dtype=torch.float64):
    batch = linear_tasks(n, seed, dtype=dtype, ragged=True)
    batch.user_features = torch.randn(n, 4, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return batch


@gpu
@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "metasgd"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_meta_gradients_on_cuda_match_cpu(algorithm, dtype, rtol):
    batch = linear_tasks(40, 3, dtype=dtype, ragged=True)
    want = _meta_gradients(_learner(algorithm, dtype), batch)
    got = _meta_gradients(_learner(algorithm, dtype, "cuda"), batch.to("cuda"))
    _assert_same_gradients(got, want, rtol)
    # A CPU batch works too for the C++ engine (its CSR moves to the GPU).
    if algorithm != "reptile":
        _assert_same_gradients(_meta_gradients(_learner(algorithm, dtype, "cuda"), batch), want, rtol)


@gpu
@pytest.mark.parametrize("loss", ["mse", "logistic"])
def test_conditioned_initialisation_on_cuda_matches_cpu(loss):
    batch = _batch_with_features(30, 5)
    if loss == "logistic":
        batch.support_ratings = (batch.support_ratings > 3).to(batch.support_ratings.dtype)
        batch.query_ratings = (batch.query_ratings > 3).to(batch.query_ratings.dtype)
        batch.csr = None  # targets changed: un-pad
    want = _meta_gradients(_learner("maml", loss=loss, features=4), batch)
    got = _meta_gradients(_learner("maml", device="cuda", loss=loss, features=4), batch.to("cuda"))
    _assert_same_gradients(got, want, 1e-9)


@gpu
@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "metasgd"])
def test_trainer_on_cuda_matches_cpu(algorithm):
    train, val = linear_tasks(48, 0), linear_tasks(16, 1)

    def fit(device):
        model = MetaMF(N_ITEMS, dim=DIM, random_state=2, dtype=torch.float64, global_bias=3.0).to(device)
        trainer = MetaTrainer(model, algorithm=algorithm, inner_steps=2, inner_lr=0.1, outer_lr=0.02,
                              meta_batch_size=16, random_state=2, engine="cpp")
        return trainer.fit(train, val, epochs=3, show_progress=False)

    a, b = fit("cpu"), fit("cuda")
    assert a.learner.engine == b.learner.engine == "cpp"
    assert next(b.model.parameters()).is_cuda
    for (name, x), (_, y) in zip(a.learner.state_dict().items(), b.learner.state_dict().items()):
        torch.testing.assert_close(y.cpu(), x, rtol=1e-9, atol=1e-12, msg=name)
    assert [r["val_loss"] for r in b.history] == pytest.approx([r["val_loss"] for r in a.history], rel=1e-9)


# ---------------------------------------------------------------- everywhere: dispatch errors


def _small_inputs():
    pb = problem(0)
    return (pb["H"], pb["c"], (pb["s_indptr"], pb["s_items"], pb["s_targets"]), pb["p0"][0], pb["b0"][0])


@pytest.fixture
def without_cuda(monkeypatch):
    def missing():
        raise RuntimeError(_gpu.BUILT_WITHOUT_CUDA)

    monkeypatch.setattr(_gpu, "cuda_module", missing)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_device_cuda_without_the_module_raises(without_cuda, device):
    with pytest.raises(RuntimeError, match="built without CUDA"):
        linear_head_adapt(*_small_inputs(), steps=2, device=device)


@pytest.mark.skipif(_gpu.built_with_cuda(), reason="this build has the CUDA module")
def test_device_cuda_in_a_cpu_build_raises():
    with pytest.raises(RuntimeError, match="built without CUDA"):
        linear_head_adapt(*_small_inputs(), steps=2, device="cuda")


def test_cpp_engine_on_a_cuda_model_without_the_module_raises(without_cuda, monkeypatch):
    monkeypatch.setattr(cpp_engine, "_on_cuda", lambda H: True)
    learner = _learner("maml")
    with pytest.raises(RuntimeError, match="built without CUDA"):
        learner(linear_tasks(4, 0))


def test_bad_device_string_raises_value_error():
    with pytest.raises(ValueError, match="device must be"):
        linear_head_adapt(*_small_inputs(), steps=2, device="gpu")


def test_device_cpu_is_the_cpu_path():
    a = linear_head_adapt(*_small_inputs(), steps=3, device="cpu")
    b = linear_head_adapt(*_small_inputs(), steps=3)
    assert isinstance(a.trajectory, np.ndarray)
    assert np.array_equal(a.trajectory, b.trajectory)


@pytest.mark.skipif(not _gpu.built_with_cuda() or _gpu.cuda_available(),
                    reason="needs the CUDA module built, on a machine without a device")
def test_device_cuda_without_a_device_raises():
    # (device="cuda" asks torch for the current device first, which a CPU-only
    # torch answers with an AssertionError: see _gpu.resolve_device.)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        linear_head_adapt(*_small_inputs(), steps=2, device="cuda:0")


# ---------------------------------------------------------------- everywhere: Python plumbing


def _host_array(ptr, n, dtype):
    """A numpy view of n elements at a host address (the stand-in's 'device' memory)."""
    dtype = np.dtype(dtype)
    if n == 0:
        return np.zeros(0, dtype)
    buf = (ctypes.c_char * (n * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype, count=n)


class HostModule:
    """Stands in for metarec_fast._cuda: reads the arguments exactly as the
    binding does (same dict keys and sizes) from CPU tensors' memory and runs
    the C++ CPU kernels."""

    def __init__(self):
        self.calls = []

    def _args(self, dtype, b, nnz_s, nnz_q):
        dt = np.dtype(dtype)
        n_items, d, n_users = b["n_items"], b["d"], b["n_users"]
        n_theta = n_users if b["per_user_theta0"] else 1
        n_alpha = d if b["alpha_per_parameter"] else 1
        a = lambda key, n, t=dt: _host_array(b[key], n, t).copy()  # noqa: E731
        return (a("H", n_items * d).reshape(n_items, d), a("c", n_items),
                a("support_indptr", n_users + 1, np.int64), a("support_items", nnz_s, np.int64),
                a("support_targets", nnz_s), a("query_indptr", n_users + 1, np.int64),
                a("query_items", nnz_q, np.int64), a("p0", n_theta * d).reshape(n_theta, d),
                a("b0", n_theta), b["per_user_theta0"], a("alpha_p", n_alpha), b["alpha_b"], b["steps"],
                b["l2"], b["loss"])

    def linear_head_forward(self, dtype, batch, nnz_support, nnz_query, trajectory, query_pred, stream,
                            device):
        self.calls.append("forward")
        traj, pred = _core.linear_head_forward(*self._args(dtype, batch, nnz_support, nnz_query), 1)
        _host_array(trajectory, traj.size, dtype)[:] = traj.ravel()
        _host_array(query_pred, pred.size, dtype)[:] = pred

    def linear_head_backward(self, dtype, batch, nnz_support, nnz_query, trajectory, grad_query_pred,
                             second_order, alpha_grad, out, stream, device):
        self.calls.append("backward")
        args = self._args(dtype, batch, nnz_support, nnz_query)
        n_users, d, steps = batch["n_users"], batch["d"], batch["steps"]
        traj = _host_array(trajectory, n_users * (steps + 1) * (d + 1), dtype).reshape(n_users, steps + 1, d + 1)
        gq = _host_array(grad_query_pred, nnz_query, dtype)
        g = _core.linear_head_backward(*args, traj.copy(), gq.copy(), second_order, alpha_grad=alpha_grad,
                                       num_threads=1)
        g["alpha_b"] = np.array([g["alpha_b"]], dtype=dtype)
        for key, value in g.items():
            _host_array(out[key], value.size, dtype)[:] = np.asarray(value, dtype=dtype).ravel()


@pytest.fixture
def host_cuda(monkeypatch):
    """The CUDA code path, on the CPU: CPU tensors play device tensors."""
    module = HostModule()
    monkeypatch.setattr(_gpu, "cuda_module", lambda: module)
    monkeypatch.setattr(_gpu, "stream_handle", lambda device: 0)
    monkeypatch.setattr(cpp_engine, "_on_cuda", lambda H: True)
    real = _gpu.resolve_device
    cpu = torch.device("cpu")  # device="cuda" takes the CUDA branch, on CPU tensors
    monkeypatch.setattr(_gpu, "resolve_device", lambda device, **kw: cpu if device == "cuda" else real(device, **kw))
    return module


def test_binding_reads_the_keys_the_wrappers_pass():
    path = ROOT / "cpp" / "cuda" / "bindings" / "adapt.cpp"
    if not path.exists():  # wheel tests run without the C++ sources
        pytest.skip("needs the repository's C++ sources")
    source = path.read_text()
    batch_keys = set(re.findall(r'a\["(\w+)"\]', source))
    out_keys = set(re.findall(r'out\["(\w+)"\]', source))
    pb = problem(0)
    args = device_args(pb, "cpu")
    assert set(adapt_ops._cuda_batch(**args, steps=1, l2=0.0, loss="mse")) == batch_keys
    assert out_keys == {"p0", "b0", "alpha_p", "alpha_b", "H", "c"}


@pytest.mark.parametrize("steps, second_order", [(0, True), (3, True), (3, False)])
@pytest.mark.parametrize("per_user, per_param", [(False, False), (True, True)])
def test_launch_wrappers_plumbing(host_cuda, steps, second_order, per_user, per_param):
    pb = problem(steps, per_user=per_user, per_param=per_param, dtype=np.float32)
    got = device_run(pb, steps, 0.05, second_order, "cpu")
    assert host_cuda.calls == ["forward", "backward"]
    assert_runs_match(got, cpu_run(pb, steps, 0.05, second_order), 1e-6)


def test_launch_wrappers_check_their_tensors(host_cuda):
    pb = problem(1)
    args = device_args(pb, "cpu")
    with pytest.raises(TypeError, match="c must have dtype"):
        adapt_ops.cuda_linear_head_forward(**dict(args, c=args["c"].float()), steps=1, l2=0.0, loss="mse")
    with pytest.raises(ValueError, match="p0 must have shape"):
        adapt_ops.cuda_linear_head_forward(**dict(args, p0=args["p0"][:, :2].contiguous()), steps=1, l2=0.0,
                                           loss="mse")
    with pytest.raises(ValueError, match="contiguous"):
        adapt_ops.cuda_linear_head_forward(**dict(args, H=args["H"].t().contiguous().t()), steps=1, l2=0.0,
                                           loss="mse")
    assert host_cuda.calls == []


def test_public_op_plumbing(host_cuda):
    pb = problem(2, per_user=True, per_param=True)
    support = (pb["s_indptr"], pb["s_items"], pb["s_targets"])
    kw = dict(alpha=pb["alpha_p"], alpha_b=0.1, steps=4, l2=0.02, query=(pb["q_indptr"], pb["q_items"]))
    want = linear_head_adapt(pb["H"], pb["c"], support, pb["p0"], pb["b0"], **kw)
    got = linear_head_adapt(pb["H"], pb["c"], support, pb["p0"], pb["b0"], **kw, device="cuda")
    for name in ("p", "b", "query_pred", "trajectory"):
        assert torch.is_tensor(getattr(got, name))
        np.testing.assert_array_equal(getattr(got, name).numpy(), getattr(want, name), err_msg=name)


def test_public_op_plumbing_with_device_tensors(host_cuda, monkeypatch):
    # CPU tensors play CUDA tensors: the CSR stays a tensor tuple (checked by the kernels).
    monkeypatch.setattr(_gpu, "is_cuda_tensor", lambda x: torch.is_tensor(x))
    pb = problem(3, per_user=False, per_param=True)
    t = torch.from_numpy
    support = (pb["s_indptr"], pb["s_items"], pb["s_targets"])
    query = (pb["q_indptr"], pb["q_items"])
    want = linear_head_adapt(pb["H"], pb["c"], support, pb["p0"][0], pb["b0"][0], alpha=pb["alpha_p"],
                             alpha_b=0.1, steps=3, query=query)
    got = linear_head_adapt(t(pb["H"]), t(pb["c"]), tuple(map(t, support)), t(pb["p0"][0]), t(pb["b0"][:1]),
                            alpha=t(pb["alpha_p"]), alpha_b=None if pb["alpha_p"].size == 1 else 0.1, steps=3,
                            l2=0.0, loss="mse", query=tuple(map(t, query)), device="cuda")
    for name in ("p", "b", "query_pred", "trajectory"):
        np.testing.assert_array_equal(getattr(got, name).numpy(), getattr(want, name), err_msg=name)
    with pytest.raises(ValueError, match="query.indptr must have"):
        linear_head_adapt(t(pb["H"]), t(pb["c"]), tuple(map(t, support)), t(pb["p0"][0]), 0.0, alpha=0.1,
                          alpha_b=None, steps=1, l2=0.0, loss="mse",
                          query=(t(pb["q_indptr"][:-1]), t(pb["q_items"])), device="cuda")


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "metasgd"])
def test_engine_plumbing_matches_the_cpu_engine(algorithm, monkeypatch):
    batch = linear_tasks(20, 1, ragged=True)
    want = _meta_gradients(_learner(algorithm), batch)
    module = HostModule()
    monkeypatch.setattr(_gpu, "cuda_module", lambda: module)
    monkeypatch.setattr(_gpu, "stream_handle", lambda device: 0)
    monkeypatch.setattr(cpp_engine, "_on_cuda", lambda H: True)
    got = _meta_gradients(_learner(algorithm), batch)
    assert "forward" in module.calls
    _assert_same_gradients(got, want, 1e-12)


def test_engine_plumbing_conditioned_init_and_padded_batches(host_cuda):
    batch = _batch_with_features(12, 2)
    padded = batch.select(np.arange(12))  # no CSR: un-padded from the tensors
    padded.user_features = batch.user_features
    assert padded.csr is None
    want = None
    for b in (batch, padded):
        got = _meta_gradients(_learner("maml", features=4), b)
        want = want or got
        _assert_same_gradients(got, want, 1e-12)


def test_device_csr_matches_the_cpu_csr():
    for batch in (linear_tasks(9, 4, ragged=True), linear_tasks(9, 4, ragged=True).select(np.arange(9))):
        tasks, rows = cpp_engine.batch_to_csr(batch, torch.float32)
        dev, dev_rows = cpp_engine.batch_to_device_csr(batch, torch.float32, torch.device("cpu"))
        assert set(dev) == set(tasks)
        for key, value in tasks.items():
            assert np.array_equal(dev[key].numpy(), value), key
            assert dev[key].is_contiguous()
        assert torch.equal(dev_rows, rows)
        again, _ = cpp_engine.batch_to_device_csr(batch, torch.float32, torch.device("cpu"))
        assert again is dev  # built once per batch


def test_trainer_plumbing_matches_cpu(host_cuda, monkeypatch):
    train = linear_tasks(32, 0)

    def fit():
        model = MetaMF(N_ITEMS, dim=DIM, random_state=2, dtype=torch.float64, global_bias=3.0)
        trainer = MetaTrainer(model, algorithm="metasgd", inner_steps=2, inner_lr=0.1, outer_lr=0.02,
                              meta_batch_size=16, random_state=2, engine="cpp")
        return trainer.fit(train, linear_tasks(8, 1), epochs=2, show_progress=False)

    got = fit()
    monkeypatch.setattr(cpp_engine, "_on_cuda", lambda H: False)
    want = fit()
    for (name, x), (_, y) in zip(got.learner.state_dict().items(), want.learner.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14, msg=name)
    assert host_cuda.calls.count("backward") == 4
