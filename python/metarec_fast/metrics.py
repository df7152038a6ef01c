"""Rating and ranking metrics over many users (C++ backed).

The wrappers live beside the other op wrappers, in :mod:`metarec_fast.ops.metrics`;
this module keeps their public names where users import them.
"""

from __future__ import annotations

from .ops.metrics import RANKING_METRICS, MetricResult, query_ndcg, ranking, rating

__all__ = ["RANKING_METRICS", "MetricResult", "query_ndcg", "ranking", "rating"]
