"""The item head: one score per catalogue item, from the hidden state that predicts an item's first code.

An item's vector is the sum of the output rows of its L code tokens (plus their biases, if the
output layer has any), so the head has no parameters of its own: it reads the code rows that
fine-tuning trains anyway, and an item registered after fine-tuning gets a vector from its codes
without retraining. Its logits over the whole catalogue are ``hidden @ vectors.T``.

With ``finetune.item_residual`` the head also learns a free vector and a bias per catalogue item
(:class:`ItemResidual`, zero at the start), added to the code sum and the logit: the capacity of
a classic model's item table, trained by the item loss alone (the code logits never see it). It
is a module of the model (``alignrec_item_residual``), trained and checkpointed with the adapter
(peft's ``modules_to_save``), and saved beside the merged weights (:data:`RESIDUAL_FILE`). Items
registered after fine-tuning have none: their vectors are their code sums.

- **Training** (``finetune.item_loss_weight`` > 0, code-only head): at every position whose next
  L labels are one item's codes (an item boundary of a dense window, or a one-target answer), the
  cross-entropy of the catalogue softmax is added to the code loss, weighted
  (:func:`item_loss`).
- **Ranking** (:data:`RANKERS`, recorded in the model's settings, chosen on validation when the
  fine-tuning ends):

  - ``beam``: constrained beam search over the code tokens (:mod:`alignrec.llm.beam_search`);
  - ``item``: the head alone, exact over the whole catalogue, one forward pass of the prompt (no
    beam search); excluded items are masked;
  - ``fused``: beam search, then every item scored ``item log-prob + w * beam log-prob``; items the
    beam did not reach count the lowest beam score of their user (:func:`fuse`). ``w`` is the
    model's ``fusion_weight``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from alignrec.errors import InputError
from alignrec.llm.code_head import output_rows
from alignrec.llm.format import IGNORE_INDEX
from alignrec.llm.vocab import CodeVocabulary

RANKERS = ("beam", "item", "fused")
RESIDUAL_MODULE = "alignrec_item_residual"  # the attribute of the causal LM that holds the ItemResidual
RESIDUAL_FILE = "item_residual.safetensors"  # in the saved model folder, beside the merged weights
# The fusion weights the validation choice tries (besides beam alone and the head alone).
FUSION_WEIGHTS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


class ItemCatalogue:
    """Item codes as tensors: each item's vector, and the item of a code tuple (-1 for none).

    A code tuple is looked up through its mixed-radix number (code of level 0 most significant),
    searched in the sorted numbers of the catalogue.
    """

    def __init__(self, codes: np.ndarray, codebook_sizes: Sequence[int], device: Any = "cpu"):
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(codebook_sizes):
            raise ValueError(f"codes of shape {codes.shape} for {len(codebook_sizes)} codebooks")
        if float(np.prod([float(s) for s in codebook_sizes])) >= 2.0**62:
            raise InputError(f"the item head needs the codebook sizes' product below 2^62; got {list(codebook_sizes)}")
        radix = np.ones(len(codebook_sizes), dtype=np.int64)
        for level in range(len(codebook_sizes) - 2, -1, -1):
            radix[level] = radix[level + 1] * int(codebook_sizes[level + 1])
        keys = codes @ radix
        order = np.argsort(keys, kind="stable")
        if len(np.unique(keys)) != len(keys):
            raise InputError("the item head needs distinct item codes; these codes have collisions")
        self.codes = torch.as_tensor(codes, device=device)  # (N, L)
        self.radix = torch.as_tensor(radix, device=device)  # (L,)
        self.sorted_keys = torch.as_tensor(keys[order], device=device)  # (N,)
        self.order = torch.as_tensor(order, device=device)  # (N,) item of each sorted key

    @property
    def num_items(self) -> int:
        return int(self.codes.shape[0])

    def to(self, device: Any) -> ItemCatalogue:
        moved = object.__new__(ItemCatalogue)
        moved.codes, moved.radix = self.codes.to(device), self.radix.to(device)
        moved.sorted_keys, moved.order = self.sorted_keys.to(device), self.order.to(device)
        return moved

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Item index of each code tuple ``codes`` (n, L) -> (n,), -1 where no item has those codes."""
        if codes.numel() == 0:
            return codes.new_zeros((0,), dtype=torch.long)
        keys = (codes.long() * self.radix).sum(dim=1)
        where = torch.searchsorted(self.sorted_keys, keys).clamp(max=self.num_items - 1)
        found = self.sorted_keys[where] == keys
        return torch.where(found, self.order[where], torch.full_like(where, -1))

    def vectors(self, model: Any, vocabulary: CodeVocabulary) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every item's vector (N, D): the sum of its code tokens' output rows; and their summed bias (N,) or None."""
        total: torch.Tensor | None = None
        bias_total: torch.Tensor | None = None
        for level in range(vocabulary.num_levels):
            rows, bias = output_rows(model, vocabulary.level_token_ids[level])
            index = self.codes[:, level].to(rows.device)
            part = rows[index]
            total = part if total is None else total + part
            if bias is not None:
                bias_total = bias[index] if bias_total is None else bias_total + bias[index]
        assert total is not None
        residual = item_residual_of(model)
        if residual is not None:
            extra, extra_bias = residual()  # (R, D), (R,): the items known at fine-tuning, the first R
            count = int(extra.shape[0])
            if count > self.num_items:
                raise InputError(f"the model's item residual has {count} items but the catalogue only {self.num_items}")
            pad = self.num_items - count  # items registered since: no residual
            total = total + F.pad(extra.to(total), (0, 0, 0, pad))
            extra_bias = F.pad(extra_bias.to(total), (0, pad))
            bias_total = extra_bias if bias_total is None else bias_total + extra_bias.to(bias_total)
        return total, bias_total


class ItemResidual(torch.nn.Module):
    """A vector (D,) and a bias per item, added to the item's code-sum vector and logit; zero at the start.

    ``forward()`` returns the whole tables (through peft's wrapper while training, so the adapter's
    trained copy answers).
    """

    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.vectors = torch.nn.Parameter(torch.zeros(num_items, dim))
        self.bias = torch.nn.Parameter(torch.zeros(num_items))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vectors, self.bias


def item_residual_of(model: Any) -> Any:
    """The model's item residual (an :class:`ItemResidual`, or peft's wrapper of one), or None."""
    for name, module in model.named_modules():
        if name == RESIDUAL_MODULE or name.endswith("." + RESIDUAL_MODULE):
            return module
    return None


def attach_item_residual(model: Any, residual: ItemResidual) -> None:
    """Make ``residual`` a module of the causal LM ``model`` (before peft wraps it, to be trained)."""
    setattr(model, RESIDUAL_MODULE, residual)


def detach_item_residual(model: Any) -> ItemResidual | None:
    """Remove the residual from a plain (merged) model and return it (None if it has none)."""
    residual = getattr(model, RESIDUAL_MODULE, None)
    if residual is not None:
        delattr(model, RESIDUAL_MODULE)
    return residual


def save_item_residual(residual: ItemResidual, folder: Any) -> None:
    """Write the residual's tables to ``folder``/:data:`RESIDUAL_FILE` (the folder is written atomically by the caller)."""
    from pathlib import Path

    from safetensors.torch import save_file

    save_file({"vectors": residual.vectors.detach().float().contiguous().cpu(),
               "bias": residual.bias.detach().float().contiguous().cpu()}, str(Path(folder) / RESIDUAL_FILE))


