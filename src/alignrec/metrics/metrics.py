"""Hit rate and NDCG with one relevant item per user, as pure functions.

With a single relevant item at 0-based rank r (r = -1: not in the list),
``HR@K = 1[0 <= r < K]`` and ``NDCG@K = 1[0 <= r < K] / log2(r + 2)`` (the ideal DCG is 1).
Means are taken over *all* evaluated users; users without a ranking count as misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
MISSING = -1


def per_user_metrics(ranks: np.ndarray | Sequence[int], ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-user HR@K and NDCG@K vectors (U,) from 0-based target ranks (-1 = target not retrieved).

    ``{"hr@1": ..., "ndcg@1": ..., "hr@5": ...}`` in K order; their means are
    :func:`metrics_from_ranks`, and they are what the bootstrap intervals resample
    (:mod:`alignrec.metrics.bootstrap`).
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of ranks, got shape {ranks.shape}")
    if (ranks < MISSING).any():
        raise ValueError(f"ranks must be >= 0 (or {MISSING} = not retrieved), got {int(ranks.min())}")
    found = ranks >= 0
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"K must be >= 1, got {k}")
        hit = found & (ranks < k)
        gain = np.zeros(ranks.shape, dtype=np.float64)
        gain[hit] = 1.0 / np.log2(ranks[hit] + 2.0)
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = gain
    return out


def metrics_from_ranks(ranks: np.ndarray | Sequence[int], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@K and NDCG@K from 0-based target ranks (-1 = target not retrieved).

    Returns ``{"hr@1": ..., "ndcg@1": ..., "hr@5": ...}`` in K order. An empty input is an error:
    a metric over no users is meaningless and usually hides a bug upstream.
    """
    return {name: float(values.mean()) for name, values in per_user_metrics(ranks, ks).items()}


