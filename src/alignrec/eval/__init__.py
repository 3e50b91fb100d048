"""The one place where recommendations are scored (HR@K, NDCG@K, full ranking).

Every stage — classic baselines, the LLM's beam search, ``alignrec evaluate-predictions`` —
turns its output into ranks of the target item and calls :func:`metrics_from_ranks`.
"""

from alignrec.eval.metrics import (
    DEFAULT_KS,
    EvalResult,
    evaluate_rankings,
    metrics_from_ranks,
    ranks_from_scores,
    ranks_in_lists,
)

__all__ = ["DEFAULT_KS", "EvalResult", "evaluate_rankings", "metrics_from_ranks", "ranks_from_scores", "ranks_in_lists"]
