"""How good a set of item codes is: balance, collisions, quantisation error, neighbourhoods.

All functions are pure (numpy in, numbers out) so the report, the benchmark and the tests
compute them the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from alignrec.tokenizer.assign import prefix_keys
from alignrec.tokenizer.collisions import prefix_collision_rates


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of a distribution given as counts."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def level_statistics(codes: np.ndarray, sizes: list[int]) -> list[dict[str, float]]:
    """Per level: used codes, utilisation, entropy (bits, and / log2 K), largest/smallest
    cell and the coefficient of variation of cell sizes over all K codes."""
    out = []
    for level, size in enumerate(sizes):
        counts = np.bincount(codes[:, level], minlength=size)
        used = int((counts > 0).sum())
        entropy = entropy_bits(counts)
        out.append(
            {
                "level": level + 1,
                "codes": int(size),
                "used": used,
                "utilisation": used / size,
                "entropy_bits": entropy,
                "normalised_entropy": entropy / math.log2(size) if size > 1 else 1.0,
                "max_items": int(counts.max()) if counts.size else 0,
                "min_items": int(counts.min()) if counts.size else 0,
                "cv_items": float(counts.std() / counts.mean()) if counts.mean() > 0 else 0.0,
            }
        )
    return out


def prefix_statistics(codes: np.ndarray, sizes: list[int]) -> list[dict[str, float]]:
    """Per prefix length l: distinct prefixes, entropy of the prefix distribution (bits and
    normalised by its maximum log2(min(N, prod K))), and the prefix collision rate."""
    num = codes.shape[0]
    collisions = prefix_collision_rates(codes)
    out = []
    for depth in range(1, codes.shape[1] + 1):
        _, counts = np.unique(prefix_keys(codes[:, :depth], sizes), return_counts=True)
        entropy = entropy_bits(counts)
        ceiling = math.log2(max(2, min(num, math.prod(sizes[:depth]))))
        out.append(
            {
                "length": depth,
                "distinct": int(len(counts)),
                "entropy_bits": entropy,
                "normalised_entropy": entropy / ceiling,
                "collision_rate": collisions[depth - 1],
                "largest_group": int(counts.max()) if len(counts) else 0,
            }
        )
    return out


def quantisation_errors(latent: np.ndarray, codes: np.ndarray, codebooks: list[np.ndarray]) -> list[float]:
    """Relative squared error after each level: mean ||z - sum_{j<=l} e_j||^2 / mean ||z - mean(z)||^2."""
    z = np.asarray(latent, dtype=np.float64)
    total = float(((z - z.mean(0)) ** 2).sum(1).mean()) or 1.0
    reconstruction = np.zeros_like(z)
    out = []
    for level, codebook in enumerate(codebooks):
        reconstruction += codebook[codes[:, level]]
        out.append(float(((z - reconstruction) ** 2).sum(1).mean()) / total)
    return out


def neighbourhood_agreement(
    vectors: np.ndarray,
    codes: np.ndarray,
    sizes: list[int],
    *,
    neighbours: int = 10,
    depths: tuple[int, ...] = (1, 2),
    max_queries: int = 4000,
    seed: int = 0,
) -> dict[str, Any]:
    """How often an item's nearest neighbours (cosine, in ``vectors``' space) share its code
    prefix of length l, against the chance level sum_p share(p)^2 of random pairs.

    Measures whether codes keep a space's neighbourhoods: use LLM text vectors to see how far
    codes reflect text (what the LLM alignment term is for), behaviour vectors for behaviour.
    """
    num = len(vectors)
    if num < neighbours + 2:
        return {}
    normed = np.asarray(vectors, dtype=np.float64)
    normed = normed / np.maximum(np.linalg.norm(normed, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(num, size=min(num, max_queries), replace=False))
    result: dict[str, Any] = {"neighbours": neighbours, "queries": int(len(queries))}
    nearest = np.empty((len(queries), neighbours), dtype=np.int64)
    for start in range(0, len(queries), 1024):
        chunk = queries[start : start + 1024]
        similarity = normed[chunk] @ normed.T  # (q, N)
        similarity[np.arange(len(chunk)), chunk] = -np.inf  # not its own neighbour
        part = np.argpartition(-similarity, neighbours, axis=1)[:, :neighbours]
        nearest[start : start + len(chunk)] = part
    for depth in depths:
        if depth > codes.shape[1]:
            continue
        keys = prefix_keys(codes[:, :depth], sizes)
        agree = (keys[nearest] == keys[queries][:, None]).mean()
        _, counts = np.unique(keys, return_counts=True)
        share = counts / counts.sum()
        chance = float((share**2).sum())
        result[f"prefix{depth}"] = float(agree)
        result[f"prefix{depth}_chance"] = chance
        result[f"prefix{depth}_lift"] = float(agree / chance) if chance > 0 else None
    return result
