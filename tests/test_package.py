"""The package itself: version, build facts, threads, lazy torch, console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import threadpoolctl

import metarec_fast as mf
from metarec_fast._config import config, resolve_num_threads

ROOT = Path(__file__).resolve().parents[1]


def test_version_matches_pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert mf.__version__ == meta["project"]["version"]


def test_build_flags_are_bools():
    assert isinstance(mf.HAS_OPENMP, bool)
    assert isinstance(mf.HAS_CUDA, bool)
    cfg = config()
    assert cfg["version"] == mf.__version__
    assert cfg["native_build"] in (True, False)


def test_show_config_prints_every_fact(capsys):
    mf.show_config()
    out = capsys.readouterr().out
    for key in ("version", "compiler", "openmp", "simd_in_use", "cuda", "num_threads"):
        assert key in out


def test_set_and_get_num_threads():
    before = mf.get_num_threads()
    try:
        mf.set_num_threads(1)
        assert mf.get_num_threads() == 1
        mf.set_num_threads(3)
        assert mf.get_num_threads() == 3
    finally:
        mf.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, -100])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=str(bad)):
        mf.set_num_threads(bad)


def test_set_num_threads_rejects_non_int():
    with pytest.raises(TypeError):
        mf.set_num_threads(2.0)


def test_resolve_num_threads_semantics():
    assert resolve_num_threads(None) == 0
    assert resolve_num_threads(-1) == -1
    assert resolve_num_threads(4) == 4
    for bad in (0, -2):
        with pytest.raises(ValueError, match=str(bad)):
            resolve_num_threads(bad)
    with pytest.raises(TypeError):
        resolve_num_threads("2")


@pytest.mark.skipif(not mf.HAS_OPENMP, reason="built without OpenMP")
def test_threadpoolctl_sees_and_limits_the_openmp_pool():
    libs = threadpoolctl.threadpool_info()
    assert any(lib["user_api"] == "openmp" for lib in libs), libs
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert mf.get_num_threads() == 1
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert mf.get_num_threads() == 2


def test_import_does_not_import_torch():
    code = "import sys, metarec_fast, metarec_fast.ops; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_console_script_prints_version():
    out = subprocess.run(
        [sys.executable, "-m", "metarec_fast", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert mf.__version__ in out.stdout
