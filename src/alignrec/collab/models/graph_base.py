"""Shared parts of the graph models (LightGCN, DCCF): the user–item graph, BPR batches,
and scoring by the dot product of propagated user and item embeddings."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from alignrec.collab.data import TrainingData, sample_negative_items
from alignrec.collab.graph import EdgeGraph, user_item_graph
from alignrec.collab.models.base import CollabModel

BprBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # users (B,), positives (B,), negatives (B,)


class GraphModel(CollabModel):
    """Graph model trained with BPR on (user, training item, non-interacted item) triples.

    An epoch visits every unique training pair once in random order, each with one negative
    drawn uniformly among the user's non-interacted items. Subclasses implement
    :meth:`propagate` -> (user embeddings (U, d), item embeddings (I, d)) over a given graph
    and its symmetric normalised adjacency (default: the training graph).
    """

    scores_from_graph = True

    def __init__(self, config, data: TrainingData):
        super().__init__(config, data)
        self.data = data
        self.graph = user_item_graph(data)
        # The normalised adjacency never changes during training: build the CSR matrix once.
        self.adjacency = self.graph.csr(self.graph.symmetric_normalized_values())
        self._scoring_graph: tuple[EdgeGraph, torch.Tensor] | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def propagate(
        self, graph: EdgeGraph | None = None, adjacency: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def set_scoring_interactions(self, users: np.ndarray | None, items: np.ndarray | None) -> None:
        self._cache = None
        if users is None or items is None:
            self._scoring_graph = None
            return
        graph = user_item_graph(self.data, users, items)
        self._scoring_graph = (graph, graph.csr(graph.symmetric_normalized_values()))

    def num_batches(self) -> int:
        pairs = self.data.interactions[0].shape[0]
        return -(-pairs // self.config.batch_size)

    def batches(self, rng: np.random.Generator) -> Iterator[BprBatch]:
        users, items = self.data.interactions
        order = rng.permutation(users.shape[0])
        negatives = sample_negative_items(rng, users[order], self.data)
        size = self.config.batch_size
        for start in range(0, order.shape[0], size):
            rows = order[start : start + size]
            yield (
                torch.from_numpy(users[rows]),
                torch.from_numpy(items[rows]),
                torch.from_numpy(negatives[start : start + size]),
            )

    def prepare_scoring(self) -> None:
        graph, adjacency = self._scoring_graph or (self.graph, self.adjacency)
        users, items = self.propagate(graph, adjacency)
        self._cache = (users.detach(), items.detach())

    def clear_scoring_cache(self) -> None:
        self._cache = None

    def train(self, mode: bool = True):  # noqa: D102 - nn.Module API
        if mode:
            self._cache = None  # parameters are about to change
        return super().train(mode)

    def _propagated(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None:
            self.prepare_scoring()
        assert self._cache is not None
        return self._cache

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        user_embeddings, item_embeddings = self._propagated()
        return user_embeddings[users] @ item_embeddings.T  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        """Item embeddings propagated over the training graph only (I, d)."""
        if self._scoring_graph is None:
            return self._propagated()[1].float().contiguous()
        with torch.no_grad():
            return self.propagate()[1].detach().float().contiguous()


def bpr_loss(user_embeddings: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log sigmoid(s_pos - s_neg)`` over the batch (softplus form, numerically stable)."""
    positive_scores = (user_embeddings * positive).sum(1)  # (B,)
    negative_scores = (user_embeddings * negative).sum(1)
    return torch.nn.functional.softplus(negative_scores - positive_scores).mean()
