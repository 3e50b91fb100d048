"""Batched, trie-constrained beam search over item codes (the fast path).

One call handles a batch of users. The prompt of each user is run through the model once; its
KV cache is then copied to the user's beams and reordered by beam index at every step, exactly
like Hugging Face's beam search does after its first step — but HF runs the *prompt* once per
beam (B x beams rows), which dominates the cost for short answers such as 4 code tokens.

The answer always has exactly L code tokens (one per level), so the search runs L steps and
never needs an end-of-sequence token. At each level every live beam's allowed continuations
come from :class:`~alignrec.llm.trie.CodeTrie` tables with one ``gather``; the candidates
of all beams of a user are ranked together with one ``topk``. There is no Python loop over
users or beams — only over the L levels.

Scores are sums of log-probabilities of the code tokens, normalised one of two ways — the way
the model was trained (``normalisation``):

- ``full``: log-softmax over the model's whole vocabulary, then restricted to the allowed
  tokens; what HF's ``generate(num_beams=..., prefix_allowed_tokens_fn=...)`` reports with
  ``length_penalty=0`` (see :mod:`alignrec.llm.reference`);
- ``code``: log-softmax over the current level's code tokens only (the code-only head of
  :mod:`alignrec.llm.code_head`), computed from the decoder's hidden state and those rows of the
  output matrix; the full ``V``-row head is never evaluated. The reference applies the same
  normalisation by masking every other logit to -inf.

Exclusion (``exclude``: items a user must not get, e.g. those already in the history) happens
*inside* the search: at the last level an excluded item's candidate is -inf before the ``topk``,
and at earlier levels so is a prefix below which every item is excluded
(:meth:`~alignrec.llm.trie.CodeTrie.excluded_nodes`). Beams therefore go to other items, and the
top-K is the best K allowed items the beams reach — not a top-K with holes filtered afterwards.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from alignrec.llm.shared_prefix import SharedPrefixCache, shared_prefix_attention_enabled, supports_shared_prefix
from alignrec.llm.trie import CodeTrie
from alignrec.llm.code_head import level_log_probs
from alignrec.llm.vocab import CodeVocabulary

NEG_INF = float("-inf")


@dataclass
class BeamSearchOutput:
    """Top-K items per user, best first: ``items`` (B, K) item indices (-1 where fewer than K
    items exist) and ``scores`` (B, K) summed code-token log-probabilities (-inf there)."""

    items: torch.Tensor  # (B, K) int64
    scores: torch.Tensor  # (B, K) float32
    # (B, D) the decoder's last hidden state of each prompt (``keep_prompt_state``): the item head's input
    prompt_state: torch.Tensor | None = None


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), prompts aligned to the right (left padding),
    so that every user's next token is predicted at the same last position."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    length = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, length - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
        attention_mask[row, length - len(prompt) :] = 1
    return input_ids, attention_mask


def prompt_inputs(prompts: Sequence[Sequence[int]], pad_token_id: int,
                  device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids), each (B, T) on ``device``: the prompts left-padded
    (:func:`left_pad`), positions counting real tokens only, so a left-padded prompt is encoded
    exactly as alone."""
    input_ids, attention_mask = left_pad(prompts, pad_token_id)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    return input_ids, attention_mask, (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def exclusion_mask(exclude: Sequence[Collection[int]] | None, users: int, num_items: int,
                   device: Any = "cpu") -> torch.Tensor | None:
    """(B, N) True where an item is excluded for a user; None when nothing is."""
    if exclude is None or not any(len(items) for items in exclude):
        return None
    if len(exclude) != users:
        raise ValueError(f"{len(exclude)} exclusion sets for {users} prompts")
    rows = [row for row, items in enumerate(exclude) for _ in items]
    columns = [int(item) for items in exclude for item in items]
    if min(columns) < 0 or max(columns) >= num_items:
        raise ValueError(f"excluded item indices must be in 0..{num_items - 1}")
    mask = torch.zeros((users, num_items), dtype=torch.bool)
    mask[rows, columns] = True
    return mask.to(device)


def _accepts(model: Any, argument: str) -> bool:
    try:
        return argument in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _last_log_probs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """log p(token) under the full vocabulary for selected tokens, without materialising a
    second (N, V) tensor: ``logit[token] - logsumexp(logits)``.

    logits (N, V); token_ids (N, C) -> (N, C) float32.
    """
    logits = logits.float()
    return logits.gather(1, token_ids) - torch.logsumexp(logits, dim=1, keepdim=True)


NORMALISATIONS = ("full", "code")


class _Scorer:
    """One forward step of the search and the log-probabilities of a level's codes after it.

    ``full``: the causal LM's logits at the last position (``logits_to_keep=1``);
    ``code``: the decoder's last hidden state, scored against the level's code rows only.
    """

    def __init__(self, model: Any, normalisation: str, vocabulary: CodeVocabulary):
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        self.model = model
        self.normalisation = normalisation
        self.vocabulary = vocabulary
        if normalisation == "code":
            self.network = model.get_decoder()
            self.extra: dict[str, Any] = {}
        else:
            self.network = model
            self.extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
        self.last: torch.Tensor | None = None  # (N, V) logits or (N, D) hidden states

    def step(self, **inputs: Any) -> Any:
        output = self.network(**inputs, **self.extra)
        if self.normalisation == "code":
            self.last = output.last_hidden_state[:, -1, :]
        else:
            self.last = output.logits[:, -1, :]
        cache = output.past_key_values
        del output
        return cache

    def level_scores(self, level: int, codes: torch.Tensor) -> torch.Tensor:
        """log p of ``codes`` (N, F) level-``level`` code indices (clamped >= 0) -> (N, F)."""
        assert self.last is not None
        if self.normalisation == "code":
            return level_log_probs(self.model, self.vocabulary, self.last, level).gather(1, codes)
        tokens = self.vocabulary.level_token_ids[level][codes]  # (N, F)
        return _last_log_probs(self.last, tokens)


def _excluded_nodes(trie: CodeTrie, exclude: Sequence[Collection[int]] | None, users: int,
                    device: torch.device) -> list[torch.Tensor] | None:
    """Per level, (B, N) masks of the trie nodes each user's beams must not enter; None when
    nothing is excluded."""
    excluded = exclusion_mask(exclude, users, trie.num_items, device)
    return None if excluded is None else trie.excluded_nodes(excluded)


@torch.inference_mode()
def constrained_beam_search(
    model: Any,
    prompts: Sequence[Sequence[int]],
    trie: CodeTrie,
    vocabulary: CodeVocabulary,
    beam_size: int,
    top_k: int,
    pad_token_id: int,
    share_prompt_cache: bool | None = None,
    normalisation: str = "full",
    exclude: Sequence[Collection[int]] | None = None,
    keep_prompt_state: bool = False,
) -> BeamSearchOutput:
    """Top-``top_k`` distinct items for each prompt by beam search restricted to the trie.

    ``prompts`` are token id lists (:meth:`alignrec.llm.format.SequenceFormat.prompt_ids`);
    ``vocabulary`` maps level-l codes to token ids (:class:`~alignrec.llm.vocab.CodeVocabulary`).
    Beams keep the ``beam_size`` best prefixes per user at each level; the final list is the
    best ``top_k`` complete sequences (``top_k <= beam_size``, as with HF's
    ``num_return_sequences``).

    ``share_prompt_cache`` keeps one copy of each prompt's KV cache per user instead of one per
    beam (:mod:`alignrec.llm.shared_prefix`); ``None`` = whenever the model supports it.
    ``normalisation``: ``full`` or ``code`` (see the module docstring); use the model's training head.
    ``exclude``: per prompt, item indices that must not be returned (see the module docstring);
    None or all empty = no exclusion (the search is then exactly the plain one).
    ``keep_prompt_state``: also return each prompt's last hidden state (``code`` normalisation
    only), which the item head scores (:mod:`alignrec.llm.item_head`).
    """
    if beam_size < 1 or not 1 <= top_k <= beam_size:
        raise ValueError(f"need 1 <= top_k <= beam_size, got top_k={top_k}, beam_size={beam_size}")
    if vocabulary.num_levels != trie.num_levels:
        raise ValueError(f"{vocabulary.num_levels} token tables for a {trie.num_levels}-level trie")
    device = next(model.parameters()).device
    trie = trie if trie.device == device else trie.to(device)
    if vocabulary.level_of.device != device:
        vocabulary = vocabulary.to(device)
    token_tables = vocabulary.level_token_ids
    users = len(prompts)
    excluded_nodes = _excluded_nodes(trie, exclude, users, device)

    input_ids, attention_mask, position_ids = prompt_inputs(prompts, pad_token_id, device)  # (B, T) each
    prompt_lengths = attention_mask.sum(dim=1)  # (B,)
    scorer = _Scorer(model, normalisation, vocabulary)
    cache = scorer.step(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
    if keep_prompt_state and normalisation != "code":
        raise ValueError("keep_prompt_state needs the code normalisation (the decoder's hidden state)")
    prompt_state = scorer.last.clone() if keep_prompt_state else None
    if share_prompt_cache is None:
        share_prompt_cache = supports_shared_prefix(model)
    if share_prompt_cache:
        cache = SharedPrefixCache(cache, attention_mask)

    width = 1  # beams per user; starts with one (the empty prefix) and grows to beam_size
    beam_prefix = torch.zeros((users, 1), dtype=torch.long, device=device)  # (B, W) prefix ids
    beam_score = torch.zeros((users, 1), dtype=torch.float32, device=device)  # (B, W)
    row_mask = attention_mask  # (B*W, T + level) attention mask of each cache row
    user_offsets = torch.arange(users, device=device)[:, None]  # (B, 1)
    for level in range(trie.num_levels):
        codes, next_ids = trie.children(level, beam_prefix)  # (B, W, F) each
        fanout = codes.shape[-1]
        safe_codes = codes.clamp(min=0)  # (B, W, F); padding reads code 0, masked below
        tokens = token_tables[level][safe_codes]  # (B, W, F)
        log_probs = scorer.level_scores(level, safe_codes.view(users * width, fanout)).view(users, width, fanout)
        alive = (codes >= 0) & torch.isfinite(beam_score)[..., None]  # (B, W, F)
        if excluded_nodes is not None:  # children that lead only to excluded items are dead
            dead = excluded_nodes[level].gather(1, next_ids.clamp(min=0).view(users, width * fanout))
            alive &= ~dead.view(users, width, fanout)
        candidate_scores = (beam_score[..., None] + log_probs).masked_fill(~alive, NEG_INF)
        candidate_scores = candidate_scores.view(users, width * fanout)  # (B, W*F)
        last = level == trie.num_levels - 1
        keep = min(top_k if last else beam_size, width * fanout)
        # sorted=True: best first; ties keep the lower index (a stable, reproducible order).
        beam_score, picked = candidate_scores.topk(keep, dim=1)  # (B, keep)
        chosen_next = next_ids.view(users, width * fanout).gather(1, picked)  # (B, keep)
        alive_picked = torch.isfinite(beam_score)
        if last:
            items = chosen_next.masked_fill(~alive_picked, -1)
            if keep < top_k:  # fewer complete sequences than asked for: pad to (B, top_k)
                pad = top_k - keep
                items = torch.cat([items, items.new_full((users, pad), -1)], dim=1)
                beam_score = torch.cat([beam_score, beam_score.new_full((users, pad), NEG_INF)], dim=1)
            return BeamSearchOutput(items=items.cpu(), scores=beam_score.float().cpu(), prompt_state=prompt_state)

        # Continue every kept beam: its cache row is the row of the beam it extends.
        source_row = (user_offsets * width + picked // fanout).view(-1)  # (B*keep,) rows of the (B*W) cache
        next_tokens = tokens.view(users, width * fanout).gather(1, picked).view(-1, 1)  # (B*keep, 1)
        positions = (prompt_lengths.repeat_interleave(keep) + level).view(-1, 1)  # (B*keep, 1)
        if share_prompt_cache:
            cache.select(source_row, keep)
            with shared_prefix_attention_enabled(model):
                cache = scorer.step(
                    input_ids=next_tokens,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                    shared_prefix_cache=cache,
                )
        else:
            cache.reorder_cache(source_row)
            row_mask = torch.cat([row_mask[source_row], row_mask.new_ones((users * keep, 1))], dim=1)
            cache = scorer.step(
                input_ids=next_tokens,
                attention_mask=row_mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
        beam_prefix = chosen_next.clamp(min=0)  # dead beams point at prefix 0; their score stays -inf
        width = keep
    raise AssertionError("unreachable: the loop returns at the last level")
