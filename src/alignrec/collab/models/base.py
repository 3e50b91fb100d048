"""The interface every collaborative model implements for the shared training loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from alignrec.collab.data import TrainingData


class CollabModel(nn.Module):
    """A model the shared loop (:mod:`alignrec.collab.trainer`) can train, score and export.

    Subclasses are registered with :func:`alignrec.collab.registry.register_model` and get
    ``(config, data)`` in ``__init__``. The loop calls, per epoch, :meth:`batches` with an
    epoch-seeded generator and :meth:`loss` on each batch; for evaluation
    :meth:`prepare_scoring` once (in eval mode, without gradients) and then :meth:`score` on
    chunks of users. Every randomness inside :meth:`batches`/:meth:`loss` must come from the
    generator it is given or torch's global generator, which the loop seeds per epoch — that
    is what makes ``--resume`` continue bit-identically.
    """

    name: ClassVar[str] = ""
    trainable: ClassVar[bool] = True
    # True for models that score users from an interaction graph (see set_scoring_interactions)
    scores_from_graph: ClassVar[bool] = False

    def __init__(self, config: Any, data: TrainingData):
        super().__init__()
        self.config = config
        self.num_users = data.num_users
        self.num_items = data.num_items

    # -- training -------------------------------------------------------------------------
    def num_batches(self) -> int:
        """Batches in one epoch (for the progress bar)."""
        raise NotImplementedError

    def batches(self, rng: np.random.Generator) -> Iterator[Any]:
        """One epoch of training batches, built with vectorised numpy from ``rng``."""
        raise NotImplementedError

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss to minimise, named parts for the training log)."""
        raise NotImplementedError

    # -- scoring --------------------------------------------------------------------------
    def prepare_scoring(self) -> None:
        """Compute whatever scoring reuses across users (graph models propagate once here)."""

    def clear_scoring_cache(self) -> None:
        """Drop what :meth:`prepare_scoring` cached (called before training resumes)."""

    def set_scoring_interactions(self, users: np.ndarray | None, items: np.ndarray | None) -> None:
        """Interactions to take into account when scoring, beyond the training ones (None = none).

        Graph models add them to the graph they propagate over (no retraining); sequential
        models ignore this because they read each sample's history directly.
        """

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each sample: ``users`` (B,), ``histories`` (B, H) item
        indices left-padded with -1, newest last. Returns (B, I); higher = ranked earlier."""
        raise NotImplementedError

    # -- export ---------------------------------------------------------------------------
    def item_embeddings(self) -> torch.Tensor | None:
        """The item representation the model scores with, (I, d) float32; None if it has none."""
        return None
