"""Known-answer data and settings shared by the tokenizer tests (imported by name: tests are not a package)."""

from __future__ import annotations

import numpy as np

from alignrec.tokenizer.config import TokenizerConfig


def cluster_vectors(clusters: int = 8, per_cluster: int = 8, dim: int = 8, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters: centers 10 units apart on distinct axes (+/-), tiny noise.

    Rows are shuffled; returns ``(vectors (C * n, dim) float32, labels (C * n,))``.
    """
    rng = np.random.default_rng(seed)
    centers = np.zeros((clusters, dim))
    for c in range(clusters):
        centers[c, c % dim] = 10.0 if c < dim else -10.0
    labels = np.repeat(np.arange(clusters), per_cluster)
    vectors = centers[labels] + noise * rng.standard_normal((len(labels), dim))
    order = rng.permutation(len(labels))
    return vectors[order].astype(np.float32), labels[order]


def small_config(**overrides: object) -> TokenizerConfig:
    """A fast configuration: few levels/codes/rounds/epochs, no LLM unless asked."""
    settings: dict[str, object] = {
        "levels": 2,
        "codebook_size": 4,
        "rounds": 3,
        "steps_per_round": 5,
        "kmeans_iterations": 20,
        "rqvae_epochs": 3,
        "rqvae_batch_size": 16,
        "rqvae_hidden": [16],
        "rqvae_latent_dim": 4,
        "llm": "none",
        "coldstart_holdout": 0.1,
    }
    settings.update(overrides)
    return TokenizerConfig(**settings)  # type: ignore[arg-type]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings induce the same partition (up to renaming)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))
