"""Device dispatch rules (metarec_fast._gpu) and their errors, on any machine.

No GPU is needed: CUDA tensors are imitated by a stand-in that looks like one
to ``_gpu.is_cuda_tensor``, and a build without the CUDA module is imitated
by hiding ``metarec_fast._cuda``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import metarec_fast
from metarec_fast import _gpu, ops


class FakeCudaTensor:
    """Enough of a torch CUDA tensor for the device rules (never computed on)."""

    __module__ = "torch"

    def __init__(self, index: int = 0):
        self.device = f"cuda:{index}"
        self.is_cuda = True

    def detach(self):
        return self


@pytest.fixture
def without_cuda_module(monkeypatch):
    """This process behaves as a build without metarec_fast._cuda."""
    monkeypatch.setitem(sys.modules, "metarec_fast._cuda", None)  # import -> ImportError
    monkeypatch.delattr(metarec_fast, "_cuda", raising=False)
    _gpu.built_with_cuda.cache_clear()
    _gpu.device_count.cache_clear()
    yield
    _gpu.built_with_cuda.cache_clear()
    _gpu.device_count.cache_clear()


def _data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((4, 3)).astype(np.float32),
            rng.standard_normal((9, 3)).astype(np.float32))


def test_cpu_inputs_stay_on_cpu():
    assert _gpu.resolve_device(None, a=np.zeros(3), b=None) is None
    assert _gpu.resolve_device("cpu", a=np.zeros(3)) is None
    q, it = _data()
    a = ops.topk_dot(q, it, 3)
    b = ops.topk_dot(q, it, 3, device="cpu")
    np.testing.assert_array_equal(a[0], b[0])
    s = q @ it.T
    np.testing.assert_array_equal(ops.topk(s, 2)[0], ops.topk(s, 2, device="cpu")[0])


@pytest.mark.parametrize("device", ["gpu", "cuda0", "CUDA", "mps", 0, "cuda:x", ""])
def test_bad_device_string(device):
    with pytest.raises(ValueError, match="device must be None, 'cpu', 'cuda' or 'cuda:N'"):
        _gpu.resolve_device(device, a=np.zeros(2))


def test_bad_device_through_ops():
    q, it = _data()
    with pytest.raises(ValueError, match="device must be"):
        ops.topk_dot(q, it, 2, device="gpu")
    with pytest.raises(ValueError, match="device must be"):
        ops.topk(q @ it.T, 2, device="tpu")


def test_built_without_cuda_errors(without_cuda_module):
    assert not _gpu.built_with_cuda()
    assert _gpu.device_count() == 0
    assert not _gpu.cuda_available()
    assert metarec_fast.HAS_CUDA is False
    assert _gpu.info() == {"cuda": "not built"}
    with pytest.raises(RuntimeError, match="metarec-fast was built without CUDA"):
        _gpu.cuda_module()
    for device in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(RuntimeError, match="built without CUDA"):
            _gpu.resolve_device(device, a=np.zeros(2))
    q, it = _data()
    with pytest.raises(RuntimeError, match="built without CUDA"):
        ops.topk_dot(q, it, 2, device="cuda")
    with pytest.raises(RuntimeError, match="built without CUDA"):
        ops.topk(q @ it.T, 2, device="cuda")
    # CUDA tensors (device=None) are asked for the GPU just as explicitly.
    with pytest.raises(RuntimeError, match="built without CUDA"):
        _gpu.resolve_device(None, a=FakeCudaTensor())
    # the CPU path is unaffected
    assert ops.topk_dot(q, it, 2)[0].shape == (4, 2)


def test_mixed_devices_are_an_error():
    with pytest.raises(ValueError, match="b is on the CPU but a is on cuda:0"):
        _gpu.resolve_device(None, a=FakeCudaTensor(), b=np.zeros(3))
    with pytest.raises(ValueError, match="device='cpu' but a is on cuda:0"):
        _gpu.resolve_device("cpu", a=FakeCudaTensor(), b=np.zeros(3))
    q, it = _data()
    with pytest.raises(ValueError, match="items is on the CPU but queries is on cuda:0"):
        ops.topk_dot(FakeCudaTensor(), it, 2)
    with pytest.raises(ValueError, match="item_bias is on the CPU but queries is on cuda"):
        ops.topk_dot(FakeCudaTensor(), FakeCudaTensor(), 2, item_bias=np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="device='cpu' but scores is on cuda:0"):
        ops.topk(FakeCudaTensor(), 2, device="cpu")
    # CUDA exclusions with CPU scores: also mixed
    with pytest.raises(ValueError, match="scores is on the CPU but exclude is on cuda:0"):
        ops.topk(q @ it.T, 2, exclude=(FakeCudaTensor(), FakeCudaTensor()))


def test_no_device_present():
    # Built with CUDA but no usable GPU here: a clear RuntimeError, never the CPU.
    if not _gpu.built_with_cuda():
        pytest.skip("this build has no CUDA module")
    if _gpu.cuda_available():
        pytest.skip("a CUDA device is present")
    q, it = _data()
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        ops.topk_dot(q, it, 2, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        ops.topk(q @ it.T, 2, device="cuda:0")
    assert metarec_fast.HAS_CUDA is False
    assert "device(s)" in _gpu.info()["cuda"]


def test_has_cuda_is_a_bool_and_config_mentions_cuda(capsys):
    assert isinstance(metarec_fast.HAS_CUDA, bool)
    assert metarec_fast.HAS_CUDA == _gpu.cuda_available()
    metarec_fast.show_config()
    assert "cuda" in capsys.readouterr().out.lower()


def test_cpu_path_never_imports_torch():
    code = """
