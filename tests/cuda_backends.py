"""The CUDA backend on machines without a GPU: the real bindings
(cpp/cuda/bindings) and launchers/kernels (cpp/cuda/*.cu) compiled with g++
against the host emulation of tests/cuda_emu (tests/cuda_emu/emu_module.cpp),
as a Python module with the real ``_cuda`` functions. With it installed
(:func:`install`), ``device="cuda"`` runs the wrappers' whole CUDA branch --
argument reading, the device check kernels, workspace sizing, launches -- on
CPU torch tensors, whose addresses stand in for device pointers. Nothing is
imitated but the device queries, the stream (0) and the device index (0).

Shared by the device-parametrised tests (the ``device`` fixture in conftest.py)
and the test_cuda_* files. The build takes ~15 s (cached per session).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EMU = REPO / "tests" / "cuda_emu"
CUDA_SRC = REPO / "cpp" / "cuda"
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")

SOURCES = [CUDA_SRC / "topk.cu", CUDA_SRC / "embedding.cu", CUDA_SRC / "adapt.cu",
           CUDA_SRC / "bindings" / "topk.cpp", CUDA_SRC / "bindings" / "embedding.cpp",
           CUDA_SRC / "bindings" / "adapt.cpp", EMU / "emu_module.cpp"]


def unavailable_reason() -> str | None:
    """Why the emulated backend cannot be built here (None when it can)."""
    if CXX is None:
        return "needs a C++17 compiler (g++)"
    if not sys.platform.startswith("linux"):
        return "the CUDA emulation needs Linux"
    if not all(p.is_file() for p in SOURCES):
        return "needs the source tree (cpp/cuda, tests/cuda_emu)"
    if importlib.util.find_spec("pybind11") is None:
        return "needs pybind11 (a build requirement) to compile the bindings"
    return None


def build(folder: Path) -> Any:
    """Compiles (in parallel) and imports the emulated module from ``folder``."""
    import pybind11

    digest = hashlib.sha1()
    for p in sorted(set(SOURCES) | set(CUDA_SRC.glob("*.h*")) | set(CUDA_SRC.glob("*.cuh"))
                    | set((CUDA_SRC / "bindings").glob("*.h")) | {EMU / "cuda_runtime.h"}):
        digest.update(p.read_bytes())
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    out = folder / f"_cuda_emu_{digest.hexdigest()[:12]}{suffix}"
    if not out.is_file():
        flags = ["-std=c++17", "-O1", "-fPIC", "-ffp-contract=off", "-Wno-unknown-pragmas", f"-I{EMU}",
                 f"-I{CUDA_SRC}", f"-I{REPO / 'cpp' / 'include'}", f"-I{pybind11.get_include()}",
                 f"-I{sysconfig.get_paths()['include']}"]

        def compile_one(src: Path) -> Path:
            obj = folder / (src.parent.name + "_" + src.name + ".o")
            lang = ["-x", "c++"] if src.suffix == ".cu" else []
            run = subprocess.run([CXX, *flags, "-c", *lang, str(src), "-o", str(obj)], capture_output=True,
                                 text=True, timeout=600)
            if run.returncode != 0:
                raise RuntimeError(f"{src.name} does not compile under the CUDA emulation:\n{run.stderr[-4000:]}")
            return obj

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            objs = list(pool.map(compile_one, SOURCES))
        tmp = out.with_suffix(".tmp")
        run = subprocess.run([CXX, "-shared", *map(str, objs), "-o", str(tmp)], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"the emulated CUDA module does not link:\n{run.stderr[-4000:]}")
        tmp.rename(out)
    spec = importlib.util.spec_from_file_location("_cuda_emu", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class Recorder:
    """The module, with each launcher call's short name recorded in ``calls``
    ("group" for embedding_group, "forward" for embedding_bag_forward_f32, ...)."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if not callable(value):
            return value
        short = name
        for prefix in ("embedding_bag_", "embedding_"):
            if short.startswith(prefix):
                short = short[len(prefix):]
                break
        for end in ("_f32", "_f64"):
            if short.endswith(end):
                short = short[: -len(end)]
        if short == "backward":
            short = None  # named by its `dense` argument below, as "dense" or "sparse"

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(short or ("dense" if args[9] else "sparse"))
            return value(*args, **kwargs)

        return call


def install(monkeypatch: Any, module: Any) -> Recorder:
    """Routes ``device="cuda"`` / ``"cuda:0"`` to the emulated module: CPU torch
    tensors play device memory; every other device argument behaves as usual."""
    import torch

    from metarec_fast import _gpu

    core = Recorder(module)
    real = _gpu.resolve_device
    cpu = torch.device("cpu")

    def resolve(device: Any, **inputs: Any) -> Any:
        if device is not None and str(device) in ("cuda", "cuda:0"):
            real("cpu", **inputs)  # the same argument checks (a CUDA tensor with device='cpu' ...)
            return cpu
        return real(device, **inputs)

    monkeypatch.setattr(_gpu, "cuda_module", lambda: core)
    monkeypatch.setattr(_gpu, "resolve_device", resolve)
    monkeypatch.setattr(_gpu, "launch_context", lambda device: (0, 0))
    from metarec_fast.meta import cpp_engine

    monkeypatch.setattr(cpp_engine, "_on_cuda", lambda H: True)  # the engine's Function takes its CUDA launcher
    return core
