"""Meta-learning algorithms and inner-loop engines (import needs torch)."""

from .algorithms import ALGORITHMS, MetaLearner
from .batch import TaskBatch
from .inner import adapt, query_losses, task_predictions
from .scorer import MetaScorer
from .trainer import DivergenceError, MetaTrainer

__all__ = [
    "ALGORITHMS",
    "DivergenceError",
    "MetaLearner",
    "MetaScorer",
    "MetaTrainer",
    "TaskBatch",
    "adapt",
    "query_losses",
    "task_predictions",
]
