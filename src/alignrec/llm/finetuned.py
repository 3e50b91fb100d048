"""Loading a fine-tuned model the one way evaluation and serving should: ``load_finetuned``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from alignrec.errors import InputError


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


def load_finetuned(path: str | os.PathLike[str], dtype: Any = None, device: str | None = None) -> Finetuned:
    """Load the merged model, its tokenizer (with the code tokens) and the item codes it was trained with.

    Checks that every code token of the codes is a single token of the tokenizer and that the
    model's vocabulary covers them, so a mixed-up folder fails here and not in beam search.
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
    codes = ItemCodes.load(folder)
    tokens = codes.vocabulary()
    ids = tokenizer.convert_tokens_to_ids(tokens)
    unknown = tokenizer.unk_token_id
    missing = [t for t, i in zip(tokens, ids) if i is None or (unknown is not None and i == unknown)]
    if missing:
        raise InputError(f"{folder / 'model'}: the tokenizer lacks {len(missing)} code tokens (e.g. {missing[:3]})")
    if max(ids) >= model.get_input_embeddings().num_embeddings:
        raise InputError(f"{folder / 'model'}: the embedding matrix is smaller than the tokenizer's code token ids")
    return Finetuned(model, tokenizer, codes)
