"""Shared fixtures.

``ml100k_path``: the read-only copy of MovieLens 100K in ``../shared/data/ml-100k``
(beside the repository, for every developer and in CI), or the folder named by
``METAREC_TEST_ML100K``. Tests that need it are skipped when it is absent, except
in CI (``CI`` set), where its absence is a failure. Never copy MovieLens into the
repository: its license forbids redistribution.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _ml100k_candidate() -> Path:
    env = os.environ.get("METAREC_TEST_ML100K")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    path = _ml100k_candidate()
    if not (path / "u.data").is_file():
        msg = (f"MovieLens 100K not found at {path} (expected {path / 'u.data'}); "
               "set METAREC_TEST_ML100K to its folder")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def ml100k(ml100k_path):
    from metarec_fast.data import load_ml100k

    return load_ml100k(ml100k_path)


# ---------------------------------------------------------------- devices
# One parameter for the tests every device must pass (bad inputs, edge cases,
# gradients): "cpu"; "cuda" where metarec-fast was built with CUDA and a GPU is
# present; and "cuda-emulated" everywhere a C++ compiler is: the real CUDA
# bindings and kernels under the host emulation (tests/cuda_backends.py), so
# the CUDA branch of every wrapper runs in CPU-only CI.
DEVICES = ["cpu", "cuda-emulated", "cuda"]


@pytest.fixture(scope="session")
def emulated_cuda_module(tmp_path_factory):
    import cuda_backends

    reason = cuda_backends.unavailable_reason()
    if reason:
        pytest.skip(f"emulated CUDA backend: {reason}")
    return cuda_backends.build(tmp_path_factory.mktemp("cuda_emu_module"))


@pytest.fixture
def emulated_cuda(monkeypatch, emulated_cuda_module):
    """``device="cuda"`` runs the real CUDA wrappers and kernels, emulated on the host."""
    pytest.importorskip("torch")
    import cuda_backends

    return cuda_backends.install(monkeypatch, emulated_cuda_module)


@pytest.fixture(params=DEVICES)
def device(request):
    """The device string to pass as ``device=``: "cpu" or "cuda" (real or emulated)."""
    if request.param == "cpu":
        return "cpu"
    if request.param == "cuda":
        from metarec_fast import _gpu

        if not _gpu.cuda_available():
            pytest.skip("needs metarec-fast built with METAREC_CUDA=ON and a CUDA device")
        return "cuda"
    request.getfixturevalue("emulated_cuda")
    return "cuda"
