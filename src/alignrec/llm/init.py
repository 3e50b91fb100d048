"""Initialisation of the new code-token rows of the embedding (and output) matrices.

Registry :data:`NEW_TOKEN_INITS` (``alignrec finetune --new-token-init NAME``):

``default``
    The paper's choice: no information from the codebooks. The rows are whatever
    ``resize_token_embeddings`` gave them when the tokens were added — in transformers >= 4.46
    ("mean resizing") a draw from N(mu, 1e-9 * Sigma) with mu, Sigma the mean and covariance of
    the pretrained rows, i.e. practically the mean pretrained embedding for every new token (the
    same for the output rows of untied models). This function leaves them untouched.
``sa_init``
    TS-Rec's Semantic-Aware Initialisation: each code token's row is the mean of the pretrained
    input embeddings of the keywords describing its item cluster (``code_descriptions.json`` from
    the tokenizer stage; a keyword of several sub-tokens counts as the mean of its sub-tokens).
    Untied output rows get the same mean taken over the output matrix. Tokens without keywords
    keep the default init (counted in the report).
``mlp``
    The paper's Table 7 ablation: an MLP (2 or 3 layers) projects each code's codebook vector
    (``codebooks.safetensors``) to the LLM width. When items have text, the MLP is fitted so that
    the mean of an item's projected code vectors matches the mean-pooled input embedding of the
    item's title + description (the tokenizer stage's LLM-alignment target); without text it
    stays a random projection. Either way the rows are then scaled to the mean row norm of the
    pretrained embeddings. Only input rows are set (untied output rows keep the default).

``codebooks.safetensors`` keys read by the MLP init (checked in :func:`read_codebooks`): one
tensor per level, ``codebook.0``, ``codebook.1``, ... each (K_l, d) — what ``alignrec tokenize
train`` writes (:mod:`alignrec.tokenizer.model`; other tensors in the file are ignored) — or
``codebook_0``... or one ``codebooks`` tensor (L, K, d). A missing file or key is an
:class:`~alignrec.errors.InputError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignrec.errors import InputError
from alignrec.utils.log import get_logger

log = get_logger(__name__)


@dataclass
class InitInputs:
    """What the initialisers may read. ``token_ids[k]`` is the id of ``tokens[k]``."""

    tokens: Sequence[str]
    token_ids: Sequence[int]
    code_descriptions: Path | None = None
    codebooks: Path | None = None
    item_codes: Any | None = None  # alignrec.tokenizer.codes.ItemCodes
    item_texts: Sequence[str] | None = None
    mlp_layers: int = 2
    mlp_hidden: int = 0  # 0 = the LLM width
    mlp_steps: int = 300
    seed: int = 0
    report: dict[str, Any] = field(default_factory=dict)


def output_matrix_is_tied(model: Any) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


# ----------------------------------------------------------------------------- default


def init_default(model: Any, tokenizer: Any, inputs: InitInputs) -> dict[str, Any]:
    """Keep the resize initialisation (see the module docstring)."""
    return {"method": "default", "initialised": 0}


# ----------------------------------------------------------------------------- SA-Init


def keyword_token_ids(tokenizer: Any, keyword: str) -> list[int]:
    """Sub-token ids of a keyword as it appears inside a sentence (with a leading space)."""
    ids = tokenizer(" " + keyword.strip(), add_special_tokens=False)["input_ids"]
    unknown = tokenizer.unk_token_id
    return [int(i) for i in ids if unknown is None or i != unknown]


def init_sa(model: Any, tokenizer: Any, inputs: InitInputs) -> dict[str, Any]:
    """TS-Rec SA-Init: row = mean over the token's keywords of the keyword's mean embedding."""
    import torch

    from alignrec.tokenizer.keywords import read_code_descriptions

    path = inputs.code_descriptions
    if path is None or not Path(path).is_file():
        raise InputError(
            f"sa_init needs the cluster keywords from the tokenizer stage: {path} not found "
            "(code_descriptions.json: {token: {level, code, items, keywords, description}})"
        )
    descriptions = read_code_descriptions(Path(path), inputs.tokens)
    matrices = [model.get_input_embeddings().weight]
    if not output_matrix_is_tied(model) and model.get_output_embeddings() is not None:
        matrices.append(model.get_output_embeddings().weight)
    initialised, without = 0, 0
    with torch.no_grad():
        for token, token_id in zip(inputs.tokens, inputs.token_ids):
            keywords = [k for k in descriptions.get(token, {}).get("keywords", []) if k.strip()]
            pieces = [ids for ids in (keyword_token_ids(tokenizer, k) for k in keywords) if ids]
            if not pieces:
                without += 1
                continue
            for matrix in matrices:
                # (K, d): one vector per keyword, then the mean over keywords
                vectors = torch.stack([matrix[torch.tensor(ids)].float().mean(0) for ids in pieces])
                matrix[token_id] = vectors.mean(0).to(matrix.dtype)
            initialised += 1
    if without:
        log.warning("sa_init: %d of %d code tokens have no keywords; they keep the default init", without, len(inputs.tokens))
    return {"method": "sa_init", "initialised": initialised, "without_keywords": without,
            "output_rows": len(matrices) > 1}


# ----------------------------------------------------------------------------- MLP projection


def read_codebooks(path: str | os.PathLike[str] | None, codebook_sizes: Sequence[int]) -> list[Any]:
    """Per-level codebook tensors (K_l, d) from ``codebooks.safetensors`` (see module docstring)."""
    if path is None or not Path(path).is_file():
        raise InputError(
            f"the mlp init needs the codebook vectors: {path} not found (the tokenizer stage writes "
            "RUN/tokenizer/codebooks.safetensors)"
        )
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    levels = len(codebook_sizes)
    if all(f"codebook.{level}" in tensors for level in range(levels)):  # what alignrec.tokenizer writes
        books = [tensors[f"codebook.{level}"] for level in range(levels)]
    elif all(f"codebook_{level}" in tensors for level in range(levels)):
        books = [tensors[f"codebook_{level}"] for level in range(levels)]
    elif "codebooks" in tensors and tensors["codebooks"].ndim == 3:
        books = list(tensors["codebooks"])
    else:
        raise InputError(
            f"{path}: expected keys codebook.0..codebook.{levels - 1} (each (K, d)) or one 'codebooks' (L, K, d); "
            f"found {sorted(tensors)}"
        )
    for level, (book, size) in enumerate(zip(books, codebook_sizes)):
        if book.ndim != 2 or book.shape[0] < size:
            raise InputError(f"{path}: level {level}: expected ({size}, d) codebook vectors, got {tuple(book.shape)}")
    if len({book.shape[1] for book in books}) != 1:
        raise InputError(f"{path}: levels have different widths {[tuple(b.shape) for b in books]}")
    return [book.float() for book in books]


def build_mlp(in_features: int, out_features: int, layers: int, hidden: int) -> Any:
    """A plain MLP with GELU between ``layers`` linear layers."""
    from torch import nn

    if layers < 2:
        raise ValueError("the mlp init uses 2 or more layers (the paper: 2 and 3)")
    widths = [in_features] + [hidden] * (layers - 1) + [out_features]
    modules: list[nn.Module] = []
    for index in range(layers):
        modules.append(nn.Linear(widths[index], widths[index + 1]))
        if index < layers - 1:
            modules.append(nn.GELU())
    return nn.Sequential(*modules)


def mean_pooled_text_embeddings(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int = 128) -> Any:
    """(N, d) mean of the input embeddings of each text's tokens (zeros for empty texts)."""
    import torch

    matrix = model.get_input_embeddings().weight
    out = torch.zeros(len(texts), matrix.shape[1])
    with torch.no_grad():
        for index, text in enumerate(texts):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens] if text else []
            if ids:
                out[index] = matrix[torch.tensor(ids)].float().mean(0)
    return out


