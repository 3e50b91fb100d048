"""The plain reference: Hugging Face ``generate`` with ``prefix_allowed_tokens_fn``.

This is how LC-Rec constrains decoding: a Python callback, called for every beam at every
step, looks the generated prefix up in a dict-based trie and returns the allowed token ids.
It is slow (the prompt is encoded once per beam; the callback runs B x beams times per step)
but independent of :mod:`alignrec.llm.beam_search` — a different trie, HF's own beam
bookkeeping — so agreement between the two is a real check (tests/evaluate) and the speed ratio
is a fair measure (benchmarks/beam_search.py).

With the ``code`` normalisation (models trained with the code-only head) a logits processor
replaces HF's full-vocabulary log-probabilities by the log-softmax over the current level's code
tokens, and only then masks the codes the trie does not allow; the search is otherwise HF's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from alignrec.llm.beam_search import BeamSearchOutput, left_pad
from alignrec.llm.vocab import CodeVocabulary


class PlainTrie:
    """``{code prefix tuple: sorted allowed next codes}`` plus ``{full code tuple: item}``."""

    def __init__(self, codes: np.ndarray):
        self.num_levels = int(codes.shape[1])
        self.next_codes: dict[tuple[int, ...], list[int]] = {}
        self.item_of: dict[tuple[int, ...], int] = {}
        for item, row in enumerate(np.asarray(codes).tolist()):
            for depth in range(self.num_levels):
                allowed = self.next_codes.setdefault(tuple(row[:depth]), [])
                if row[depth] not in allowed:
                    allowed.append(row[depth])
            self.item_of[tuple(row)] = item
        for allowed in self.next_codes.values():
            allowed.sort()


class _LevelCodesOnly:
    """HF logits processor: log-softmax over the current level's code tokens, then the trie's mask.

    ``scores`` arrive as HF's full-vocabulary log-probabilities (B * beams, V); renormalising a
    subset of log-probabilities is the log-softmax of those logits alone.
    """

    def __init__(self, prompt_length: int, level_token_ids: Sequence[torch.Tensor], allowed: Any, beams: int):
        self.prompt_length = prompt_length
        self.tables = [t.cpu() for t in level_token_ids]
        self.allowed = allowed
        self.beams = beams

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        level = input_ids.shape[1] - self.prompt_length
        out = torch.full_like(scores, float("-inf"))
        if level >= len(self.tables):
            return out
        ids = self.tables[level].to(scores.device)
        level_scores = scores[:, ids]
        renormalised = level_scores - torch.logsumexp(level_scores, dim=1, keepdim=True)
        for row in range(scores.shape[0]):
            allowed = torch.tensor(self.allowed(row // self.beams, input_ids[row]), dtype=torch.long, device=scores.device)
            out[row, allowed] = scores[row, allowed]  # fillers of dead beams keep HF's score (-inf beams stay -inf)
        out[:, ids] = torch.where(torch.isfinite(out[:, ids]), renormalised, out[:, ids])
        return out


@torch.inference_mode()
def reference_beam_search(
    model: Any,
    prompts: Sequence[Sequence[int]],
    codes: np.ndarray,
    vocabulary: CodeVocabulary,
    beam_size: int,
    top_k: int,
    pad_token_id: int,
    eos_token_id: int | None = None,
    normalisation: str = "full",
) -> BeamSearchOutput:
    """Top-``top_k`` items per prompt with HF beam search constrained by a callback.

    ``codes`` (I, L) are the item codes (row = item index). ``length_penalty=0`` makes HF's
    sequence score the plain sum of token log-probabilities, comparable with the fast path.
    All prompts are generated in one left-padded batch (as LC-Rec does).
    """
    from transformers import GenerationConfig, LogitsProcessorList

    trie = PlainTrie(codes)
    levels = trie.num_levels
    level_token_ids = [t.cpu() for t in vocabulary.level_token_ids]
    code_of_token = [{int(t): code for code, t in enumerate(table.tolist())} for table in level_token_ids]
    token_of_code = vocabulary.token_table
    filler = eos_token_id if eos_token_id is not None else pad_token_id
    device = next(model.parameters()).device

    input_ids, attention_mask = left_pad(prompts, pad_token_id)
    prompt_length = input_ids.shape[1]

    def allowed_tokens(batch_id: int, sequence: torch.Tensor) -> list[int]:
        generated = sequence[prompt_length:].tolist()
        prefix = []
        for level, token in enumerate(generated):
            code = code_of_token[level].get(token)
            if code is None:
                return [filler]  # a dead beam (HF keeps -inf beams when too few are valid)
            prefix.append(code)
        allowed = trie.next_codes.get(tuple(prefix)) if len(prefix) < levels else None
        if not allowed:
            return [filler]
        return [token_of_code[len(prefix)][code] for code in allowed]

    config = GenerationConfig(
        num_beams=beam_size,
        num_return_sequences=beam_size,
        max_new_tokens=levels,
        do_sample=False,
        length_penalty=0.0,
        early_stopping=True,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        return_dict_in_generate=True,
        output_scores=True,
    )
    if normalisation == "code":
        constraint: dict[str, Any] = {"logits_processor": LogitsProcessorList(
            [_LevelCodesOnly(prompt_length, level_token_ids, allowed_tokens, beam_size)])}
    elif normalisation == "full":
        constraint = {"prefix_allowed_tokens_fn": allowed_tokens}
    else:
        raise ValueError(f"normalisation must be full or code, got {normalisation!r}")
    result = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        generation_config=config,
        **constraint,
    )
    sequences = result.sequences[:, prompt_length:].cpu().view(len(prompts), beam_size, -1)
    scores = result.sequences_scores.float().cpu().view(len(prompts), beam_size)
    items = torch.full((len(prompts), top_k), -1, dtype=torch.long)
    best = torch.full((len(prompts), top_k), float("-inf"))
    for user in range(len(prompts)):
        found = 0
        for beam in range(beam_size):
            generated = sequences[user, beam].tolist()
            codes_seen = [code_of_token[level].get(token) for level, token in enumerate(generated[:levels])]
            item = trie.item_of.get(tuple(codes_seen)) if None not in codes_seen else None
            if item is None or not torch.isfinite(scores[user, beam]):
                continue
            items[user, found] = item
            best[user, found] = scores[user, beam]
            found += 1
            if found == top_k:
                break
    return BeamSearchOutput(items=items, scores=best)
