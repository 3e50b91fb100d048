"""FMLP-Rec (Zhou et al., WWW 2022): an all-MLP sequential model with learnable frequency filters.

Each block replaces self-attention by a filter layer — FFT of the sequence along time
(``rfft``), element-wise product with a learnable complex filter (one per frequency and
channel), inverse FFT, dropout, residual + LayerNorm — followed by a feed-forward layer with
residual + LayerNorm. The hidden state at the last position scores items by dot product with
the tied item embeddings.

The filter mixes all positions (past and future), so training predicts only the last item of
each leave-one-out training sample; all-position training would let a position see the item
it must predict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from alignrec.collab.config import check_positive
from alignrec.collab.data import TrainingData
from alignrec.collab.models.sequential import PAD, SequentialConfig, SequentialModel
from alignrec.collab.registry import register_model


@dataclass
class FMLPConfig(SequentialConfig):
    ffn_dim: int = field(default=256, metadata={"help": "feed-forward hidden size"})
    loss: Literal["ce", "sampled_ce", "bce"] = field(
        default="ce",
        metadata={"help": "ce = softmax over all items; sampled_ce = softmax over num_negatives shared uniform "
                  "negatives; bce = one sampled negative per target (the SASRec paper)"},
    )
    num_negatives: int = field(default=1024, metadata={"help": "shared negatives per batch for loss=sampled_ce"})
    dropout: float = field(default=0.5, metadata={"help": "dropout on embeddings and inside the blocks"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "ffn_dim", "num_negatives")


class FilterLayer(nn.Module):
    """Learnable global filter along the sequence: (B, T, d) -> (B, T, d)."""

    def __init__(self, length: int, dim: int, dropout: float):
        super().__init__()
        self.length = length
        self.weight = nn.Parameter(torch.randn(length // 2 + 1, dim, 2) * 0.02)  # complex filter as (re, im)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x, dim=1, norm="ortho")  # (B, T//2 + 1, d) complex
        filtered = torch.fft.irfft(spectrum * torch.view_as_complex(self.weight), n=self.length, dim=1, norm="ortho")
        return self.norm(x + self.dropout(filtered))


class FMLPBlock(nn.Module):
    def __init__(self, length: int, dim: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.filter = FilterLayer(length, dim, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.filter(x)
        return self.norm(x + self.ffn(x))


@register_model("fmlp", FMLPConfig, "FMLP-Rec with learnable frequency filters (Zhou et al. 2022)")
class FMLPRec(SequentialModel):
    causal = False

    def __init__(self, config: FMLPConfig, data: TrainingData):
        super().__init__(config, data, positions=config.max_len)
        self.embedding_norm = nn.LayerNorm(config.embedding_dim)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            FMLPBlock(config.max_len, config.embedding_dim, config.ffn_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()

    def train_positions(self) -> Literal["last"]:  # type: ignore[override]
        return "last"

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] != self.config.max_len:
            raise ValueError(f"FMLP-Rec reads exactly max_len={self.config.max_len} positions, got {ids.shape[1]}")
        x = self.item_embedding(ids) + self.position_embedding.weight[None]  # (B, T, d)
        x = self.embedding_dropout(self.embedding_norm(x))
        for block in self.blocks:
            x = block(x)
        return x