def init_mlp(model: Any, tokenizer: Any, inputs: InitInputs) -> dict[str, Any]:
    """Table 7 ablation: rows = MLP(codebook vector), fitted to item text embeddings when there is text."""
    import torch

    from alignrec.tokenizer.codes import ItemCodes

    if inputs.item_codes is None:
        raise InputError("the mlp init needs the item codes")
    codes = inputs.item_codes
    books = read_codebooks(inputs.codebooks, codes.codebook_sizes)
    embedding = model.get_input_embeddings().weight
    width = embedding.shape[1]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(inputs.seed)
    mlp = build_mlp(books[0].shape[1], width, inputs.mlp_layers, inputs.mlp_hidden or width)
    report: dict[str, Any] = {"method": "mlp", "layers": inputs.mlp_layers, "codebook_dim": int(books[0].shape[1])}

    texts = list(inputs.item_texts or [])
    has_text = len(texts) == codes.num_items and any(t.strip() for t in texts)
    if has_text:
        targets = mean_pooled_text_embeddings(model, tokenizer, texts)  # (I, d)
        rows = torch.tensor([i for i, t in enumerate(texts) if t.strip()])
        item_codes = torch.as_tensor(codes.codes)[rows]  # (N, L)
        inputs_per_level = [books[level][item_codes[:, level]] for level in range(codes.num_levels)]  # L x (N, c)
        optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-3)
        for _ in range(inputs.mlp_steps):
            predicted = torch.stack([mlp(x) for x in inputs_per_level]).mean(0)  # (N, d)
            loss = torch.nn.functional.mse_loss(predicted, targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        report.update(fitted_on_items=int(len(rows)), final_mse=round(float(loss.detach()), 6), steps=inputs.mlp_steps)
    else:
        report["fitted_on_items"] = 0
        log.warning("mlp init: no item text to fit the projection to; using a random projection")
    torch.random.set_rng_state(generator_state)

    with torch.no_grad():
        vectors = []
        for token in inputs.tokens:
            (level, code), = ItemCodes.parse(token)
            vectors.append(mlp(books[level][code]))
        projected = torch.stack(vectors)  # (T, d)
        # Put the rows on the scale of the pretrained rows (a random or barely fitted MLP is not).
        pretrained = torch.ones(embedding.shape[0], dtype=torch.bool)
        pretrained[torch.tensor(list(inputs.token_ids))] = False
        target_norm = embedding[pretrained].float().norm(dim=1).mean()
        projected = projected * (target_norm / projected.norm(dim=1, keepdim=True).clamp_min(1e-8))
        embedding[torch.tensor(list(inputs.token_ids))] = projected.to(embedding.dtype)
    report["initialised"] = len(inputs.tokens)
    return report


Initialiser = Callable[[Any, Any, InitInputs], dict[str, Any]]

NEW_TOKEN_INITS: dict[str, Initialiser] = {
    "default": init_default,
    "sa_init": init_sa,
    "mlp": init_mlp,
}


def initialise_new_tokens(name: str, model: Any, tokenizer: Any, inputs: InitInputs) -> dict[str, Any]:
    """Apply the initialiser ``name`` to the code-token rows; returns a small report."""
    try:
        initialiser = NEW_TOKEN_INITS[name]
    except KeyError:
        raise InputError(f"unknown new-token init {name!r}; known: {sorted(NEW_TOKEN_INITS)}") from None
    report = initialiser(model, tokenizer, inputs)
    log.info("new-token init: %s", report)
    return report
