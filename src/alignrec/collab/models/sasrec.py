"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item history.

Learned item + position embeddings, ``num_layers`` pre-LayerNorm transformer blocks with a
causal mask, final LayerNorm; the hidden state at a position scores every item by dot
product with the (tied) item embedding table. Training predicts the next item at every
position of windows cut from the training sequences (``train_positions=all``, the paper's
scheme) or only at the last position of the leave-one-out training samples (``last``). The
loss is the paper's binary cross-entropy with one sampled negative (``bce``) or softmax
cross-entropy over all items (``ce``); see docs/collab.md for which one we measured better.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from alignrec.collab.config import check_positive
from alignrec.collab.data import TrainingData
from alignrec.collab.models.sequential import PAD, SequentialConfig, SequentialModel, TransformerBlock, attention_mask
from alignrec.collab.registry import register_model


@dataclass
class SASRecConfig(SequentialConfig):
    num_heads: int = field(default=2, metadata={"help": "attention heads"})
    ffn_dim: int = field(default=256, metadata={"help": "feed-forward hidden size"})
    loss: Literal["ce", "sampled_ce", "bce"] = field(
        default="ce",
        metadata={"help": "ce = softmax over all items; sampled_ce = softmax over num_negatives shared uniform "
                  "negatives; bce = one sampled negative per target (the SASRec paper)"},
    )
    num_negatives: int = field(default=1024, metadata={"help": "shared negatives per batch for loss=sampled_ce"})
    train_positions: Literal["all", "last"] = field(
        default="all", metadata={"help": "all = predict at every window position; last = only the newest item"}
    )
    train_stride: int = field(
        default=0,
        metadata={"help": "train_positions=all: windows start every N items, each target keeping >= max_len - N + 1 "
                  "items of context (0 = max_len: windows share one item)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "num_heads", "ffn_dim", "num_negatives")
        if not 0 <= self.train_stride <= self.max_len:
            raise ValueError(f"train_stride: must be in 0..max_len ({self.max_len}), got {self.train_stride}")
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"embedding_dim {self.embedding_dim} must be divisible by num_heads {self.num_heads}")


@register_model("sasrec", SASRecConfig, "SASRec causal self-attention (Kang & McAuley 2018)")
class SASRec(SequentialModel):
    causal = True

    def __init__(self, config: SASRecConfig, data: TrainingData):
        super().__init__(config, data, positions=config.max_len)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.embedding_dim, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.embedding_dim)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()

    def train_positions(self):  # type: ignore[override]
        return self.config.train_positions

    def train_stride(self) -> int | None:
        return self.config.train_stride or None

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        real = (ids != PAD).unsqueeze(-1)  # (B, T, 1)
        x = self.item_embedding(ids) + self.position_embedding.weight[-t:][None]  # (B, T, d)
        x = self.embedding_dropout(x) * real
        mask = attention_mask(ids, causal=True)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)
