"""BERT4Rec (Sun et al., CIKM 2019): bidirectional self-attention trained with the Cloze task.

Training windows of ``max_len + 1`` items are cut from the training sequences; each real
item is replaced by a [MASK] token with probability ``mask_prob`` (at least one per window),
and with probability ``last_mask_prob`` a window masks only its newest item, which is
exactly the inference situation. The encoder (no causal mask) predicts the masked items with
softmax cross-entropy over all items through a small head (dense + GELU + LayerNorm) and the
tied item embeddings plus an output bias, as in the paper. At inference the newest
``max_len`` history items are followed by [MASK] and the hidden state there scores items.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignrec.collab.config import check_positive, check_probability
from alignrec.collab.data import TrainingData
from alignrec.collab.models.sequential import (
    PAD,
    SequentialConfig,
    SequentialModel,
    TransformerBlock,
    attention_mask,
    right_align,
    shift_items,
)
from alignrec.collab.registry import register_model


@dataclass
class BERT4RecConfig(SequentialConfig):
    num_heads: int = field(default=2, metadata={"help": "attention heads"})
    ffn_dim: int = field(default=256, metadata={"help": "feed-forward hidden size"})
    mask_prob: float = field(default=0.2, metadata={"help": "probability that a training item is masked"})
    last_mask_prob: float = field(
        default=0.1, metadata={"help": "probability that a training window masks only its newest item"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and inside the blocks"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "num_heads", "ffn_dim", "mask_prob")
        check_probability(self, "mask_prob", "last_mask_prob")
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"embedding_dim {self.embedding_dim} must be divisible by num_heads {self.num_heads}")


@register_model("bert4rec", BERT4RecConfig, "BERT4Rec bidirectional Cloze model (Sun et al. 2019)")
class BERT4Rec(SequentialModel):
    causal = False
    extra_tokens = 1  # the [MASK] token, id num_items + 1

    def __init__(self, config: BERT4RecConfig, data: TrainingData):
        super().__init__(config, data, positions=config.max_len + 1)
        self.mask_id = self.num_items + 1
        self.embedding_norm = nn.LayerNorm(config.embedding_dim)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.embedding_dim, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.embedding_dim)
        self.head = nn.Sequential(nn.Linear(config.embedding_dim, config.embedding_dim), nn.GELU(),
                                  nn.LayerNorm(config.embedding_dim))
        self.output_bias = nn.Parameter(torch.zeros(self.num_items))
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()

    def build_windows(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.sequence_windows(self.config.max_len + 1)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        real = (ids != PAD).unsqueeze(-1)  # (B, T, 1)
        x = self.item_embedding(ids) + self.position_embedding.weight[-t:][None]  # (B, T, d)
        x = self.embedding_dropout(self.embedding_norm(x)) * real
        mask = attention_mask(ids, causal=False)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(M, d) hidden states at masked positions -> (M, I) item logits."""
        return self.head(hidden) @ self.output_embeddings().T + self.output_bias

    def mask_batch(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cloze masking of windows (B, W): (masked inputs (B, W), bool mask of predicted positions (B, W))."""
        real = ids != PAD
        chosen = (torch.rand(ids.shape) < self.config.mask_prob) & real
        only_last = torch.rand(ids.shape[0]) < self.config.last_mask_prob  # (B,)
        chosen[only_last] = False
        chosen[only_last, -1] = True
        # every window predicts something: windows without a masked item mask their newest one
        empty = ~chosen.any(dim=1)
        chosen[empty, -1] = True
        chosen &= real
        return torch.where(chosen, torch.full_like(ids, self.mask_id), ids), chosen

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        ids, _ = batch  # windows share at most one item, so every item is a Cloze candidate
        inputs, chosen = self.mask_batch(ids)
        hidden = self.encode(inputs)  # (B, W, d)
        value = F.cross_entropy(self.logits(hidden[chosen]), ids[chosen] - 1)
        return value, {"ce": float(value.detach())}

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        ids = shift_items(right_align(histories, self.config.max_len))  # (B, L)
        ids = torch.cat([ids, torch.full((ids.shape[0], 1), self.mask_id, dtype=ids.dtype)], dim=1)  # (B, L + 1)
        return self.logits(self.encode(ids)[:, -1])  # (B, I)
