"""Shared parts of the sequential models (SASRec, BERT4Rec, FMLP-Rec).

Item ids are shifted by one inside these models: 0 is padding, ``1..I`` are items (BERT4Rec
adds ``I + 1`` as its mask token). Histories are right-aligned (left-padded) so the newest
item always sits in the last slot, which is where scoring reads the hidden state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignrec.collab.config import OptimConfig, check_positive, check_probability
from alignrec.collab.data import TrainingData
from alignrec.collab.models.base import CollabModel

PAD = 0


@dataclass
class SequentialConfig(OptimConfig):
    """Settings every sequential model has."""

    embedding_dim: int = field(default=64, metadata={"help": "embedding / hidden size"})
    num_layers: int = field(default=2, metadata={"help": "encoder blocks"})
    dropout: float = field(default=0.2, metadata={"help": "dropout on embeddings and inside the blocks"})
    max_len: int = field(default=20, metadata={"help": "history items the model reads (the newest ones)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "embedding_dim", "num_layers", "max_len")
        check_probability(self, "dropout")


def shift_items(items: torch.Tensor) -> torch.Tensor:
    """Dataset item indices (-1 = padding) -> model ids (0 = padding, item i -> i + 1)."""
    return items + 1  # -1 + 1 = 0 = PAD


def right_align(histories: torch.Tensor, length: int) -> torch.Tensor:
    """Keep the newest ``length`` columns of left-padded (B, H) histories, padding on the left if H < length."""
    width = histories.shape[1]
    if width >= length:
        return histories[:, width - length :]
    pad = torch.full((histories.shape[0], length - width), -1, dtype=histories.dtype)
    return torch.cat([pad, histories], dim=1)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention + feed-forward block. ``mask`` (B, 1, T, T) bool, True = may attend."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding_dim {dim} is not divisible by num_heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        # dropout on the block outputs only (as in the Transformer paper), not on the 4x-wide inner
        # activation: CPU dropout masks cost ~40 ns per element, and that one is the largest tensor
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3x (B, h, T, c/h)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, h, T, c/h)
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(b, t, c)))
        return x + self.drop(self.ffn(self.norm2(x)))


def attention_mask(ids: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, T, T) bool: query i may attend key j if j is a real item (and j <= i when causal).

    Every query may attend itself, so padded rows never see an all-masked row (which would
    give NaN); padded positions are never read by real ones, so what they compute is unused.
    """
    t = ids.shape[1]
    real = (ids != PAD)[:, None, None, :]  # (B, 1, 1, T)
    eye = torch.eye(t, dtype=torch.bool)[None, None]
    mask = real | eye
    if causal:
        mask = mask & torch.ones(t, t, dtype=torch.bool).tril()[None, None]
    return mask


