"""The one place where recommendations are scored (HR@K, NDCG@K, full ranking).

Every stage — classic baselines, the LLM's beam search, ``alignrec evaluate-predictions`` —
turns its output into ranks of the target item and calls :func:`metrics_from_ranks`; tables
that compare models add bootstrap intervals over users (:mod:`alignrec.metrics.bootstrap`) of
the per-user vectors :func:`per_user_metrics` gives.
"""

from alignrec.metrics.bootstrap import bootstrap_interval, paired_bootstrap_interval
from alignrec.metrics.metrics import (
    DEFAULT_KS,
    EvalResult,
    evaluate_rankings,
    metrics_from_ranks,
    per_user_metrics,
    ranks_from_scores,
    ranks_in_lists,
)

__all__ = [
    "DEFAULT_KS", "EvalResult", "bootstrap_interval", "evaluate_rankings", "metrics_from_ranks", "paired_bootstrap_interval",
    "per_user_metrics", "ranks_from_scores", "ranks_in_lists",
]
