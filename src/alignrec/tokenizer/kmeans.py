"""k-means (k-means++ seeding + Lloyd iterations), numpy, deterministic for a seed.

Used to initialise every codebook level (the paper: "cluster the codes into centers based on
a batch of input item embeddings") and as the whole of the ``rqkmeans`` tokenizer.
"""

from __future__ import annotations

import numpy as np


def sq_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(N, d) x (K, d) -> (N, K) squared Euclidean distances (clamped at 0)."""
    out = (x * x).sum(1)[:, None] - 2.0 * (x @ centers.T) + (centers * centers).sum(1)[None, :]
    return np.maximum(out, 0.0, out=out)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next center is drawn with probability proportional to the
    squared distance to the nearest chosen one (uniformly when all distances are zero)."""
    num = x.shape[0]
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(num)
    nearest = ((x - x[chosen[0]]) ** 2).sum(1)  # (N,)
    for index in range(1, k):
        total = float(nearest.sum())
        if total > 0:
            # inverse-CDF sampling: one uniform draw per center, reproducible across numpy versions
            pick = int(np.searchsorted(np.cumsum(nearest), rng.random() * total, side="right"))
            chosen[index] = min(pick, num - 1)
        else:  # fewer distinct points than k: repeat a random point
            chosen[index] = rng.integers(num)
        nearest = np.minimum(nearest, ((x - x[chosen[index]]) ** 2).sum(1))
    return x[chosen].copy()


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    iterations: int = 50,
    seed: int = 0,
    tolerance: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``x`` (N, d) into ``k`` centers; returns ``(centers (k, d) float32, labels (N,))``.

    Empty clusters are re-seeded with the points farthest from their current center, so
    every center ends up used when there are at least ``k`` distinct points. Stops early
    when the mean squared error improves by less than ``tolerance`` (relative).
    """
    data = np.ascontiguousarray(x, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty (N, d) array, got {data.shape}")
    rng = np.random.default_rng(seed)
    centers = kmeans_plus_plus(data, k, rng)
    previous = np.inf
    for _ in range(max(1, iterations)):
        distances = sq_distances(data, centers)  # (N, k)
        labels = distances.argmin(1)
        error = distances[np.arange(len(labels)), labels]
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, data)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
        empty = np.nonzero(~filled)[0]
        if len(empty):
            # re-seed empty clusters from the worst-represented points (deterministic order)
            far = np.argsort(-error, kind="stable")[: len(empty)]
            centers[empty[: len(far)]] = data[far]
        mse = float(error.mean())
        if len(empty) == 0 and previous - mse <= tolerance * max(previous, 1e-12):
            break
        previous = mse
    labels = sq_distances(data, centers).argmin(1)
    return centers.astype(np.float32), labels.astype(np.int64)
