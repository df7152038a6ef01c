"""Data: interaction logs, loaders, a synthetic generator, cold-start splits into tasks, batching.

Only numpy and scipy are imported here; pyarrow (and pandas, for the pandas
conversions) are imported by the functions that need them.
"""

from .batching import (
    CSRBatch,
    PaddedBatch,
    TaskArrays,
    batch_csr,
    batch_padded,
    csr_to_padded,
    iter_batches,
    make_batch,
)
from .features import Features
from .interactions import Interactions
from .loaders import load_ml1m, load_ml100k, load_movielens, load_movielens_csv, load_table
from .sampling import sample_negatives
from .splits import Split, TaskPart, TaskSet, cold_start_split, melu_split
from .synthetic import make_synthetic

__all__ = [
    "CSRBatch",
    "Features",
    "Interactions",
    "PaddedBatch",
    "Split",
    "TaskArrays",
    "TaskPart",
    "TaskSet",
    "batch_csr",
    "batch_padded",
    "cold_start_split",
    "csr_to_padded",
    "iter_batches",
    "load_ml100k",
    "load_ml1m",
    "load_movielens",
    "load_movielens_csv",
    "load_table",
    "make_batch",
    "make_synthetic",
    "melu_split",
    "sample_negatives",
]