import sys
import numpy as np
from metarec_fast import ops
q = np.ones((3, 2), np.float32); it = np.ones((5, 2), np.float32)
ops.topk_dot(q, it, 2)
ops.topk_dot(q, it, 2, device="cpu", exclude=(np.array([0, 1, 1, 1]), np.array([4])))
ops.topk(q @ it.T, 2, device=None)
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ---------------------------------------------------------------- wrapper wiring
# The CUDA wrappers' plumbing (argument order, dtype suffix, shapes, exclusion
# transfer, output allocation) checked on the CPU: "device" memory is CPU torch
# memory and a stand-in _cuda module runs the CPU kernels on the raw pointers.


class PointerCore:
    """Implements _cuda.topk_* / topk_dot_* with the CPU core, through pointers."""

    topk_max_k = 1024

    def __init__(self):
        self.calls = []

    @staticmethod
    def _arr(address, shape, dtype):
        import ctypes

        n = int(np.prod(shape))
        if n == 0:
            return np.zeros(shape, dtype)
        buf = (ctypes.c_char * (n * np.dtype(dtype).itemsize)).from_address(address)
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def _excl(self, indptr, indices, nnz, n_rows):
        if indptr == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return self._arr(indptr, (n_rows + 1,), np.int64).copy(), self._arr(indices, (nnz,), np.int64).copy()

    def _topk(self, dtype, scores, n, m, k, indptr, indices, nnz, out_ids, out_vals, stream, device,
              slices=0):
        from metarec_fast import _core

        self.calls.append(("topk", np.dtype(dtype).name, n, m, k, nnz, stream, device, slices))
        s = self._arr(scores, (n, m), dtype).copy()
        ip, ix = self._excl(indptr, indices, nnz, n)
        fn = _core.topk_f32 if dtype == np.float32 else _core.topk_f64
        ids, vals = fn(s, k, ip, ix, 1)
        self._arr(out_ids, (n, k), np.int64)[...] = ids
        self._arr(out_vals, (n, k), np.float32)[...] = vals

    def _topk_dot(self, dtype, q, nq, it, ni, d, bias, k, indptr, indices, nnz, out_ids, out_vals,
                  stream, device, slices=0):
        from metarec_fast import _core

        self.calls.append(("topk_dot", np.dtype(dtype).name, nq, ni, d, bias != 0, k, nnz, slices))
        qa = self._arr(q, (nq, d), dtype).copy()
        ia = self._arr(it, (ni, d), dtype).copy()
        ba = None if bias == 0 else self._arr(bias, (ni,), dtype).copy()
        ip, ix = self._excl(indptr, indices, nnz, nq)
        fn = _core.topk_dot_f32 if dtype == np.float32 else _core.topk_dot_f64
        ids, vals = fn(qa, ia, k, ba, ip, ix, 1)
        self._arr(out_ids, (nq, k), np.int64)[...] = ids
        self._arr(out_vals, (nq, k), np.float32)[...] = vals

    def topk_f32(self, *a):
        self._topk(np.float32, *a)

    def topk_f64(self, *a):
        self._topk(np.float64, *a)

    def topk_dot_f32(self, *a):
        self._topk_dot(np.float32, *a)

    def topk_dot_f64(self, *a):
        self._topk_dot(np.float64, *a)


