"""The CI-friendly CUDA compile check: no GPU needed, only nvcc.

* With nvcc: configure with METAREC_CUDA=ON for one architecture (sm_90) into
  a temporary folder, build only the ``_cuda`` module, and import it (it must
  load without a driver and report ``device_count() >= 0``).
* METAREC_CUDA=ON with no CUDA compiler reachable fails with our message, and
  a bogus METAREC_CUDA value fails clearly (both at configure time).

Every subprocess is time-bounded. Skipped where the sources or the tools are
absent (e.g. a wheel test that copies only tests/).
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
CMAKE = shutil.which("cmake")
NINJA = shutil.which("ninja")
NVCC = os.environ.get("CUDACXX") or shutil.which("nvcc")

CONFIGURE_TIMEOUT = 120  # s
BUILD_TIMEOUT = 240  # s; ~1.5 min on 2 cores for one architecture

needs_sources = pytest.mark.skipif(
    not (REPO / "CMakeLists.txt").is_file() or not (REPO / "cpp" / "cuda").is_dir(),
    reason="needs the source tree (CMakeLists.txt, cpp/cuda)",
)
needs_cmake = pytest.mark.skipif(CMAKE is None, reason="needs cmake")


def _pybind11_dir() -> str:
    pybind11 = pytest.importorskip("pybind11")
    return pybind11.get_cmake_dir()


def _configure_cmd(build_dir: Path, *defines: str) -> list[str]:
    cmd = [CMAKE, "-S", str(REPO), "-B", str(build_dir),
           f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={_pybind11_dir()}",
           "-DCMAKE_BUILD_TYPE=Release"]
    if NINJA:
        cmd += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={NINJA}"]
    return cmd + list(defines)


def _run(cmd: list[str], timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\n{exc.stdout}\n{exc.stderr}")


def _env_without_nvcc() -> dict:
    """This environment with no CUDA compiler on PATH or in CUDACXX / CUDA_PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDACXX", "CUDA_PATH", "CUDA_HOME", "CUDAToolkit_ROOT", "CMAKE_ARGS")}
    keep = []
    for part in env.get("PATH", "").split(os.pathsep):
        if part and not (Path(part) / "nvcc").exists():
            keep.append(part)
    env["PATH"] = os.pathsep.join(keep)
    return env


@needs_sources
@needs_cmake
@pytest.mark.skipif(NVCC is None, reason="needs nvcc (CUDA toolkit) on PATH or in CUDACXX")
def test_cuda_module_compiles_and_imports(tmp_path):
    build = tmp_path / "build"
    conf = _run(_configure_cmd(build, "-DMETAREC_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90",
                               f"-DCMAKE_CUDA_COMPILER={NVCC}"), CONFIGURE_TIMEOUT)
    assert conf.returncode == 0, conf.stdout[-4000:] + conf.stderr[-4000:]
    jobs = str(max(1, min(os.cpu_count() or 1, 4)))
    built = _run([CMAKE, "--build", str(build), "--target", "_cuda", "-j", jobs], BUILD_TIMEOUT)
    out = built.stdout + built.stderr
    assert built.returncode == 0, out[-6000:]
    # nvcc / host compiler warnings in our CUDA sources are bugs waiting to happen
    warnings = [line for line in out.splitlines()
                if "warning" in line.lower() and "cpp/cuda" in line]
    assert not warnings, "\n".join(warnings[:20])
    modules = list(build.glob("_cuda*.so")) + list(build.glob("_cuda*.pyd"))
    assert modules, f"no _cuda module in {build}"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import _cuda; "
        "n = _cuda.device_count(); assert isinstance(n, int) and n >= 0, n; "
        "assert _cuda.cuda_architectures == '90', _cuda.cuda_architectures; "
        "assert _cuda.runtime_version() >= 11000; "
        "assert hasattr(_cuda, 'topk_dot_f32') and hasattr(_cuda, 'topk_f64'); "
        "assert _cuda.topk_max_k == 1024; print(n)"
    )
    imp = _run([sys.executable, "-c", code, str(build)], 60)
    assert imp.returncode == 0, imp.stdout + imp.stderr


@needs_sources
@needs_cmake
def test_cuda_on_without_compiler_fails_clearly(tmp_path):
    proc = _run(_configure_cmd(tmp_path / "build", "-DMETAREC_CUDA=ON"), CONFIGURE_TIMEOUT,
                env=_env_without_nvcc())
    out = proc.stdout + proc.stderr
    if proc.returncode == 0 and "Check for working CUDA compiler" in out:
        pytest.skip("CMake still finds a CUDA compiler outside PATH on this machine")
    assert proc.returncode != 0, out[-3000:]
    assert "METAREC_CUDA=ON but no CUDA compiler was found" in out, out[-3000:]
    assert "CUDACXX" in out


@needs_sources
@needs_cmake
@pytest.mark.parametrize("value", ["bogus", "YES"])
def test_bad_metarec_cuda_value_fails_clearly(tmp_path, value):
    proc = _run(_configure_cmd(tmp_path / "build", f"-DMETAREC_CUDA={value}"), CONFIGURE_TIMEOUT,
                env=_env_without_nvcc())
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"METAREC_CUDA must be AUTO, ON or OFF, got '{value}'" in out, out[-3000:]
