"""Popularity: every user gets the items ranked by training interaction count (the sanity floor)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alignrec.collab.data import TrainingData
from alignrec.collab.models.base import CollabModel
from alignrec.collab.registry import register_model


@dataclass
class PopConfig:
    """Popularity has no settings."""


@register_model("pop", PopConfig, "training popularity (no learning; the sanity floor)")
class Popularity(CollabModel):
    """Scores = interaction counts over the training sequences.

    Equal counts are broken by item index (lower first) through a fractional offset, so that
    the evaluator's ties-in-favour-of-the-target rule cannot flatter a model that has no way
    of telling tied items apart. Scores are float64 so the offset never changes the order of
    different counts.
    """

    trainable = False

    def __init__(self, config: PopConfig, data: TrainingData):
        super().__init__(config, data)
        counts = torch.from_numpy(data.item_popularity()).to(torch.float64)
        tie_break = torch.arange(self.num_items, dtype=torch.float64) / (self.num_items + 1)
        self.register_buffer("popularity", counts - tie_break)  # (I,)

    def num_batches(self) -> int:
        return 0

    def batches(self, rng: np.random.Generator) -> Iterator[Any]:
        return iter(())

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        return self.popularity[None, :].expand(users.shape[0], -1)  # (B, I)
