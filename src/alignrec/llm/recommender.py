"""A fine-tuned model + its item codes, ready to recommend: loading, prompts, batching.

:class:`GenerativeRecommender` is what ``alignrec evaluate`` and ``alignrec precache`` share:
it builds each user's prompt exactly as training does (:mod:`alignrec.tasks.prompts`), sorts
users by prompt length so that batches carry little padding, and runs one of the registered
beam searches (``fast`` = :mod:`alignrec.llm.beam_search`, ``reference`` = HF ``generate``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignrec.errors import InputError
from alignrec.llm.beam_search import BeamSearchOutput, code_token_ids, constrained_beam_search
from alignrec.llm.reference import reference_beam_search
from alignrec.llm.trie import CodeTrie
from alignrec.llm.finetuned import ModelSettings
from alignrec.tasks.prompts import dense_prompt_ids, encode_prompt, sequential_prompt
from alignrec.tokenizer.codes import ItemCodes
from alignrec.utils.io import sha256_file
from alignrec.utils.log import get_logger, progress_bar

log = get_logger(__name__)

# Files at most this large are hashed whole for the model version; larger ones (weights) by
# size + their first and last MiB, so that versioning a 14 GB folder takes milliseconds.
_FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE_BYTES = 2**20


@dataclass(frozen=True)
class FinetunePaths:
    """Where the pieces of a fine-tuned run are (see docs/architecture.md)."""

    finetune_dir: Path  # holds model/, item_codes.parquet, codes_meta.json
    model_dir: Path
    run_dir: Path  # the run folder (parent of finetune/), where dataset/ and eval/ live

    @property
    def dataset_dir(self) -> Path:
        return self.run_dir / "dataset"


def resolve_finetune(path: str | os.PathLike[str]) -> FinetunePaths:
    """Accept ``RUN``, ``RUN/finetune`` or ``RUN/finetune/model`` (the LLM stage's rule)."""
    from alignrec.llm.finetuned import finetune_dir

    folder = finetune_dir(path)
    return FinetunePaths(folder, folder / "model", folder.parent)


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    if size <= _FULL_HASH_LIMIT:
        return sha256_file(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(_SAMPLE_BYTES))
        handle.seek(size - _SAMPLE_BYTES)
        digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def model_version(finetune_dir: str | os.PathLike[str]) -> str:
    """A short fingerprint of a fine-tuned model folder and its item codes (16 hex digits).

    Every file under ``model/`` counts (name + content; weight files by size and their first
    and last MiB), plus ``item_codes.parquet`` and ``codes_meta.json``. Cache entries carry it,
    so a pre-cache run knows which entries an older model wrote.
    """
    finetune_dir = Path(finetune_dir)
    digest = hashlib.sha256()
    files = sorted(p for p in (finetune_dir / "model").rglob("*") if p.is_file())
    files += [finetune_dir / "item_codes.parquet", finetune_dir / "codes_meta.json"]
    for file in files:
        if not file.is_file():
            raise InputError(f"{file}: missing from the fine-tuned model folder")
        digest.update(str(file.relative_to(finetune_dir)).encode())
        digest.update(_file_digest(file).encode())
    return digest.hexdigest()[:16]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"device {device!r}: expected auto, cpu, cuda or cuda:N") from None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise InputError(f"dtype {dtype!r}: expected one of auto, {', '.join(table)}")
    return table[dtype]


# --------------------------------------------------------------------------- search registry

SearchFunction = Callable[["GenerativeRecommender", Sequence[Sequence[int]], int, int], BeamSearchOutput]


def _fast(recommender: GenerativeRecommender, prompts: Sequence[Sequence[int]], beam_size: int, top_k: int) -> BeamSearchOutput:
    return constrained_beam_search(
        recommender.model, prompts, recommender.trie, recommender.level_token_ids, beam_size, top_k,
        recommender.pad_token_id, normalisation=recommender.settings.head,
    )


