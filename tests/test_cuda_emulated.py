"""The CUDA top-k kernels' logic, checked without a GPU.

cpp/cuda/topk.cu is compiled as C++ against tests/cuda_emu/cuda_runtime.h, a
host emulation of the CUDA runtime and intrinsics (each CUDA thread a fiber,
barriers and warp shuffles between fibers, resumed in a shuffled order; a
deadlock aborts), and tests/cuda_emu/emu_topk_main.cpp compares every result
bit for bit with a brute-force reference: shapes, ties, exclusions, slices,
launch groups (a tiny scratch budget forces several), padding, NaN reports.
This checks indexing, synchronisation and selection logic; it says nothing
about performance or real-GPU memory behaviour (tests/test_cuda_topk.py does,
on a GPU).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "cpp" / "cuda" / "topk.cu", REPO / "tests" / "cuda_emu" / "emu_topk_main.cpp"]
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


@pytest.mark.skipif(not all(p.is_file() for p in SOURCES), reason="needs the source tree")
@pytest.mark.skipif(CXX is None, reason="needs a C++20 compiler")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the emulation uses ucontext")
def test_cuda_topk_kernels_under_emulation(tmp_path):
    exe = tmp_path / "emu_topk"
    cmd = [CXX, "-std=c++20", "-O2", "-DMETAREC_TOPK_SCRATCH_BYTES=256",
           f"-I{REPO / 'tests' / 'cuda_emu'}", f"-I{REPO / 'cpp' / 'cuda'}",
           f"-I{REPO / 'cpp' / 'include'}", "-x", "c++", str(SOURCES[0]), "-x", "c++",
           str(SOURCES[1]), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    if built.returncode != 0 and "ucontext" in built.stderr:
        pytest.skip("no ucontext on this platform")
    assert built.returncode == 0, built.stderr[-4000:]
    run = subprocess.run([str(exe), "--quick"], capture_output=True, text=True, timeout=300)
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert run.returncode == 0 and not failed, "\n".join(failed) + run.stderr[-3000:]
    assert "0 failures" in run.stdout
