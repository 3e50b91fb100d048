"""A fine-tuned model + its item codes, ready to recommend: loading, prompts, batching.

:class:`GenerativeRecommender` is what ``alignrec evaluate``, ``alignrec precache`` and
``alignrec serve`` share: it builds each user's prompt with the model's sequence format
(:class:`alignrec.llm.format.SequenceFormat`, the one training used), sorts users by prompt
length so that batches carry little padding, and runs one of the registered beam searches
(``fast`` = :mod:`alignrec.llm.beam_search`, ``reference`` = HF ``generate``), or, for a model
trained with the item head, ranks by that head alone or fused with the beam
(:mod:`alignrec.llm.item_head`; the model's settings say which).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import torch

from alignrec.errors import InputError
from alignrec.llm.backbone import resolve_dtype
from alignrec.llm.beam_search import BeamSearchOutput, constrained_beam_search, exclusion_mask
from alignrec.llm.finetuned import FinetunedRun, ModelSettings
from alignrec.llm.item_head import (
    ItemCatalogue,
    check_ranker,
    fuse,
    item_logits,
    prompt_states,
    top_items,
)
from alignrec.llm.reference import reference_beam_search
from alignrec.llm.trie import CodeTrie
from alignrec.llm.vocab import CodeVocabulary
from alignrec.tokenizer.codes import ItemCodes
from alignrec.utils.log import get_logger, progress_bar

log = get_logger(__name__)

def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"device {device!r}: expected auto, cpu, cuda or cuda:N") from None


# --------------------------------------------------------------------------- search registry

SearchFunction = Callable[..., BeamSearchOutput]
# (recommender, prompts, beam_size, top_k, exclude) -> output; exclude: per prompt, item indices or None


def _fast(recommender: GenerativeRecommender, prompts: Sequence[Sequence[int]], beam_size: int, top_k: int,
          exclude: Sequence[Collection[int]] | None = None) -> BeamSearchOutput:
    return constrained_beam_search(
        recommender.model, prompts, recommender.trie, recommender.vocabulary, beam_size, top_k,
        recommender.pad_token_id, normalisation=recommender.settings.head, exclude=exclude,
    )


def _reference(
    recommender: GenerativeRecommender, prompts: Sequence[Sequence[int]], beam_size: int, top_k: int,
    exclude: Sequence[Collection[int]] | None = None,
) -> BeamSearchOutput:
    if exclude is not None and any(exclude):
        raise InputError("the reference search (HF generate) does not exclude items; use the fast search")
    return reference_beam_search(
        recommender.model,
        prompts,
        recommender.codes.codes,
        recommender.vocabulary,
        beam_size,
        top_k,
        recommender.pad_token_id,
        recommender.tokenizer.eos_token_id,
        normalisation=recommender.settings.head,
    )


SEARCH_METHODS: dict[str, SearchFunction] = {"fast": _fast, "reference": _reference}


class GenerativeRecommender:
    """A causal LM with code tokens + the item codes it may generate."""

    def __init__(self, model: Any, tokenizer: Any, codes: ItemCodes, version: str = "unversioned",
                 settings: ModelSettings | None = None, vocabulary: CodeVocabulary | None = None):
        self.model = model.eval()
        # How the model was trained: its sequence format and code normalisation (from its config.json).
        self.settings = settings if settings is not None else ModelSettings.of(model)
        self.format = self.settings.format
        self.tokenizer = tokenizer
        self.codes = codes
        self.version = version
        self.device = next(model.parameters()).device
        self.trie = CodeTrie.from_codes(codes.codes, codes.codebook_sizes).to(self.device)
        if vocabulary is None:
            vocabulary = CodeVocabulary.from_tokenizer(tokenizer, codes.codebook_sizes)
        self.vocabulary = vocabulary.to(self.device)
        self._catalogue: ItemCatalogue | None = None  # the item head's view of the codes, built when first used
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise InputError("the tokenizer has neither a pad nor an end-of-sequence token; one is needed for batching")
        self.pad_token_id = int(pad)

    @property
    def num_items(self) -> int:
        return self.codes.num_items

    def use_codes(self, codes: ItemCodes) -> None:
        """Search the catalogue ``codes`` from now on: the fine-tuned items followed by items
        registered since (their code tokens are already in the tokenizer)."""
        self.codes = codes
        self.trie = CodeTrie.from_codes(codes.codes, codes.codebook_sizes).to(self.device)
        self._catalogue = None

    def prompt_ids(self, history: Sequence[int]) -> list[int]:
        """Token ids of the sequential prompt for ``history`` (item indices, oldest first)."""
        return self.format.prompt_ids(self.tokenizer, self.vocabulary, self.codes, history)

    def recommend(
        self,
        histories: Sequence[Sequence[int]],
        top_k: int,
        beam_size: int,
        batch_size: int = 16,
        method: str = "fast",
        show_progress: bool = True,
        exclude: Sequence[Collection[int]] | None = None,
        ranker: str | None = None,
    ) -> BeamSearchOutput:
        """Top-``top_k`` items for every history (rows in input order); ``exclude[i]``: item
        indices history ``i`` must not get (the search spends no beam on them).

        ``ranker``: ``beam``, ``item`` or ``fused`` (:mod:`alignrec.llm.item_head`); None = the
        one the model's settings record (chosen on validation when it was fine-tuned)."""
        if method not in SEARCH_METHODS:
            raise InputError(f"search method {method!r}: expected one of {sorted(SEARCH_METHODS)}")
        ranker = ranker or self.settings.ranker
        check_ranker(ranker, self.settings)
        if ranker != "beam" and method != "fast":
            raise InputError(f"ranker {ranker!r} runs on the fast search only, not {method!r}")
        search = SEARCH_METHODS[method] if ranker == "beam" else self._rank_with_item_head(ranker)
        if exclude is not None and len(exclude) != len(histories):
            raise ValueError(f"{len(exclude)} exclusion sets for {len(histories)} histories")
        prompts = [self.prompt_ids(h) for h in histories]
        # Longest first: similar lengths share a batch (little padding) and an out-of-memory
        # error, if any, shows up on the first batch rather than at the end.
        order = np.argsort([-len(p) for p in prompts], kind="stable")
        items = torch.full((len(prompts), top_k), -1, dtype=torch.long)
        scores = torch.full((len(prompts), top_k), float("-inf"))
        bar = progress_bar(len(prompts), "beam search", unit="user") if show_progress else None
        for start in range(0, len(prompts), batch_size):
            rows = order[start : start + batch_size]
            output = search(self, [prompts[r] for r in rows], beam_size, top_k,
                            None if exclude is None else [exclude[r] for r in rows])
            index = torch.as_tensor(rows, dtype=torch.long)
            items[index] = output.items
            scores[index] = output.scores
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        check_recommendations(items, self.trie.num_items)
        return BeamSearchOutput(items=items, scores=scores)

    @property
    def catalogue(self) -> ItemCatalogue:
        if self._catalogue is None:
            self._catalogue = ItemCatalogue(self.codes.codes, self.codes.codebook_sizes, self.device)
        return self._catalogue

    def item_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """The item head's log-probabilities over the catalogue (B, N) for prompt states (B, D)."""
        vectors, bias = self.catalogue.vectors(self.model, self.vocabulary)
        return torch.log_softmax(item_logits(states, vectors, bias), dim=-1)

    def _rank_with_item_head(self, ranker: str) -> SearchFunction:
        """A search function (as in :data:`SEARCH_METHODS`) ranking by the item head, alone or fused with the beam."""

        @torch.inference_mode()
        def search(recommender: GenerativeRecommender, prompts: Sequence[Sequence[int]], beam_size: int, top_k: int,
                   exclude: Sequence[Collection[int]] | None = None) -> BeamSearchOutput:
            excluded = exclusion_mask(exclude, len(prompts), recommender.num_items, recommender.device)
            if ranker == "item":
                states = prompt_states(recommender.model, prompts, recommender.pad_token_id)
                items, scores = top_items(recommender.item_log_probs(states), top_k, excluded)
            else:
                beam = constrained_beam_search(
                    recommender.model, prompts, recommender.trie, recommender.vocabulary, beam_size, beam_size,
                    recommender.pad_token_id, normalisation="code", exclude=exclude, keep_prompt_state=True,
                )
                assert beam.prompt_state is not None
                items, scores = fuse(recommender.item_log_probs(beam.prompt_state), beam.items.to(recommender.device),
                                     beam.scores.to(recommender.device), recommender.settings.fusion_weight, top_k, excluded)
            return BeamSearchOutput(items=items.cpu(), scores=scores.float().cpu())

        return search


