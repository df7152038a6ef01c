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
