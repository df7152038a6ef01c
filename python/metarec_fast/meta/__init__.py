"""Meta-learning algorithms and inner-loop engines (import needs torch)."""

from .._checkpoint import convert_checkpoint, load_model_file, save_model_file
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
    "convert_checkpoint",
    "load_model_file",
    "query_losses",
    "save_model_file",
    "task_predictions",
]
