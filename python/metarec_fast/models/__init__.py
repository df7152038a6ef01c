"""Models the meta-learners adapt (import needs torch)."""

from .base import MetaModel, pointwise_loss
from .mf import MetaMF

__all__ = ["MetaMF", "MetaModel", "pointwise_loss"]