@pytest.fixture
def pointer_core(monkeypatch):
    import importlib

    torch = pytest.importorskip("torch")
    topk_mod = importlib.import_module("metarec_fast.ops.topk")  # ops.topk is the function

    core = PointerCore()
    cpu = torch.device("cpu")
    monkeypatch.setattr(_gpu, "cuda_module", lambda: core)
    monkeypatch.setattr(_gpu, "resolve_device", lambda device, **inputs: cpu if device == "fake" else None)
    monkeypatch.setattr(_gpu, "stream_handle", lambda device: 12345)
    return core, topk_mod


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_wrappers_pass_the_right_pointers(pointer_core, dtype):
    import scipy.sparse as sp

    core, topk_mod = pointer_core
    rng = np.random.default_rng(1)
    q = rng.standard_normal((7, 5)).astype(dtype)
    it = rng.standard_normal((40, 5)).astype(dtype)
    b = rng.standard_normal(40).astype(dtype)
    excl = sp.random(7, 40, density=0.2, format="csr", random_state=2)
    ids, vals = ops.topk_dot(q, it, 6, item_bias=b, exclude=excl, device="fake")
    rids, rvals = ops.topk_dot(q, it, 6, item_bias=b, exclude=excl)
    np.testing.assert_array_equal(ids.numpy(), rids)
    np.testing.assert_array_equal(vals.numpy(), rvals)
    assert core.calls[-1] == ("topk_dot", np.dtype(dtype).name, 7, 40, 5, True, 6, excl.nnz, 0)
    ids, _ = ops.topk_dot(q, it, 50, device="fake")  # no bias, no exclusions, k > items
    np.testing.assert_array_equal(ids.numpy(), ops.topk_dot(q, it, 50)[0])
    s = q @ it.T
    unsorted = (np.array([0, 3, 3, 3, 3, 3, 3, 5]), np.array([9, 2, 9, 30, 1]))
    ids, vals = ops.topk(s, 4, exclude=unsorted, device="fake")
    rids, rvals = ops.topk(s, 4, exclude=unsorted)
    np.testing.assert_array_equal(ids.numpy(), rids)
    np.testing.assert_array_equal(vals.numpy(), rvals)
    assert core.calls[-1] == ("topk", np.dtype(dtype).name, 7, 40, 4, 5, 12345, None, 0)
    # the private entry points forward `slices`
    topk_mod._topk_cuda(s, 3, None, topk_mod._gpu.resolve_device("fake"), slices=5)
    assert core.calls[-1][-1] == 5
    # validation still happens before any "device" call
    n_calls = len(core.calls)
    with pytest.raises(ValueError, match="same number of columns"):
        ops.topk_dot(q, it[:, :3], 2, device="fake")
    with pytest.raises(IndexError, match="column 40"):
        ops.topk(s, 2, exclude=(np.array([0, 1, 1, 1, 1, 1, 1, 1]), np.array([40])), device="fake")
    with pytest.raises(ValueError, match=r"queries contains NaN or inf at index \(1, 2\)"):
        bad = q.copy()
        bad[1, 2] = np.nan
        ops.topk_dot(bad, it, 2, device="fake")
    assert len(core.calls) == n_calls
