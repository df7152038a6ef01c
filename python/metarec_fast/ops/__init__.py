"""Validated wrappers over the compiled kernels.

Inputs may be numpy arrays or CPU torch tensors (results come back in the
same kind); everything is validated here with the documented exception types
before the C++ core runs with the GIL released.
"""

from __future__ import annotations

from .topk import topk, topk_dot

__all__: list[str] = ["topk", "topk_dot"]