def check_recommendations(items: torch.Tensor, num_items: int) -> None:
    """Fail loudly if a list holds an unknown item or a repeat.

    Constrained decoding makes both impossible by construction; this guards the construction
    (an ``assert`` statement would vanish under ``python -O``).
    """
    valid = items >= 0
    if ((items >= num_items) & valid).any():
        raise AssertionError("beam search returned an item index outside the catalogue")
    rows = items.masked_fill(~valid, -1).sort(dim=1).values
    repeated = (rows[:, 1:] == rows[:, :-1]) & (rows[:, 1:] >= 0)
    if repeated.any():
        raise AssertionError("beam search returned the same item twice in one list")
    # Padding (-1) may only trail: a list never has a hole before a real item.
    if (valid[:, 1:] & ~valid[:, :-1]).any():
        raise AssertionError("beam search returned a list with a gap")


def load_recommender(
    path: str | os.PathLike[str], device: str = "auto", dtype: str = "auto", codes: ItemCodes | None = None,
    llm_layers: int | None = None,
) -> tuple[GenerativeRecommender, FinetunedRun]:
    """Load ``RUN`` or ``RUN/finetune`` with :func:`alignrec.llm.finetuned.load_finetuned` (merged
    model, tokenizer with the code tokens, item codes, checked against each other).

    ``codes`` replaces the folder's item codes (pre-cache passes the codes extended with items
    registered since fine-tuning); every code token must already be in the tokenizer.
    """
    from alignrec.llm.finetuned import load_finetuned

    run = FinetunedRun.locate(path)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    model, tokenizer, item_codes = load_finetuned(run.finetune_dir, dtype=torch_dtype, device=str(torch_device),
                                                  llm_layers=llm_layers)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if codes is not None:
        item_codes = codes
    version = run.version()
    log.info("loaded %s (version %s, %d items, device %s, %s)", run.model_dir, version, item_codes.num_items, torch_device,
             torch_dtype)
    return GenerativeRecommender(model, tokenizer, item_codes, version), run
