"""Tokenised instruction examples and the padding collator used by fine-tuning.

Examples are encoded with :func:`alignrec.llm.format.encode_records` — the same ids
inference builds — so the loss is on the answer (and EOS, by the format's EOS rule) only. Over-long examples are dropped
(and counted), never truncated: a cut answer would teach a wrong item, a cut prompt a history
the model never sees at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alignrec.llm.format import IGNORE_INDEX, encode_records as encode_task_records


class EncodedExamples:
    """A map-style dataset of ``{"input_ids", "labels"}`` lists (what the Trainer's samplers expect)."""

    def __init__(self, features: list[dict[str, list[int]]], dropped_too_long: int = 0):
        self.features = features
        self.dropped_too_long = dropped_too_long

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.features[index]

    @property
    def total_tokens(self) -> int:
        return sum(len(f["input_ids"]) for f in self.features)

    @property
    def answer_tokens(self) -> int:
        return sum(sum(1 for label in f["labels"] if label != IGNORE_INDEX) for f in self.features)


def encode_records(tokenizer: Any, records: Sequence[dict[str, Any]], max_length: int, chunk: int = 4096) -> EncodedExamples:
    """Encode task records (``prompt``/``answer``); drop those longer than ``max_length`` tokens."""
    features: list[dict[str, list[int]]] = []
    dropped = 0
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        for input_ids, labels in encode_task_records(tokenizer, part):
            if len(input_ids) > max_length:
                dropped += 1
                continue
            features.append({"input_ids": input_ids, "labels": labels})
    return EncodedExamples(features, dropped)


@dataclass
class PaddingCollator:
    """Right-pads a batch: ``input_ids`` with ``pad_id``, ``labels`` with -100, plus the attention mask.

    Right padding is safe for training a causal LM (positions count from the left, padded
    positions are masked out of attention and loss). ``multiple_of`` rounds the padded length up
    (8 helps tensor cores on GPUs).

    ``answer_logits_only``: the loss needs output logits only at the positions that predict an
    answer token — a few per example, against hundreds of prompt positions. The batch then
    carries ``logits_to_keep`` (K,) = the positions predicting a label in any row, and
    ``labels`` (B, K + 1) = a -100 column followed by the targets of those positions (the
    leading column keeps the Trainer's token count, which skips column 0 of causal-LM labels,
    right). :func:`answer_loss` turns the model's (B, K, V) logits into the same loss as the full
    computation (a test compares them). Saves the (B, T, V) output projection and softmax, most
    of the work of the output layer for a 49k-token vocabulary.
    """

    pad_id: int
    multiple_of: int | None = None
    answer_logits_only: bool = False
    # Ask the model for its final hidden states (the code-only loss scores them itself) and for
    # the logits of no position (the full head's output is not used).
    hidden_states: bool = False

    # Token slots filled by real tokens and by padding over every batch this collator built
    # (the padding share is reported by fine-tuning and the throughput benchmark).
    real_tokens: int = 0
    padded_tokens: int = 0

    @property
    def padding_share(self) -> float | None:
        total = self.real_tokens + self.padded_tokens
        return self.padded_tokens / total if total else None

    def __call__(self, features: Sequence[dict[str, Sequence[int]]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple_of:
            longest = -(-longest // self.multiple_of) * self.multiple_of
        batch = len(features)
        real = sum(len(f["input_ids"]) for f in features)
        self.real_tokens += real
        self.padded_tokens += batch * longest - real
        input_ids = torch.full((batch, longest), self.pad_id, dtype=torch.long)  # (B, T)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((batch, longest), dtype=torch.long)  # (B, T)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.as_tensor(feature["labels"], dtype=torch.long)
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if self.answer_logits_only:
            predicts_label = (labels[:, 1:] != IGNORE_INDEX).any(dim=0)  # (T-1,) position p predicts token p+1
            keep = predicts_label.nonzero().squeeze(1)  # (K,)
            ignored = torch.full((len(features), 1), IGNORE_INDEX, dtype=torch.long)
            batch["labels"] = torch.cat([ignored, labels[:, keep + 1]], dim=1)  # (B, K + 1)
            batch["logits_to_keep"] = keep
        elif self.hidden_states:
            batch["output_hidden_states"] = True
            batch["logits_to_keep"] = torch.zeros(0, dtype=torch.long)  # no position: the full head is not run
        return batch


def answer_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Cross-entropy of logits kept at answer positions (see :class:`PaddingCollator`).

    ``outputs.logits`` is (B, K, V) and ``labels`` (B, K + 1) with column 0 ignored. Summed over
    the answer tokens and divided by ``num_items_in_batch`` when the Trainer gives it (the token
    count of the whole accumulated batch, so gradient accumulation and DDP weigh tokens equally),
    else by this batch's count — what the models' own causal-LM loss does.
    """
    import torch.nn.functional as F

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]  # (B, K, V)
    targets = labels[:, 1:].to(logits.device)  # (B, K)
    total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum().clamp_min(1)
    if hasattr(num_items_in_batch, "to"):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
