"""A fine-tuned run, read the one way evaluation, pre-cache and serving all read it.

:class:`FinetunedRun` locates the folder ``alignrec finetune`` wrote (``RUN``, ``RUN/finetune``
or ``RUN/finetune/model``), fingerprints it (:meth:`FinetunedRun.version`), checks that its
model and item codes are a pair and that its codes describe a data set's catalogue, and loads
the merged model (:func:`load_finetuned`). :class:`ModelSettings`, stored in the model's
config.json, tells inference how the model was trained (head, sequence format, depth).
"""

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
from alignrec.llm.format import SequenceFormat
from alignrec.utils.io import read_json, sha256_file

DEFAULT_MAX_HISTORY = 20  # alignrec prepare's default history cut


# The key of the fine-tuned model's config.json that tells inference how the model was trained.
SETTINGS_KEY = "alignrec"


@dataclass(frozen=True)
class ModelSettings:
    """How a fine-tuned model was trained, which inference must repeat (stored in its config.json).

    ``head``: how code positions were normalised (``code``: level code tokens only, ``full``:
    the whole vocabulary); ``sequential_format``: the prompt of the sequential task (``dense`` or
    ``lcrec``); ``llm_layers``: decoder layers kept from the backbone (its full depth when not
    truncated). Models written before these settings existed read as ``full`` / ``lcrec``, and
    those written before the item head as ranked by beam search.
    """

    head: str = "full"
    sequential_format: str = "lcrec"
    llm_layers: int | None = None
    # Fingerprint of the item codes the model was trained with (codes_fingerprint): the model and
    # the codes beside it must be a pair, or beam search would write other items' codes.
    codes_version: str | None = None
    # The newest items a prompt holds; None for models written before it was recorded, which
    # read as the prepare stage's default history cut (:data:`DEFAULT_MAX_HISTORY`).
    max_history: int | None = None
    # The item head (alignrec.llm.item_head): the weight of its loss in training (0 = not trained),
    # the ranking inference uses (beam, item or fused; chosen on validation) and fused's weight.
    item_loss_weight: float = 0.0
    ranker: str = "beam"
    fusion_weight: float = 0.0
    # A learnt vector and bias per item in the item head (alignrec.llm.item_head.ItemResidual),
    # saved beside the weights in the model folder.
    item_residual: bool = False

    @classmethod
    def from_mapping(cls, stored: Any) -> ModelSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(stored or {}).items() if k in names})

    @classmethod
    def of(cls, model: Any) -> ModelSettings:
        return cls.from_mapping(getattr(model.config, SETTINGS_KEY, None))

    def store(self, model: Any) -> None:
        setattr(model.config, SETTINGS_KEY, dataclasses.asdict(self))

    @property
    def format(self) -> SequenceFormat:
        """The sequence format the model was trained on (its prompts at inference)."""
        return SequenceFormat(kind=self.sequential_format, max_history=self.max_history or DEFAULT_MAX_HISTORY)