def load_item_residual(folder: Any, num_items: int, dim: int) -> ItemResidual:
    """Read ``folder``/:data:`RESIDUAL_FILE`, checked to hold ``num_items`` rows of ``dim``."""
    from pathlib import Path

    from alignrec.utils.io import read_safetensors

    path = Path(folder) / RESIDUAL_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing; the model was fine-tuned with item_residual, which this file holds")
    tensors = read_safetensors(path)
    vectors, bias = tensors.get("vectors"), tensors.get("bias")
    if vectors is None or bias is None or tuple(vectors.shape) != (num_items, dim) or tuple(bias.shape) != (num_items,):
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        raise InputError(f"{path}: expected 'vectors' ({num_items}, {dim}) and 'bias' ({num_items},), found {found}")
    residual = ItemResidual(num_items, dim)
    with torch.no_grad():
        residual.vectors.copy_(torch.from_numpy(vectors))
        residual.bias.copy_(torch.from_numpy(bias))
    return residual


def item_logits(hidden: torch.Tensor, vectors: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Catalogue logits (n, N) float32 of hidden states (n, D)."""
    logits = hidden @ vectors.to(hidden.dtype).T
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    return logits.float()


def item_boundaries(labels: torch.Tensor, vocabulary: CodeVocabulary,
                    catalogue: ItemCatalogue) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a batch predicts an item's first code: (rows, positions, items), each (n,).

    ``labels`` (B, T) as the causal LM takes them (position ``p`` predicts ``labels[:, p + 1]``).
    A boundary is a position ``p`` whose next L labels are the codes of levels 0..L-1 of one
    catalogue item; code tuples of no item are skipped.
    """
    levels_count = vocabulary.num_levels
    targets = labels[:, 1:]  # (B, T-1)
    empty = targets.new_zeros((0,), dtype=torch.long)
    if targets.shape[1] < levels_count:
        return empty, empty, empty
    vocabulary = vocabulary if vocabulary.level_of.device == targets.device else vocabulary.to(targets.device)
    catalogue = catalogue if catalogue.codes.device == targets.device else catalogue.to(targets.device)
    supervised = targets != IGNORE_INDEX
    safe = targets.clamp(min=0)
    levels = torch.where(supervised, vocabulary.level_of[safe], torch.full_like(targets, -2))
    codes = torch.where(levels >= 0, vocabulary.code_of[safe], torch.zeros_like(targets))
    windows = levels.unfold(1, levels_count, 1)  # (B, P, L): the next L labels of every position
    expected = torch.arange(levels_count, device=targets.device)
    rows, positions = (windows == expected).all(dim=-1).nonzero(as_tuple=True)
    if rows.numel() == 0:
        return empty, empty, empty
    items = catalogue.lookup(codes.unfold(1, levels_count, 1)[rows, positions])
    known = items >= 0
    return rows[known], positions[known], items[known]


@dataclass
class ItemLoss:
    """The item head on a batch: the summed catalogue cross-entropy at its item boundaries, their
    count, and the boundaries with their logits (for a loss on top, such as distillation)."""

    total: torch.Tensor
    count: int
    rows: torch.Tensor  # (n,) batch rows of the boundaries
    positions: torch.Tensor  # (n,) their positions (see item_boundaries)
    logits: torch.Tensor | None  # (n, N) float32; None when the batch has no boundary


def item_loss(model: Any, vocabulary: CodeVocabulary, catalogue: ItemCatalogue, hidden: torch.Tensor,
              labels: torch.Tensor) -> ItemLoss:
    """Summed catalogue cross-entropy at the item boundaries of a batch, and their count.

    ``hidden`` (B, T, D) final hidden states, ``labels`` (B, T) (see :func:`item_boundaries`).
    """
    rows, positions, items = item_boundaries(labels, vocabulary, catalogue)
    if items.numel() == 0:
        residual = item_residual_of(model)
        if residual is not None:  # keep its tables in the graph: DDP expects a gradient for every trained parameter
            extra, extra_bias = residual()
            return ItemLoss((extra.sum() + extra_bias.sum()).float() * 0.0, 0, rows, positions, None)
        return ItemLoss(hidden.new_zeros((), dtype=torch.float32), 0, rows, positions, None)
    vectors, bias = catalogue.vectors(model, vocabulary)
    logits = item_logits(hidden[rows, positions], vectors, bias)
    total = F.cross_entropy(logits, items.to(logits.device), reduction="sum")
    return ItemLoss(total, int(items.numel()), rows, positions, logits)


def beam_scores_of_items(beam_items: torch.Tensor, beam_scores: torch.Tensor, num_items: int) -> torch.Tensor:
    """(B, N): each item's beam log-probability; items the beam did not reach get their user's lowest beam score.

    ``beam_items`` (B, K) item indices (-1 = none), ``beam_scores`` (B, K) (-inf there). A user
    whose beam reached no item gets 0 everywhere (the head alone then decides).
    """
    valid = (beam_items >= 0) & torch.isfinite(beam_scores)
    floor = torch.where(valid, beam_scores, torch.full_like(beam_scores, float("inf"))).min(dim=1).values
    floor = torch.where(torch.isfinite(floor), floor, torch.zeros_like(floor))  # (B,)
    table = floor[:, None].repeat(1, num_items + 1)  # column N collects the padding
    index = torch.where(valid, beam_items, torch.full_like(beam_items, num_items))
    table.scatter_(1, index, torch.where(valid, beam_scores, floor[:, None].expand_as(beam_scores)))
    return table[:, :num_items]


def fuse(item_log_probs: torch.Tensor, beam_items: torch.Tensor, beam_scores: torch.Tensor, weight: float,
         top_k: int, excluded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``fused`` ranking: top-``top_k`` (items, scores), each (B, K), of ``item log-prob + weight * beam log-prob``."""
    num_items = item_log_probs.shape[1]
    scores = item_log_probs + weight * beam_scores_of_items(beam_items, beam_scores, num_items).to(item_log_probs)
    return top_items(scores, top_k, excluded)


def top_items(scores: torch.Tensor, top_k: int, excluded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``top_k`` items (B, K) and their scores, excluded items never listed (-1 / -inf pad short lists)."""
    if excluded is not None:
        scores = scores.masked_fill(excluded.to(scores.device), float("-inf"))
    keep = min(top_k, scores.shape[1])
    values, items = scores.topk(keep, dim=1)  # sorted, best first
    items = items.masked_fill(~torch.isfinite(values), -1)
    if keep < top_k:
        pad = top_k - keep
        items = torch.cat([items, items.new_full((items.shape[0], pad), -1)], dim=1)
        values = torch.cat([values, values.new_full((values.shape[0], pad), float("-inf"))], dim=1)
    return items, values


@torch.inference_mode()
def prompt_states(model: Any, prompts: Sequence[Sequence[int]], pad_token_id: int) -> torch.Tensor:
    """The decoder's last hidden state of each prompt (B, D): what the item head scores (one forward pass)."""
    from alignrec.llm.beam_search import prompt_inputs

    input_ids, attention_mask, position_ids = prompt_inputs(prompts, pad_token_id, next(model.parameters()).device)
    output = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False)
    return output.last_hidden_state[:, -1, :]


def check_ranker(ranker: str, settings: Any) -> None:
    """``ranker`` must be known, and ``item`` / ``fused`` need a model trained with the item head."""
    if ranker not in RANKERS:
        raise InputError(f"ranker {ranker!r}: expected one of {list(RANKERS)}")
    if ranker != "beam" and not (settings.head == "code" and settings.item_loss_weight > 0):
        raise InputError(f"ranker {ranker!r} needs a model fine-tuned with the item head (finetune.item_loss_weight > 0 "
                         "and head: code); this one was not: use ranker beam")