class SequentialModel(CollabModel):
    """Next-item model over right-aligned histories; subclasses implement :meth:`encode`.

    Training windows come from :meth:`TrainingData.sequence_windows` (all positions, causal
    models only) or :meth:`TrainingData.prefix_windows` (the leave-one-out training samples,
    loss on the last position only).
    """

    causal: ClassVar[bool] = True
    extra_tokens: ClassVar[int] = 0

    def __init__(self, config: SequentialConfig, data: TrainingData, positions: int):
        super().__init__(config, data)
        self.data = data
        self.item_embedding = nn.Embedding(self.num_items + 1 + self.extra_tokens, config.embedding_dim, padding_idx=PAD)
        self.position_embedding = nn.Embedding(positions, config.embedding_dim)
        self._windows: np.ndarray | None = None
        self._first_target: np.ndarray | None = None

    # -- training data --------------------------------------------------------------------
    def train_positions(self) -> Literal["all", "last"]:
        return "last"

    def train_stride(self) -> int | None:
        """Window stride for all-position training (None = windows share one item)."""
        return None

    def build_windows(self) -> tuple[np.ndarray, np.ndarray]:
        """Training windows (N, max_len + 1) of dataset item indices (-1 = padding) and, per
        window, the first window position whose item is a target (N,)."""
        length = self.config.max_len + 1
        if self.train_positions() == "all":
            return self.data.sequence_windows(length, self.train_stride())
        windows = self.data.prefix_windows(self.config.max_len)
        return windows, np.full(windows.shape[0], length - 1, dtype=np.int64)

    @property
    def windows(self) -> np.ndarray:
        if self._windows is None:
            self._windows, self._first_target = self.build_windows()
        return self._windows

    @property
    def first_target(self) -> np.ndarray:
        _ = self.windows  # builds both arrays
        assert self._first_target is not None
        return self._first_target

    def num_batches(self) -> int:
        return -(-self.windows.shape[0] // self.config.batch_size)

    def batches(self, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        windows, first_target = self.windows, self.first_target
        order = rng.permutation(windows.shape[0])
        size = self.config.batch_size
        for start in range(0, order.shape[0], size):
            rows = order[start : start + size]
            yield shift_items(torch.from_numpy(windows[rows])), torch.from_numpy(first_target[rows])  # (B, W), (B,)

    # -- model ----------------------------------------------------------------------------
    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, d) of model ids (B, T)."""
        raise NotImplementedError

    def output_embeddings(self) -> torch.Tensor:
        """Item vectors the hidden state is scored against (I, d) (tied with the input table)."""
        return self.item_embedding.weight[1 : self.num_items + 1]

    def next_item_loss(self, hidden: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
        """Loss of hidden states (M, d) predicting model ids ``targets`` (M,).

        ``ce``: softmax cross-entropy over all items. ``sampled_ce``: softmax over the target
        and ``num_negatives`` items drawn uniformly once per batch and shared by all its rows
        (a negative equal to a row's target is masked out for that row); uniform sampling
        needs no log-Q correction. ``bce``: binary cross-entropy with one uniformly sampled
        negative per target (SASRec's original objective). Random draws use torch's global
        generator, which the training loop seeds per epoch.
        """
        items = self.output_embeddings()
        if loss == "ce":
            return F.cross_entropy(hidden @ items.T, targets - 1)
        if loss == "sampled_ce":
            negatives = torch.randint(0, self.num_items, (self.config.num_negatives,))  # (K,)
            positive_logits = (hidden * items[targets - 1]).sum(1, keepdim=True)  # (M, 1)
            negative_logits = hidden @ items[negatives].T  # (M, K)
            negative_logits = negative_logits.masked_fill(negatives[None, :] == (targets - 1)[:, None], float("-inf"))
            logits = torch.cat([positive_logits, negative_logits], dim=1)  # (M, 1 + K)
            return F.cross_entropy(logits, torch.zeros_like(targets))
        negatives = torch.randint(0, self.num_items, targets.shape)
        positive_logits = (hidden * items[targets - 1]).sum(1)
        negative_logits = (hidden * items[negatives]).sum(1)
        return -(F.logsigmoid(positive_logits) + F.logsigmoid(-negative_logits)).mean()

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        ids, first_target = batch  # (B, T + 1), (B,)
        inputs, targets = ids[:, :-1], ids[:, 1:]  # (B, T) each; targets[:, j] sits at window position j + 1
        hidden = self.encode(inputs)  # (B, T, d)
        positions = torch.arange(1, ids.shape[1])[None, :]  # (1, T)
        keep = (targets != PAD) & (inputs != PAD) & (positions >= first_target[:, None])
        value = self.next_item_loss(hidden[keep], targets[keep], self.config.loss)
        return value, {self.config.loss: float(value.detach())}

    def history_ids(self, histories: torch.Tensor) -> torch.Tensor:
        """Model ids (B, max_len) of dataset histories (B, H)."""
        return shift_items(right_align(histories, self.config.max_len))

    def score(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        hidden = self.encode(self.history_ids(histories))[:, -1]  # (B, d)
        return hidden @ self.output_embeddings().T  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.output_embeddings().detach().float().contiguous()
