"""Rollouts and the log-probabilities of a group's completions, from one pass over the prompt.

- :func:`rollouts`: the evaluation's own constrained beam search
  (:func:`alignrec.llm.beam_search.constrained_beam_search`, wrapped, never copied): ``G`` items per
  prompt, best first, with their codes.
- :func:`completion_log_probs`: code-token log-probabilities, with gradient, of ``G`` completions
  per prompt under the code-only normalisation the model is trained with
  (:mod:`alignrec.llm.code_head`). The prompt runs through the decoder once; its KV cache is shared
  by all the prompt's completions (:class:`alignrec.llm.shared_prefix.SharedPrefixCache`), whose
  ``L - 1`` code tokens run as one short batch. :func:`completion_log_probs_reference` computes
  the same numbers the plain way (every prompt + completion as its own sequence); a test checks
  that the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alignrec.llm.beam_search import BeamSearchOutput, constrained_beam_search, prompt_inputs
from alignrec.llm.code_head import level_log_probs
from alignrec.llm.shared_prefix import SharedPrefixCache, shared_prefix_attention_enabled, supports_shared_prefix
from alignrec.llm.trie import CodeTrie
from alignrec.llm.vocab import CodeVocabulary


def rollouts(model: Any, prompts: Sequence[Sequence[int]], trie: CodeTrie, vocabulary: CodeVocabulary, beams: int,
             pad_token_id: int, normalisation: str = "code") -> BeamSearchOutput:
    """The top ``beams`` items of each prompt by the evaluation's constrained beam search (model in eval mode)."""
    was_training = model.training
    model.eval()
    try:
        return constrained_beam_search(model, prompts, trie, vocabulary, beams, beams, pad_token_id,
                                       normalisation=normalisation)
    finally:
        model.train(was_training)


def _levels(model: Any, vocabulary: CodeVocabulary, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Token log-probs: hidden (N, L, D) states predicting each level, codes (N, L) -> (N, L)."""
    columns = [level_log_probs(model, vocabulary, hidden[:, level], level).gather(1, codes[:, level, None])
               for level in range(codes.shape[1])]
    return torch.cat(columns, dim=1)


def completion_log_probs(model: Any, prompts: Sequence[Sequence[int]], codes: torch.Tensor, vocabulary: CodeVocabulary,
                         pad_token_id: int, share_prompt_cache: bool | None = None) -> torch.Tensor:
    """log p of each code token of ``codes`` (B, G, L) item codes after prompt b -> (B, G, L) float32.

    Code-only normalisation (the level's code tokens). The prompt is run once; its cache serves all
    G completions (shared-prefix attention where the model supports it, else the cache's rows
    repeated G times).
    """
    users, group, levels = codes.shape
    device = next(model.parameters()).device
    codes = codes.to(device)
    vocabulary = vocabulary if vocabulary.level_of.device == device else vocabulary.to(device)
    decoder = model.get_decoder()
    input_ids, attention_mask, position_ids = prompt_inputs(prompts, pad_token_id, device)  # (B, T) each
    output = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
    first = output.last_hidden_state[:, -1, :]  # (B, D): predicts level 0 of every completion
    flat = codes.reshape(users * group, levels)  # (B*G, L)
    first = first.repeat_interleave(group, dim=0)  # (B*G, D)
    if levels == 1:
        return _levels(model, vocabulary, first[:, None], flat).view(users, group, levels)
    tokens = torch.stack([vocabulary.level_token_ids[level][flat[:, level]] for level in range(levels - 1)], dim=1)
    lengths = attention_mask.sum(dim=1).repeat_interleave(group)  # (B*G,)
    positions = lengths[:, None] + torch.arange(levels - 1, device=device)[None, :]  # (B*G, L-1)
    if share_prompt_cache is None:
        share_prompt_cache = supports_shared_prefix(model)
    if share_prompt_cache:
        cache = SharedPrefixCache(output.past_key_values, attention_mask)
        with shared_prefix_attention_enabled(model):
            rest = decoder(input_ids=tokens, position_ids=positions, past_key_values=cache, use_cache=True,
                           shared_prefix_cache=cache)
    else:
        cache = output.past_key_values
        cache.reorder_cache(torch.arange(users, device=device).repeat_interleave(group))
        mask = torch.cat([attention_mask.repeat_interleave(group, dim=0),
                          attention_mask.new_ones((users * group, levels - 1))], dim=1)
        rest = decoder(input_ids=tokens, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True)
    hidden = torch.cat([first[:, None], rest.last_hidden_state], dim=1)  # (B*G, L, D)
    return _levels(model, vocabulary, hidden, flat).view(users, group, levels)


def completion_log_probs_reference(model: Any, prompts: Sequence[Sequence[int]], codes: torch.Tensor,
                                   vocabulary: CodeVocabulary, pad_token_id: int) -> torch.Tensor:
    """The plain path of :func:`completion_log_probs`: each prompt + completion run alone (no cache)."""
    users, group, levels = codes.shape
    device = next(model.parameters()).device
    decoder = model.get_decoder()
    rows = []
    for b in range(users):
        for g in range(group):
            item = codes[b, g].to(device)
            answer = [int(vocabulary.level_token_ids[level][item[level]]) for level in range(levels)]
            ids = torch.tensor([list(prompts[b]) + answer[:-1]], device=device)
            hidden = decoder(input_ids=ids).last_hidden_state[0, len(prompts[b]) - 1 :]  # (L, D)
            rows.append(_levels(model, vocabulary.to(device), hidden[None], item[None]))
    return torch.cat(rows).view(users, group, levels)
