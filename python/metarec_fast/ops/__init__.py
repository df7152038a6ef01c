"""Validated wrappers over the compiled kernels.

Inputs may be numpy arrays or CPU torch tensors (results come back in the
same kind); everything is validated here with the documented exception types
before the C++ core runs with the GIL released.
"""

from __future__ import annotations

from .adapt import linear_head_adapt
from .embedding import (
    embedding_bag,
    embedding_bag_backward,
    embedding_bag_weight_grad,
    gather,
    sparse_adagrad_,
    sparse_sgd_,
)
from .topk import topk, topk_dot

__all__: list[str] = [
    "embedding_bag",
    "embedding_bag_backward",
    "embedding_bag_weight_grad",
    "gather",
    "linear_head_adapt",
    "sparse_adagrad_",
    "sparse_sgd_",
    "topk",
    "topk_dot",
]
