"""metarec-fast: meta-learned recommendation under cold start.

A new user (or item) arrives with a handful of interactions and the model
adapts to it in a few gradient steps. Meta-training runs in PyTorch; the hot
paths (embedding lookups, inner-loop steps, top-k ranking, metrics) run in a
C++17/OpenMP core.

Importing this package never imports torch.
"""

from __future__ import annotations

from . import _core
from ._config import get_num_threads, set_num_threads, show_config

__version__: str = _core.__version__
HAS_OPENMP: bool = bool(_core.has_openmp)

# Submodules load on first use (PEP 562) so `import metarec_fast` stays light.
_SUBMODULES = ("baselines", "data", "datasets", "evaluation", "experiments", "meta", "metrics",
               "models", "ops", "serving")


def __getattr__(name: str):
    if name == "HAS_CUDA":
        # The CUDA kernels were compiled in (module _cuda) and a device is
        # present now. Asked lazily: the question loads the CUDA driver.
        from ._gpu import cuda_available

        return cuda_available()
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'metarec_fast' has no attribute {name!r}")


__all__ = [
    "HAS_CUDA",
    "HAS_OPENMP",
    "__version__",
    "baselines",
    "data",
    "datasets",
    "evaluation",
    "experiments",
    "meta",
    "metrics",
    "models",
    "ops",
    "serving",
    "get_num_threads",
    "set_num_threads",
    "show_config",
]