def _reference(
    recommender: GenerativeRecommender, prompts: Sequence[Sequence[int]], beam_size: int, top_k: int
) -> BeamSearchOutput:
    return reference_beam_search(
        recommender.model,
        prompts,
        recommender.codes.codes,
        recommender.level_token_ids,
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
                 settings: ModelSettings | None = None):
        self.model = model.eval()
        # How the model was trained: its prompt format and code normalisation (from its config.json).
        self.settings = settings if settings is not None else ModelSettings.of(model)
        self.tokenizer = tokenizer
        self.codes = codes
        self.version = version
        self.device = next(model.parameters()).device
        self.trie = CodeTrie.from_codes(codes.codes, codes.codebook_sizes).to(self.device)
        self.level_token_ids = [t.to(self.device) for t in code_token_ids(tokenizer, codes.codebook_sizes)]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise InputError("the tokenizer has neither a pad nor an end-of-sequence token; one is needed for batching")
        self.pad_token_id = int(pad)
        self._item_strings = [codes.item_string(i) for i in range(codes.num_items)]
        self._token_table = [t.cpu().tolist() for t in self.level_token_ids]  # [level][code] -> token id
        self._dense_instruction: list[int] | None = None

    @property
    def num_items(self) -> int:
        return self.codes.num_items

    def prompt_ids(self, history: Sequence[int]) -> list[int]:
        """Token ids of the sequential prompt for ``history`` (item indices, oldest first), in the
        format the model was trained on."""
        if self.settings.sequential_format == "dense":
            if self._dense_instruction is None:
                self._dense_instruction = dense_prompt_ids(self.tokenizer, [])
            codes = self.codes.codes
            tokens = [int(self._token_table[level][code]) for i in history for level, code in enumerate(codes[int(i)])]
            return self._dense_instruction + tokens
        return encode_prompt(self.tokenizer, sequential_prompt([self._item_strings[int(i)] for i in history]))

    def recommend(
        self,
        histories: Sequence[Sequence[int]],
        top_k: int,
        beam_size: int,
        batch_size: int = 16,
        method: str = "fast",
        show_progress: bool = True,
    ) -> BeamSearchOutput:
        """Top-``top_k`` items for every history (rows in input order)."""
        if method not in SEARCH_METHODS:
            raise InputError(f"search method {method!r}: expected one of {sorted(SEARCH_METHODS)}")
        search = SEARCH_METHODS[method]
        prompts = [self.prompt_ids(h) for h in histories]
        # Longest first: similar lengths share a batch (little padding) and an out-of-memory
        # error, if any, shows up on the first batch rather than at the end.
        order = np.argsort([-len(p) for p in prompts], kind="stable")
        items = torch.full((len(prompts), top_k), -1, dtype=torch.long)
        scores = torch.full((len(prompts), top_k), float("-inf"))
        bar = progress_bar(len(prompts), "beam search", unit="user") if show_progress else None
        for start in range(0, len(prompts), batch_size):
            rows = order[start : start + batch_size]
            output = search(self, [prompts[r] for r in rows], beam_size, top_k)
            index = torch.as_tensor(rows, dtype=torch.long)
            items[index] = output.items
            scores[index] = output.scores
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        check_recommendations(items, self.trie.num_items)
        return BeamSearchOutput(items=items, scores=scores)


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
) -> tuple[GenerativeRecommender, FinetunePaths]:
    """Load ``RUN`` or ``RUN/finetune`` with the LLM stage's loader (:func:`alignrec.llm.finetuned.load_finetuned`:
    merged model, tokenizer with the code tokens, item codes, checked against each other).

    ``codes`` replaces the folder's item codes (pre-cache passes the codes extended with items
    registered since fine-tuning); every code token must already be in the tokenizer.
    """
    from alignrec.llm.finetuned import load_finetuned

    paths = resolve_finetune(path)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    model, tokenizer, item_codes = load_finetuned(paths.finetune_dir, dtype=torch_dtype, device=str(torch_device),
                                                  llm_layers=llm_layers)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if codes is not None:
        item_codes = codes
    version = model_version(paths.finetune_dir)
    log.info("loaded %s (version %s, %d items, device %s, %s)", paths.model_dir, version, item_codes.num_items, torch_device, torch_dtype)
    return GenerativeRecommender(model, tokenizer, item_codes, version), paths
