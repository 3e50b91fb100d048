"""Loading a fine-tuned model the one way evaluation and serving should: ``load_finetuned``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from alignrec.errors import InputError
from alignrec.utils.io import read_json


# The key of the fine-tuned model's config.json that tells inference how the model was trained.
SETTINGS_KEY = "alignrec"


@dataclass(frozen=True)
class ModelSettings:
    """How a fine-tuned model was trained, which inference must repeat (stored in its config.json).

    ``head``: how code positions were normalised (``code``: level code tokens only, ``full``:
    the whole vocabulary); ``sequential_format``: the prompt of the sequential task (``dense`` or
    ``lcrec``); ``llm_layers``: decoder layers kept from the backbone (its full depth when not
    truncated). Models written before these settings existed read as ``full`` / ``lcrec``.
    """

    head: str = "full"
    sequential_format: str = "lcrec"
    llm_layers: int | None = None
    # Fingerprint of the item codes the model was trained with (codes_fingerprint): the model and
    # the codes beside it must be a pair, or beam search would write other items' codes.
    codes_version: str | None = None

    @classmethod
    def from_mapping(cls, stored: Any) -> ModelSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(stored or {}).items() if k in names})

    @classmethod
    def of(cls, model: Any) -> ModelSettings:
        return cls.from_mapping(getattr(model.config, SETTINGS_KEY, None))

    def store(self, model: Any) -> None:
        setattr(model.config, SETTINGS_KEY, dataclasses.asdict(self))


def codes_fingerprint(codes: Any) -> str:
    """A short content hash of item codes (the codes, the codebook sizes and the item ids)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(codes.codes, dtype=np.int64).tobytes())
    digest.update(json.dumps([list(codes.codebook_sizes), list(codes.item_ids or [])]).encode())
    return digest.hexdigest()[:16]


def check_pair(folder: str | os.PathLike[str], codes: Any = None) -> None:
    """Refuse a fine-tuned folder whose model and item codes are not a pair.

    Reads only ``model/config.json`` and the codes (no weights), so serving can check at start-up.
    A model written before fingerprints existed passes (nothing to compare).
    """
    from alignrec.tokenizer.codes import ItemCodes

    folder = Path(folder)
    config = read_json(folder / "model" / "config.json")
    expected = ModelSettings.from_mapping(config.get(SETTINGS_KEY)).codes_version
    if expected is None:
        return
    found = codes_fingerprint(codes if codes is not None else ItemCodes.load(folder))
    if found != expected:
        raise InputError(
            f"{folder}: the model in model/ was fine-tuned with item codes {expected}, but item_codes.parquet beside "
            f"it holds codes {found}; the folder mixes two runs (an interrupted save?): run `alignrec finetune` again"
        )


def check_depth(model: Any, where: str, expected: int | None = None) -> None:
    """The loaded model must have the depth it was trained at (and the one the caller asks for)."""
    depth = int(model.config.num_hidden_layers)
    trained = ModelSettings.of(model).llm_layers
    if trained is not None and trained != depth:
        raise InputError(f"{where}: the model was fine-tuned with llm_layers={trained} but its config.json "
                         f"has num_hidden_layers={depth}; the folder was changed after fine-tuning")
    if expected and expected != depth:
        raise InputError(f"{where}: llm_layers={expected} was asked for, but this fine-tuned model has {depth} "
                         "decoder layers (a saved model is used at the depth it was trained at)")


class Finetuned(NamedTuple):
    """What ``alignrec finetune`` produced; unpacks as ``model, tokenizer, item_codes``."""

    model: Any
    tokenizer: Any
    item_codes: Any  # alignrec.tokenizer.codes.ItemCodes


def finetune_dir(path: str | os.PathLike[str]) -> Path:
    """Accept ``RUN``, ``RUN/finetune`` or ``RUN/finetune/model``; return the ``finetune`` folder."""
    path = Path(path)
    for candidate in (path / "finetune", path, path.parent):
        if (candidate / "model" / "config.json").is_file() and (candidate / "item_codes.parquet").is_file():
            return candidate
    raise InputError(
        f"{path}: no fine-tuned model (expected model/config.json and item_codes.parquet, written by "
        "`alignrec finetune`)"
    )


def load_finetuned(path: str | os.PathLike[str], dtype: Any = None, device: str | None = None,
                   llm_layers: int | None = None) -> Finetuned:
    """Load the merged model, its tokenizer (with the code tokens) and the item codes it was trained with.

    Checks that every code token of the codes is a single token of the tokenizer and that the
    model's vocabulary covers them, so a mixed-up folder fails here and not in beam search. The
    model loads at the depth it was fine-tuned at; ``llm_layers`` (if given) must equal it.
    """
    from alignrec.llm.backbone import load_causal_lm, load_tokenizer, resolve_backbone
    from alignrec.tokenizer.codes import ItemCodes

    folder = finetune_dir(path)
    source = resolve_backbone(str(folder / "model"))
    tokenizer = load_tokenizer(source)
    model = load_causal_lm(source, dtype)
    if device:
        model = model.to(device)
    model.eval()
    check_depth(model, str(folder / "model"), llm_layers)
    codes = ItemCodes.load(folder)
    check_pair(folder, codes)
    tokens = codes.vocabulary()
    ids = tokenizer.convert_tokens_to_ids(tokens)
    unknown = tokenizer.unk_token_id
    missing = [t for t, i in zip(tokens, ids) if i is None or (unknown is not None and i == unknown)]
    if missing:
        raise InputError(f"{folder / 'model'}: the tokenizer lacks {len(missing)} code tokens (e.g. {missing[:3]})")
    if max(ids) >= model.get_input_embeddings().num_embeddings:
        raise InputError(f"{folder / 'model'}: the embedding matrix is smaller than the tokenizer's code token ids")
    return Finetuned(model, tokenizer, codes)