def ranks_in_lists(rankings: Sequence[Sequence[int]] | np.ndarray, targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """0-based position of each target in its ranked list (first occurrence; -1 if absent).

    Lists are scored as given: duplicates and unknown entries keep their positions, so they
    push the target down exactly as they would in front of a user.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if isinstance(rankings, np.ndarray) and rankings.ndim == 2:
        if rankings.shape[0] != targets.shape[0]:
            raise ValueError(f"{rankings.shape[0]} rankings for {targets.shape[0]} targets")
        match = rankings == targets[:, None]  # (U, K)
        first = match.argmax(axis=1)
        return np.where(match.any(axis=1), first, MISSING).astype(np.int64)
    if len(rankings) != len(targets):
        raise ValueError(f"{len(rankings)} rankings for {len(targets)} targets")
    out = np.full(len(targets), MISSING, dtype=np.int64)
    for row, (ranking, target) in enumerate(zip(rankings, targets, strict=True)):
        for position, item in enumerate(ranking):
            if item == target:
                out[row] = position
                break
    return out


def ranks_from_scores(
    scores: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    exclude: torch.Tensor | np.ndarray | None = None,
) -> np.ndarray:
    """Full-ranking 0-based rank of each target from a (B, I) score matrix (higher = better).

    The rank is the target's position in a stable descending sort of the row: the number of
    items scoring strictly higher, plus the items with an *equal* score and a lower index.
    Ties are thus neither in the target's favour (a constant-score model would get HR = 1)
    nor random (results would not be reproducible). ``exclude`` (B, I) bool marks items
    that must not compete, e.g. the user's history; it never removes the target itself.
    NaN scores are an error. Works on torch tensors (any device) and numpy arrays.
    """
    if isinstance(scores, np.ndarray):
        return _ranks_from_scores_numpy(scores, np.asarray(targets), None if exclude is None else np.asarray(exclude))
    import torch

    scores_t = torch.as_tensor(scores)
    targets_t = torch.as_tensor(targets, dtype=torch.long, device=scores_t.device)
    _check_score_shapes(tuple(scores_t.shape), tuple(targets_t.shape), exclude)
    if int(targets_t.min()) < 0 or int(targets_t.max()) >= scores_t.shape[1]:
        raise ValueError(f"targets must be item indices in [0, {scores_t.shape[1]})")
    if torch.isnan(scores_t).any():
        raise ValueError("scores contain NaN; a ranking over NaN scores is meaningless")
    target_scores = scores_t.gather(1, targets_t[:, None])  # (B, 1)
    index = torch.arange(scores_t.shape[1], device=scores_t.device)  # (I,)
    ahead = (scores_t > target_scores) | ((scores_t == target_scores) & (index[None, :] < targets_t[:, None]))  # (B, I)
    if exclude is not None:
        ahead &= ~torch.as_tensor(exclude, device=scores_t.device).to(torch.bool)
    return ahead.sum(dim=1).cpu().numpy().astype(np.int64)


def _check_score_shapes(scores: tuple[int, ...], targets: tuple[int, ...], exclude: Any) -> None:
    if len(scores) != 2 or len(targets) != 1 or scores[0] != targets[0] or scores[0] == 0:
        raise ValueError(f"scores must be (B, I) with B = len(targets) > 0; got scores {scores}, targets {targets}")
    if exclude is not None and tuple(exclude.shape) != scores:
        raise ValueError(f"exclude must have the shape of scores {scores}, got {tuple(exclude.shape)}")


def _ranks_from_scores_numpy(scores: np.ndarray, targets: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    targets = targets.astype(np.int64)
    _check_score_shapes(scores.shape, targets.shape, exclude)
    if targets.min() < 0 or targets.max() >= scores.shape[1]:
        raise ValueError(f"targets must be item indices in [0, {scores.shape[1]})")
    if np.issubdtype(scores.dtype, np.floating) and np.isnan(scores).any():
        raise ValueError("scores contain NaN; a ranking over NaN scores is meaningless")
    target_scores = np.take_along_axis(scores, targets[:, None], axis=1)  # (B, 1)
    index = np.arange(scores.shape[1])  # (I,)
    ahead = (scores > target_scores) | ((scores == target_scores) & (index[None, :] < targets[:, None]))  # (B, I)
    if exclude is not None:
        ahead &= ~exclude.astype(bool)
    return ahead.sum(axis=1).astype(np.int64)


@dataclass
class EvalResult:
    """Metrics plus the counts a reader needs to trust them."""

    metrics: dict[str, float]
    users: int
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "users": self.users, "counts": self.counts}


def evaluate_rankings(
    rankings: Sequence[Sequence[int]],
    targets: Sequence[int] | np.ndarray,
    num_items: int,
    ks: Sequence[int] = DEFAULT_KS,
) -> EvalResult:
    """Score ranked lists of item indices against targets, counting what is wrong with the lists.

    ``counts`` reports duplicates (repeat entries within a list), unknown items (outside
    ``0..num_items-1``), lists shorter than max(K) and empty lists; none of them is removed.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if len(rankings) != len(targets):
        raise ValueError(f"{len(rankings)} rankings for {len(targets)} targets")
    if targets.size and (targets.min() < 0 or targets.max() >= num_items):
        raise ValueError(f"targets must be item indices in [0, {num_items})")
    duplicates = unknown = short = empty = 0
    longest = max(ks)
    for ranking in rankings:
        seen: set[int] = set()
        if len(ranking) == 0:
            empty += 1
        if len(ranking) < longest:
            short += 1
        for item in ranking:
            if item in seen:
                duplicates += 1
            seen.add(item)
            if not 0 <= item < num_items:
                unknown += 1
    ranks = ranks_in_lists(rankings, targets)
    counts = {"duplicate_items": duplicates, "unknown_items": unknown, "short_lists": short, "empty_lists": empty}
    return EvalResult(metrics=metrics_from_ranks(ranks, ks), users=len(targets), counts=counts)
