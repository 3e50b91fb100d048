"""The code-only output head: at a code position, a softmax over that level's code tokens only.

An item code is L tokens, one per level, and at level ``l`` beam search can only ever choose a
level-``l`` code token. So wherever the label is a level-``l`` code token, the loss is the
cross-entropy of the softmax over the ``K_l`` level-``l`` code tokens — exactly full-vocabulary
cross-entropy with every other logit set to -inf (a test checks it) — computed from the hidden
state and those ``K_l`` rows of the output matrix, never from the whole ``V``-token head (49k
rows for SmolLM2 against 32-256 codes a level). Positions whose label is text (the text and
TS-Align tasks) keep the full head. Beam search scores codes with the same normalisation
(:mod:`alignrec.llm.beam_search`), so training and inference agree.

The output rows of the code tokens are read from the model as it is: the plain output matrix of
a merged model, or peft's trainable-token rows while training (only those rows, never the
merged ``V x D`` copy peft would build for ``.weight``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from alignrec.llm.code_rows import row_of_token
from alignrec.llm.vocab import CodeVocabulary
from alignrec.llm.format import IGNORE_INDEX

HEADS = ("code", "full")  # how code positions are normalised: level code tokens only, or the whole vocabulary


def _trainable_rows(module: Any, token_ids: torch.Tensor) -> torch.Tensor | None:
    """The rows of ``token_ids`` held by peft's trainable-tokens adapter of ``module``, if it holds them all."""
    adapter = getattr(module, "token_adapter", None)
    if adapter is None or getattr(adapter, "merged", False) or not adapter.active_adapters:
        return None
    name = adapter.active_adapters[0]
    if adapter.token_indices.get(name) is None:
        return None
    delta = adapter.trainable_tokens_delta[name]
    vocab_size = adapter.get_base_layer().weight.shape[0]
    if int(token_ids.max()) >= vocab_size:
        return None
    _, row_of = row_of_token(adapter, name, vocab_size, delta.device)  # cached map: token id -> row (-1: none)
    rows = row_of[token_ids.to(delta.device)]
    if bool((rows < 0).any()):
        return None
    return delta[rows]


def output_rows(model: Any, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Output-matrix rows ``(N, D)`` (and bias ``(N,)`` or None) of ``token_ids`` (N,) in ``model``."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("the model has no output layer (get_output_embeddings() is None)")
    rows = _trainable_rows(head, token_ids)
    if rows is None:
        weight = head.weight  # peft wrappers answer .weight with the merged matrix (rows not trained: fine)
        rows = weight[token_ids.to(weight.device)]
    bias = getattr(getattr(head, "base_layer", head), "bias", None)
    if bias is None and hasattr(head, "token_adapter"):
        bias = getattr(head.token_adapter.base_layer, "bias", None)
    return rows, (bias[token_ids.to(bias.device)] if bias is not None else None)


def level_logits(model: Any, vocabulary: CodeVocabulary, hidden: torch.Tensor, level: int) -> torch.Tensor:
    """Logits of the level-``level`` codes: hidden (N, D) -> (N, K_level) float32."""
    rows, bias = output_rows(model, vocabulary.level_token_ids[level])
    logits = hidden @ rows.to(hidden.dtype).T
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    return logits.float()


def level_log_probs(model: Any, vocabulary: CodeVocabulary, hidden: torch.Tensor, level: int) -> torch.Tensor:
    """log p(code | level) over the level's codes only: (N, D) -> (N, K_level)."""
    return torch.log_softmax(level_logits(model, vocabulary, hidden, level), dim=-1)


@dataclass
class LossParts:
    """Summed cross-entropy over the supervised positions of a batch and their count."""

    total: torch.Tensor  # () float32
    count: int
    code_positions: int


def code_only_loss(model: Any, vocabulary: CodeVocabulary, hidden: torch.Tensor, labels: torch.Tensor) -> LossParts:
    """The restricted loss of a causal-LM batch.

    ``hidden`` (B, T, D) are the final (normed) hidden states, ``labels`` (B, T) the token ids
    to learn (-100 elsewhere; position ``p`` predicts ``labels[:, p + 1]``, the usual shift).
    Code labels: cross-entropy over their level's code tokens; text labels: over the full
    vocabulary through the model's output layer (at those positions only).
    """
    targets = labels[:, 1:].reshape(-1)  # (N,) N = B * (T - 1)
    states = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # (N, D)
    supervised = targets != IGNORE_INDEX
    safe = targets.clamp(min=0)
    vocabulary = vocabulary if vocabulary.level_of.device == targets.device else vocabulary.to(targets.device)
    levels = torch.where(supervised, vocabulary.level_of[safe], torch.full_like(targets, -2))  # -2 = no label
    total = hidden.new_zeros((), dtype=torch.float32)
    code_positions = 0
    for level in range(vocabulary.num_levels):
        where = (levels == level).nonzero().squeeze(1)
        if where.numel() == 0:
            continue
        logits = level_logits(model, vocabulary, states[where], level)  # (n, K_l)
        total = total + F.cross_entropy(logits, vocabulary.code_of[targets[where]], reduction="sum")
        code_positions += int(where.numel())
    text = (levels == -1).nonzero().squeeze(1)
    if text.numel():
        logits = model.get_output_embeddings()(states[text]).float()  # (n, V)
        total = total + F.cross_entropy(logits, targets[text], reduction="sum")
    return LossParts(total, int(supervised.sum()), code_positions)
