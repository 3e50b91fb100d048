"""Item text vectors for the LLM alignment loss and for cold start.

The vector of an item is the mean of the LLM's *input-layer* token embeddings over the tokens
of its title + description (seed 001: "the average pooling of the LLM input layer embedding
through the titles and descriptions of items") — no forward pass, so it is cheap once the
embedding matrix and the tokenizer are loaded. Items with empty text get no vector.

For a GGUF backbone (the default SmolLM2) only the ``token_embd.weight`` tensor is read and
de-quantised with the ``gguf`` package, instead of de-quantising the whole model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.errors import InputError, MissingDependencyError
from alignrec.utils.io import atomic_path
from alignrec.utils.log import get_logger

log = get_logger(__name__)

TEXT_VECTORS_FILE = "text_embeddings.safetensors"


@dataclass
class TextEmbedder:
    """Mean-pooled input embeddings: a tokenizer plus the (V, D) input embedding matrix."""

    tokenizer: Any
    embedding: np.ndarray  # (V, D) float32
    spec: str = "custom"
    max_tokens: int = 512

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])

    def embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors (N, D) float32, has_text (N,) bool)``; empty texts give zero rows."""
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        has_text = np.zeros(len(texts), dtype=bool)
        rows = [i for i, text in enumerate(texts) if text and text.strip()]
        if not rows:
            return vectors, has_text
        batch = 256
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            encoded = self.tokenizer(
                [texts[i] for i in chunk], add_special_tokens=False, truncation=True, max_length=self.max_tokens
            )["input_ids"]
            for row, ids in zip(chunk, encoded):
                ids = [i for i in ids if 0 <= i < self.embedding.shape[0]]
                if ids:
                    vectors[row] = self.embedding[np.asarray(ids)].mean(0, dtype=np.float64)
                    has_text[row] = True
        return vectors, has_text

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, spec: str = "custom", max_tokens: int = 512) -> TextEmbedder:
        """From a loaded causal LM (e.g. :func:`alignrec.llm.tiny.build_tiny_backbone`)."""
        weight = model.get_input_embeddings().weight.detach().float().cpu().numpy()
        return cls(tokenizer=tokenizer, embedding=np.ascontiguousarray(weight), spec=spec, max_tokens=max_tokens)


def load_text_embedder(spec: str, max_tokens: int = 512) -> TextEmbedder:
    """Tokenizer + input embedding matrix of backbone ``spec`` (see alignrec.llm.backbone)."""
    from alignrec.llm.backbone import load_causal_lm, load_tokenizer, resolve_backbone

    source = resolve_backbone(spec)
    tokenizer = load_tokenizer(source)
    if source.gguf_file:
        matrix = _gguf_token_embeddings(Path(source.path) / source.gguf_file)
    else:
        model = load_causal_lm(source)
        matrix = model.get_input_embeddings().weight.detach().float().numpy()
        del model
    log.info("text vectors from %s: vocabulary %d x %d", spec, *matrix.shape)
    return TextEmbedder(tokenizer=tokenizer, embedding=np.ascontiguousarray(matrix, dtype=np.float32), spec=spec, max_tokens=max_tokens)


def _gguf_token_embeddings(path: Path) -> np.ndarray:
    try:
        import gguf
        from gguf.quants import dequantize
    except ImportError:
        raise MissingDependencyError("reading GGUF backbones needs the gguf package: pip install gguf") from None
    reader = gguf.GGUFReader(str(path))
    for tensor in reader.tensors:
        if tensor.name == "token_embd.weight":
            matrix = dequantize(tensor.data, tensor.tensor_type)
            return np.asarray(matrix, dtype=np.float32).reshape(-1, int(tensor.shape[0]))
    raise InputError(f"{path}: no token_embd.weight tensor in this GGUF file")


def texts_fingerprint(spec: str, texts: list[str], max_tokens: int) -> str:
    """A key for the cache: backbone spec, token limit and every item's text."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"spec": spec, "max_tokens": max_tokens, "count": len(texts)}).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "replace"))
        digest.update(b"\0")
    return digest.hexdigest()


def save_text_vectors(path: str | os.PathLike[str], vectors: np.ndarray, has_text: np.ndarray, fingerprint: str, spec: str) -> None:
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file(
            {"vectors": np.ascontiguousarray(vectors, dtype=np.float32), "has_text": has_text.astype(np.uint8)},
            str(tmp),
            metadata={"fingerprint": fingerprint, "backbone": spec},
        )


def load_cached_text_vectors(path: str | os.PathLike[str], fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached vectors if ``path`` exists and was made from the same backbone and texts."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as handle:
            if (handle.metadata() or {}).get("fingerprint") != fingerprint:
                return None
            return handle.get_tensor("vectors"), handle.get_tensor("has_text").astype(bool)
    except (SafetensorError, OSError, KeyError):
        return None


def item_text_vectors(
    texts: list[str],
    spec: str,
    *,
    max_tokens: int = 512,
    cache_paths: list[Path] = (),  # type: ignore[assignment]
    embedder: TextEmbedder | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Vectors of ``texts`` with backbone ``spec``, reusing the first matching cache file.

    Returns ``(vectors (N, D), has_text (N,), from_cache)``.
    """
    fingerprint = texts_fingerprint(spec, texts, max_tokens)
    for path in cache_paths:
        cached = load_cached_text_vectors(path, fingerprint)
        if cached is not None:
            log.info("text vectors: reusing %s", path)
            return cached[0], cached[1], True
    embedder = embedder or load_text_embedder(spec, max_tokens)
    vectors, has_text = embedder.embed(texts)
    return vectors, has_text, False
