"""Distillation of a classic sequential model into the item head (``finetune.distill_weight``).

A trained sequential behaviour model (SASRec, FMLP-Rec, BERT4Rec: any collab model with
``encode`` and ``history_ids``) is the *teacher*. At every item boundary of a training batch
(:func:`alignrec.llm.item_head.item_boundaries`) it scores the items of the window before the
target as it scores a user's history (the newest ``max_len``, right-aligned), and its
catalogue softmax (at ``distill_temperature``) becomes a soft target for the item head's
softmax: the loss adds ``distill_weight`` x the soft cross-entropy
``-sum_i p_teacher(i) log p_student(i)`` to the item head's hard one.

Why: the fine-tune sees each window about three times within the main job's budget, and
its validation figure still rises at the end. A soft target tells the head, at every
boundary, how the teacher ranks the whole catalogue, not only which item came next; the LLM
alone ranks at inference (the teacher is not needed after training).

The window's items are read from the batch's ``input_ids``: every code token of level 0 starts
an item, whose L codes give its catalogue index (:meth:`ItemCatalogue.lookup`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alignrec.errors import InputError
from alignrec.llm.vocab import CodeVocabulary


class Teacher:
    """A trained sequential collab model whose catalogue distribution the item head learns from."""

    def __init__(self, model: Any, temperature: float = 1.0):
        from alignrec.collab.models.sequential import SequentialModel

        if not isinstance(model, SequentialModel):
            raise InputError(f"distill_from: {type(model).__name__} is not a sequential model (SASRec, FMLP-Rec, "
                             "BERT4Rec): it gives no distribution per window position")
        if temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {temperature}")
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        with torch.no_grad():
            self.model.prepare_scoring()
        self.temperature = float(temperature)
        self.max_len = int(model.config.max_len)
        self.num_items = int(model.num_items)

    @classmethod
    def load(cls, run_out: str | Path, data: str | Path, temperature: float = 1.0) -> Teacher:
        """The model a collab run (``alignrec collab train``, or a pipeline's behaviour/baseline stage) left in ``run_out``."""
        from alignrec.collab.export import load_trained_model

        run_out = Path(run_out)
        if not (run_out / "config.json").is_file():
            raise InputError(f"distill_from: {run_out}: not a collab run folder (no config.json)")
        return cls(load_trained_model(run_out, data=data), temperature)

    def window_items(self, input_ids: torch.Tensor, vocabulary: CodeVocabulary,
                     catalogue: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The items of each row, in order: (items (B, K) right-aligned with -1 on the left, count (B,),
        index (B, T) = the 0-based item index of the item starting at each position, -1 elsewhere)."""
        levels_count = vocabulary.num_levels
        batch, length = input_ids.shape
        index = torch.full_like(input_ids, -1)
        if length < levels_count:
            return input_ids.new_full((batch, 0), -1), input_ids.new_zeros(batch), index
        vocabulary = vocabulary if vocabulary.level_of.device == input_ids.device else vocabulary.to(input_ids.device)
        level = vocabulary.level_of[input_ids]
        code = torch.where(level >= 0, vocabulary.code_of[input_ids], torch.zeros_like(input_ids))
        starts = level == 0
        starts[:, length - levels_count + 1:] = False  # an item needs its L codes inside the row
        rows, positions = starts.nonzero(as_tuple=True)
        items = catalogue.lookup(code.unfold(1, levels_count, 1)[rows, positions])
        order = starts.long().cumsum(dim=1) - 1  # item index of each start
        count = starts.sum(dim=1)
        width = int(count.max()) if batch else 0
        table = input_ids.new_full((batch, width), -1)
        column = width - count[rows] + order[rows, positions]
        table[rows, column] = items
        index[rows, positions] = order[rows, positions]
        return table, count, index

    @torch.no_grad()
    def targets(self, input_ids: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, vocabulary: CodeVocabulary,
                catalogue: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft targets (n', N) for the boundaries ``rows``, ``positions`` (as :func:`item_boundaries` gives them),
        and which boundaries (n,) have one: those whose target item has at least one item before it in the row.

        The teacher scores each boundary as it scores a user at inference (:meth:`CollabModel.score`): the
        items before the target, the newest ``max_len`` of them, right-aligned (models whose layers mix
        every position, such as FMLP-Rec, are only right there).
        """
        if catalogue.num_items != self.num_items:
            raise InputError(f"distill_from: the teacher knows {self.num_items} items, the catalogue has {catalogue.num_items} "
                             "(trained on another data set?)")
        table, count, index = self.window_items(input_ids, vocabulary, catalogue)
        target_index = index[rows, positions + 1]  # the boundary's item starts at the next position
        keep = target_index >= 1
        rows, target_index = rows[keep], target_index[keep]
        # column c of a history holds item j = k - max_len + c of the row (k = the target's index), -1 before item 0
        j = target_index[:, None] - self.max_len + torch.arange(self.max_len, device=rows.device)[None, :]
        column = (table.shape[1] - count[rows])[:, None] + j  # where item j sits in the right-aligned table
        history = torch.where(j >= 0, table[rows[:, None], column.clamp(min=0)], torch.full_like(j, -1))
        device = next(self.model.parameters()).device
        logits = self.model.score(rows.to(device), history.to(device))  # (n', N); sequential models ignore the users
        return F.softmax(logits.float() / self.temperature, dim=-1), keep


def soft_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Summed ``-sum_i p_teacher(i) log p_student(i)`` over the rows of (n, N) logits and probabilities."""
    return -(teacher_probs.to(student_logits.device) * F.log_softmax(student_logits.float(), dim=-1)).sum()