def codes_fingerprint(codes: Any) -> str:
    """A short content hash of item codes (the codes, the codebook sizes and the item ids)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(codes.codes, dtype=np.int64).tobytes())
    digest.update(json.dumps([list(codes.codebook_sizes), list(codes.item_ids or [])]).encode())
    return digest.hexdigest()[:16]


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


# Files at most this large are hashed whole for the model version; larger ones (weights) by
# size + their first and last MiB, so that versioning a 14 GB folder takes milliseconds.
_FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE_BYTES = 2**20


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


@dataclass(frozen=True)
class FinetunedRun:
    """Where the pieces of a fine-tuned run are, and the checks every reader of it makes."""

    finetune_dir: Path  # holds model/, item_codes.parquet, codes_meta.json
    run_dir: Path  # the run folder (parent of finetune/), where dataset/ and the other stages live

    @classmethod
    def locate(cls, path: str | os.PathLike[str]) -> FinetunedRun:
        """Accept ``RUN``, ``RUN/finetune`` or ``RUN/finetune/model``."""
        path = Path(path)
        for candidate in (path / "finetune", path, path.parent):
            if (candidate / "model" / "config.json").is_file() and (candidate / "item_codes.parquet").is_file():
                return cls(candidate, candidate.parent)
        raise InputError(
            f"{path}: no fine-tuned model (expected model/config.json and item_codes.parquet, written by "
            "`alignrec finetune`)"
        )

    @property
    def model_dir(self) -> Path:
        return self.finetune_dir / "model"

    @property
    def dataset_dir(self) -> Path:
        return self.run_dir / "dataset"

    def codes(self) -> Any:
        """The item codes the model was trained with (checked to be its pair)."""
        from alignrec.tokenizer.codes import ItemCodes

        codes = ItemCodes.load(self.finetune_dir)
        self.check_pair(codes)
        return codes

    def version(self) -> str:
        """A short fingerprint of the model folder and its item codes (16 hex digits).

        Every file under ``model/`` counts (name + content; weight files by size and their first
        and last MiB), plus ``item_codes.parquet`` and ``codes_meta.json``. Cache entries carry it,
        so a pre-cache run knows which entries an older model wrote.
        """
        digest = hashlib.sha256()
        files = sorted(p for p in self.model_dir.rglob("*") if p.is_file())
        files += [self.finetune_dir / "item_codes.parquet", self.finetune_dir / "codes_meta.json"]
        for file in files:
            if not file.is_file():
                raise InputError(f"{file}: missing from the fine-tuned model folder")
            digest.update(str(file.relative_to(self.finetune_dir)).encode())
            digest.update(_file_digest(file).encode())
        return digest.hexdigest()[:16]

    def check_pair(self, codes: Any) -> None:
        """Refuse a folder whose model and item codes are not a pair.

        Reads only ``model/config.json`` (no weights), so serving can check at start-up. A model
        written before fingerprints existed passes (nothing to compare).
        """
        config = read_json(self.model_dir / "config.json")
        expected = ModelSettings.from_mapping(config.get(SETTINGS_KEY)).codes_version
        if expected is None:
            return
        found = codes_fingerprint(codes)
        if found != expected:
            raise InputError(
                f"{self.finetune_dir}: the model in model/ was fine-tuned with item codes {expected}, but "
                f"item_codes.parquet beside it holds codes {found}; the folder mixes two runs (an interrupted save?): "
                "run `alignrec finetune` again"
            )

    def check_catalogue(self, codes: Any, dataset: Any) -> None:
        """The item codes must describe exactly the data set's items, in the same order."""
        if codes.num_items != dataset.num_items:
            raise InputError(
                f"{self.finetune_dir}: the model has codes for {codes.num_items} items but the data set {dataset.path} "
                f"has {dataset.num_items}; was the model trained on this data set?"
            )
        ids = codes.item_ids
        if ids is not None and list(ids) != list(dataset.item_ids):
            first = next(i for i, (a, b) in enumerate(zip(ids, dataset.item_ids, strict=True)) if a != b)
            raise InputError(
                f"{self.finetune_dir}: item {first} is {ids[first]!r} in the model's item codes but "
                f"{dataset.item_ids[first]!r} in {dataset.path}; the codes belong to another data set"
            )


def write_model(model: Any, tokenizer: Any, folder: str | os.PathLike[str]) -> None:
    """Save a merged fine-tuned model into ``folder``: weights and config (with its :class:`ModelSettings`),
    tokenizer, and the item head's residual, if the model has one, in its own file (from_pretrained
    would drop it from the weights)."""
    from alignrec.llm.item_head import attach_item_residual, detach_item_residual, save_item_residual

    residual = detach_item_residual(model)
    try:
        model.save_pretrained(folder)
    finally:
        if residual is not None:
            attach_item_residual(model, residual)
    tokenizer.save_pretrained(folder)
    if residual is not None:
        save_item_residual(residual, folder)


def load_finetuned(path: str | os.PathLike[str], dtype: Any = None, device: str | None = None,
                   llm_layers: int | None = None) -> Finetuned:
    """Load the merged model, its tokenizer (with the code tokens) and the item codes it was trained with.

    Checks that every code token of the codes is a single token of the tokenizer and that the
    model's vocabulary covers them, so a mixed-up folder fails here and not in beam search. The
    model loads at the depth it was fine-tuned at; ``llm_layers`` (if given) must equal it.
    """
    from alignrec.llm.backbone import load_causal_lm, load_tokenizer, resolve_backbone
    from alignrec.llm.vocab import CodeVocabulary

    run = FinetunedRun.locate(path)
    source = resolve_backbone(str(run.model_dir))
    tokenizer = load_tokenizer(source)
    model = load_causal_lm(source, dtype)
    codes = run.codes()
    if ModelSettings.of(model).item_residual:
        from alignrec.llm.item_head import attach_item_residual, load_item_residual

        dim = int(model.get_output_embeddings().weight.shape[1])
        attach_item_residual(model, load_item_residual(run.model_dir, codes.num_items, dim))
    if device:
        model = model.to(device)
    model.eval()
    check_depth(model, str(run.model_dir), llm_layers)
    try:
        vocabulary = CodeVocabulary.from_tokenizer(tokenizer, codes.codebook_sizes)
    except InputError as error:
        raise InputError(f"{run.model_dir}: {error}") from None
    if vocabulary.max_token_id >= model.get_input_embeddings().num_embeddings:
        raise InputError(f"{run.model_dir}: the embedding matrix is smaller than the tokenizer's code token ids")
    return Finetuned(model, tokenizer, codes)
