"""DCCF — Disentangled Contrastive Collaborative Filtering (Ren et al., SIGIR 2023).

Per layer ``l`` (E = stacked user and item embeddings of the previous layer, (U + I, d)):

* ``Z = G E``: graph message passing with the symmetric normalised adjacency G;
* ``R``: intent-aware aggregation over *global intent prototypes* — K learnable prototypes
  for users ``C_u`` (d, K) and K for items ``C_i``; a node's intent representation is
  ``softmax(e C) C^T``, i.e. a mixture of prototypes weighted by its affinity to each;
* adaptive augmentation: two learned views of the graph, each re-weighting every edge (u, i)
  by ``(cos(x_u, x_i) + 1) / 2`` computed from ``Z`` (local collaborative view) or from ``R``
  (intent view), row-normalised, then ``H = G_Z E`` and ``P = G_R E``; the masks are
  functions of the embeddings, so they are learned end-to-end (gradients flow through the
  edge weights, see :func:`alignrec.collab.graph.edge_spmm`);
* ``E' = Z + R + H + P + E``.

The final representation is the sum of all layers' E. Loss = BPR on the final embeddings
+ ``emb_reg`` * squared norm of the batch's layer-0 embeddings (summed over the batch, as in
the authors' code) + ``cen_reg`` * squared norm of the prototypes + ``ssl_reg`` * InfoNCE
terms that pull, for the batch's users and items and every layer, the graph view Z towards
each of R, H and P (cosine similarity / ``temperature``, the other nodes of the batch as
negatives).

Simplification (documented in docs/collab.md): the InfoNCE terms use at most
``ssl_max_nodes`` of the batch's unique users (and items), drawn at random, because the
authors' 10,240-node similarity matrices (12 per step) dominate a CPU step; every other
part follows the description above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from alignrec.collab.config import OptimConfig, check_positive
from alignrec.collab.data import TrainingData
from alignrec.collab.graph import EdgeGraph, edge_dot, edge_spmm, row_normalized_values
from alignrec.collab.models.graph_base import BprBatch, GraphModel, bpr_loss
from alignrec.collab.registry import register_model


@dataclass
class DCCFConfig(OptimConfig):
    """DCCF settings (defaults: the authors' code, except the batch used by the InfoNCE terms)."""

    embedding_dim: int = field(default=32, metadata={"help": "embedding size (the paper's tokenizer input is 32-d)"})
    num_layers: int = field(default=2, metadata={"help": "propagation layers"})
    num_intents: int = field(default=128, metadata={"help": "global intent prototypes (per side)"})
    temperature: float = field(default=1.0, metadata={"help": "InfoNCE temperature"})
    ssl_reg: float = field(default=0.1, metadata={"help": "weight of the contrastive (InfoNCE) terms"})
    emb_reg: float = field(default=2.5e-5, metadata={"help": "L2 weight on the batch's layer-0 embeddings (batch sum)"})
    cen_reg: float = field(default=5e-3, metadata={"help": "L2 weight on the intent prototypes"})
    ssl_max_nodes: int = field(
        default=2048, metadata={"help": "most users (and items) of a batch used as InfoNCE anchors/negatives"}
    )
    batch_size: int = field(default=10240, metadata={"help": "training batch size"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "embedding_dim", "num_intents", "temperature", "ssl_max_nodes")
        if self.num_layers < 1:
            raise ValueError(f"num_layers: must be >= 1, got {self.num_layers}")
        for name in ("ssl_reg", "emb_reg", "cen_reg"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE of L2-normalised rows: row i of ``positive`` is anchor i's positive, the
    other rows its negatives. (n, d), (n, d) -> scalar."""
    anchor = F.normalize(anchor, dim=1)
    positive = F.normalize(positive, dim=1)
    logits = anchor @ positive.T / temperature  # (n, n)
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def _edge_affinity(graph, x: torch.Tensor) -> torch.Tensor:
    """``(cos(x_row, x_col) + 1) / 2`` for every edge (E,), in [0, 1]."""
    normalised = F.normalize(x, dim=1)
    return (edge_dot(graph, normalised, normalised) + 1.0) / 2.0


@register_model("dccf", DCCFConfig, "DCCF disentangled contrastive graph model (Ren et al. 2023)")
class DCCF(GraphModel):
    def __init__(self, config: DCCFConfig, data: TrainingData):
        super().__init__(config, data)
        d, k = config.embedding_dim, config.num_intents
        self.user_embedding = nn.Embedding(self.num_users, d)
        self.item_embedding = nn.Embedding(self.num_items, d)
        self.user_intents = nn.Parameter(torch.empty(d, k))
        self.item_intents = nn.Parameter(torch.empty(d, k))
        for weight in (self.user_embedding.weight, self.item_embedding.weight, self.user_intents, self.item_intents):
            nn.init.xavier_normal_(weight)

    def layers(
        self, graph: EdgeGraph | None = None, adjacency: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """(final embeddings (U + I, d), per-layer views {"z", "r", "h", "p"} each (U + I, d))."""
        if graph is None or adjacency is None:
            graph, adjacency = self.graph, self.adjacency
        e = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # (N, d)
        total = e
        views: list[dict[str, torch.Tensor]] = []
        for _ in range(self.config.num_layers):
            z = adjacency @ e  # graph message passing
            users, items = e[: self.num_users], e[self.num_users :]
            r = torch.cat(
                [
                    torch.softmax(users @ self.user_intents, dim=1) @ self.user_intents.T,  # (U, d)
                    torch.softmax(items @ self.item_intents, dim=1) @ self.item_intents.T,  # (I, d)
                ]
            )
            h = edge_spmm(graph, row_normalized_values(graph, _edge_affinity(graph, z)), e)
            p = edge_spmm(graph, row_normalized_values(graph, _edge_affinity(graph, r)), e)
            e = z + r + h + p + e
            total = total + e
            views.append({"z": z, "r": r, "h": h, "p": p})
        return total, views

    def propagate(
        self, graph: EdgeGraph | None = None, adjacency: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        total, _ = self.layers(graph, adjacency)
        return total[: self.num_users], total[self.num_users :]

    def _contrastive(self, views: list[dict[str, torch.Tensor]], users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        cap = self.config.ssl_max_nodes
        users = torch.unique(users)
        items = torch.unique(items) + self.num_users
        # torch's global generator is seeded per epoch by the loop, so this draw is reproducible
        if users.shape[0] > cap:
            users = users[torch.randperm(users.shape[0])[:cap]]
        if items.shape[0] > cap:
            items = items[torch.randperm(items.shape[0])[:cap]]
        loss = torch.zeros(())
        t = self.config.temperature
        for view in views:
            for nodes in (users, items):
                z = view["z"][nodes]
                for other in ("r", "h", "p"):
                    loss = loss + info_nce(z, view[other][nodes], t)
        return loss

    def loss(self, batch: BprBatch) -> tuple[torch.Tensor, dict[str, float]]:
        users, positives, negatives = batch
        total, views = self.layers()
        user_all, item_all = total[: self.num_users], total[self.num_users :]
        ranking = bpr_loss(user_all[users], item_all[positives], item_all[negatives])
        ego = (
            self.user_embedding(users).pow(2).sum()
            + self.item_embedding(positives).pow(2).sum()
            + self.item_embedding(negatives).pow(2).sum()
        )
        embedding_reg = self.config.emb_reg * ego
        prototype_reg = self.config.cen_reg * (self.user_intents.pow(2).sum() + self.item_intents.pow(2).sum())
        contrastive = self.config.ssl_reg * self._contrastive(views, users, positives)
        loss = ranking + embedding_reg + prototype_reg + contrastive
        parts = {"bpr": float(ranking.detach()), "emb_reg": float(embedding_reg.detach()), "cen_reg": float(prototype_reg.detach()),
                 "ssl": float(contrastive.detach())}
        return loss, parts
