"""Confidence intervals over users, as pure functions: per-user metric vectors in, interval out.

A figure such as NDCG@10 is the mean of a per-user vector
(:func:`alignrec.metrics.metrics.per_user_metrics`). Its 95%
interval is the percentile bootstrap over users: draw the users with replacement ``resamples``
times, take the mean of each draw, and report the 2.5% and 97.5% quantiles of those means. Two
models scored on the *same* users are compared by the paired bootstrap: each draw takes the same
users for both, so the interval is that of the mean per-user difference (much narrower than
two separate intervals suggest, because most of the spread is between users, not models).
Seeded: the same vectors and seed always give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
# resampled users held in memory at once (resamples x users int64 indices)
_CHUNK_ELEMENTS = 1 << 22


def bootstrap_means(values: np.ndarray | Sequence[float], resamples: int = DEFAULT_RESAMPLES,
                    seed: int = DEFAULT_SEED) -> np.ndarray:
    """Means of ``resamples`` draws of the users with replacement (resamples,).

    Draw r is ``values[indices[r]]`` with ``indices = default_rng(seed).integers(0, U, (resamples, U))``,
    generated in row blocks so that memory stays bounded for many users.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"expected a non-empty 1-D vector of per-user values, got shape {values.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    users = values.size
    rows = max(1, _CHUNK_ELEMENTS // users)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        indices = rng.integers(0, users, size=(stop - start, users))  # (R, U)
        means[start:stop] = values[indices].mean(axis=1)
    return means


def bootstrap_interval(values: np.ndarray | Sequence[float], confidence: float = 0.95,
                       resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of a per-user vector: ``(low, high)``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    means = bootstrap_means(values, resamples, seed)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap_interval(first: np.ndarray | Sequence[float], second: np.ndarray | Sequence[float],
                              confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                              seed: int = DEFAULT_SEED) -> tuple[float, float]:
    """Interval of ``mean(first) - mean(second)`` for two models scored on the same users (same order):
    every draw takes the same users for both, i.e. the bootstrap of the per-user differences."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape:
        raise ValueError(f"paired vectors must hold the same users: shapes {first.shape} and {second.shape}")
    return bootstrap_interval(first - second, confidence, resamples, seed)


__all__ = ["bootstrap_interval", "bootstrap_means", "paired_bootstrap_interval"]
