"""LightGCN (He et al., SIGIR 2020): linear propagation on the normalised user–item graph.

``E^(k+1) = D^-1/2 A D^-1/2 E^(k)``, final embedding = mean of ``E^(0..K)``, score = dot
product, BPR loss plus L2 on the layer-0 embeddings of the batch (``l2_reg * ||.||^2 / 2``
averaged over the batch, as in the paper's code).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from alignrec.collab.config import OptimConfig, check_positive
from alignrec.collab.data import TrainingData
from alignrec.collab.graph import EdgeGraph
from alignrec.collab.models.graph_base import BprBatch, GraphModel, bpr_loss
from alignrec.collab.registry import register_model


@dataclass
class LightGCNConfig(OptimConfig):
    """LightGCN settings (defaults: the paper's, with a larger batch that suits full-graph CPU steps)."""

    embedding_dim: int = field(default=64, metadata={"help": "embedding size"})
    num_layers: int = field(default=3, metadata={"help": "propagation layers"})
    l2_reg: float = field(default=1e-4, metadata={"help": "L2 weight on the batch's layer-0 embeddings"})
    batch_size: int = field(default=4096, metadata={"help": "training batch size"})
    lr: float = field(default=2e-3, metadata={"help": "learning rate"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "embedding_dim")
        if self.num_layers < 0:
            raise ValueError(f"num_layers: must be >= 0, got {self.num_layers}")
        if self.l2_reg < 0:
            raise ValueError(f"l2_reg: must be >= 0, got {self.l2_reg}")


@register_model("lightgcn", LightGCNConfig, "LightGCN graph model with BPR (He et al. 2020)")
class LightGCN(GraphModel):
    def __init__(self, config: LightGCNConfig, data: TrainingData):
        super().__init__(config, data)
        self.user_embedding = nn.Embedding(self.num_users, config.embedding_dim)
        self.item_embedding = nn.Embedding(self.num_items, config.embedding_dim)
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)

    def propagate(
        self, graph: EdgeGraph | None = None, adjacency: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        adjacency = self.adjacency if adjacency is None else adjacency
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # (U + I, d)
        total = x
        for _ in range(self.config.num_layers):
            x = adjacency @ x
            total = total + x
        mean = total / (self.config.num_layers + 1)
        return mean[: self.num_users], mean[self.num_users :]

    def loss(self, batch: BprBatch) -> tuple[torch.Tensor, dict[str, float]]:
        users, positives, negatives = batch
        user_all, item_all = self.propagate()
        ranking = bpr_loss(user_all[users], item_all[positives], item_all[negatives])
        ego = (
            self.user_embedding(users).pow(2).sum()
            + self.item_embedding(positives).pow(2).sum()
            + self.item_embedding(negatives).pow(2).sum()
        )
        regularisation = self.config.l2_reg * 0.5 * ego / users.shape[0]
        return ranking + regularisation, {"bpr": float(ranking.detach()), "l2": float(regularisation.detach())}
