"""Shared by the CUDA kernel tests: they run only where metarec-fast was built
with CUDA and a device is present (benchmarks/gpu_check.sh on a GPU machine),
and skip elsewhere. The compile check (tests/test_cuda_build.py) needs only nvcc."""

import pytest

from metarec_fast import _gpu

requires_cuda = pytest.mark.skipif(
    not _gpu.cuda_available(),
    reason="needs metarec-fast built with METAREC_CUDA=ON and a CUDA device",
)
cuda_tests = [pytest.mark.cuda, requires_cuda]
