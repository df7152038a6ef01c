"""Models the meta-learners adapt (import needs torch)."""

from .base import MetaModel, pointwise_loss
from .melu import MeLU
from .mf import MetaMF

__all__ = ["MeLU", "MetaMF", "MetaModel", "pointwise_loss"]
