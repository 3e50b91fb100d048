r"""Cold start: codes for new items without retraining (seed 001, "Inference").

A new item with a behaviour embedding goes through the trained model's assignment rule like
any training item. A new item with text only (no interactions yet) first gets an *estimated*
behaviour embedding from its LLM text vector t (mean-pooled input embeddings, as in training)
by a ridge regression fitted on the warm items::

    x^ = (t - mu_t) W + mu_x,   W = argmin_W ||(T - mu_t) W - (X - mu_x)||^2 + alpha ||W||^2

alpha is chosen among a grid by exact leave-one-out error (closed form through the SVD of the
centred text matrix). The map is saved as ``text_to_behaviour.safetensors``. Either way the
codes are then made unique against every existing item and every item assigned before it,
by the same cheapest-free-path search that resolves training collisions
(:func:`alignrec.tokenizer.collisions.find_free_code`).

Usage (the serving stage calls this from ``POST /v1/items``)::

    assigner = ColdStartAssigner.load("RUN/tokenizer")
    codes = assigner.assign(["Title. Description ..."], item_ids=["B00NEW"])   # (1, L)
    assigner.save("RUN/tokenizer_extended")                                     # ItemCodes + new ids
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.errors import InputError
from alignrec.tokenizer.codes import ItemCodes
from alignrec.tokenizer.collisions import CodeIndex, find_free_code
from alignrec.tokenizer.model import TokenizerModel
from alignrec.utils.io import atomic_path, atomic_write_json, read_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

TEXT_MAP_FILE = "text_to_behaviour.safetensors"
DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class TextToBehaviour:
    """Ridge regression from LLM text vectors (D_t) to behaviour embeddings (D_b)."""

    weight: np.ndarray  # (D_t, D_b) float32
    text_mean: np.ndarray  # (D_t,)
    target_mean: np.ndarray  # (D_b,)
    alpha: float
    loo_error: float  # leave-one-out mean squared error / target variance at the chosen alpha

    @classmethod
    def fit(cls, text: np.ndarray, target: np.ndarray, alphas: tuple[float, ...] = DEFAULT_ALPHAS) -> TextToBehaviour:
        """Fit on paired rows; ``alphas`` are relative to the mean squared singular value."""
        t = np.asarray(text, dtype=np.float64)
        y = np.asarray(target, dtype=np.float64)
        if len(t) != len(y) or len(t) < 3:
            raise InputError(f"text-to-behaviour map needs >= 3 paired rows, got {len(t)} texts and {len(y)} targets")
        t_mean, y_mean = t.mean(0), y.mean(0)
        tc, yc = t - t_mean, y - y_mean
        u, s, vt = np.linalg.svd(tc, full_matrices=False)
        uty = u.T @ yc  # (r, D_b)
        scale = float((s**2).mean()) or 1.0
        variance = float((yc**2).sum(1).mean()) or 1.0
        best: tuple[float, float] | None = None
        for relative in alphas:
            alpha = relative * scale
            shrink = s**2 / (s**2 + alpha)  # (r,)
            fitted = u @ (shrink[:, None] * uty)
            leverage = (u**2 * shrink[None, :]).sum(1) + 1.0 / len(t)  # +1/n: the fitted intercept
            loo = (yc - fitted) / np.maximum(1.0 - leverage, 1e-6)[:, None]
            error = float((loo**2).sum(1).mean()) / variance
            if best is None or error < best[1] - 1e-12:
                best = (alpha, error)
        assert best is not None
        alpha, error = best
        weight = vt.T @ ((s / (s**2 + alpha))[:, None] * uty)  # (D_t, D_b)
        return cls(weight.astype(np.float32), t_mean.astype(np.float32), y_mean.astype(np.float32), float(alpha), error)

    def predict(self, text: np.ndarray) -> np.ndarray:
        t = np.asarray(text, dtype=np.float64)
        return ((t - self.text_mean) @ self.weight + self.target_mean).astype(np.float32)

    def save(self, path: str | os.PathLike[str], backbone: str) -> None:
        from safetensors.numpy import save_file

        with atomic_path(path) as tmp:
            save_file(
                {"weight": self.weight, "text_mean": self.text_mean, "target_mean": self.target_mean},
                str(tmp),
                metadata={"alpha": repr(self.alpha), "loo_error": repr(self.loo_error), "backbone": backbone},
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TextToBehaviour:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
            return cls(
                handle.get_tensor("weight"),
                handle.get_tensor("text_mean"),
                handle.get_tensor("target_mean"),
                float(meta.get("alpha", "nan")),
                float(meta.get("loo_error", "nan")),
            )


class ColdStartAssigner:
    """Gives new items unique codes with a trained tokenizer (no retraining).

    Holds the model, the existing item codes and the text map; every ``assign`` call
    reserves the codes it hands out, so later calls never reuse them.
    """

    def __init__(
        self,
        model: TokenizerModel,
        item_codes: ItemCodes,
        *,
        text_map: TextToBehaviour | None = None,
        backbone: str | None = None,
        input_kind: str = "behaviour",
        embedder: Any = None,
        max_text_tokens: int = 512,
    ):
        self.model = model
        self.codebook_sizes = list(item_codes.codebook_sizes)
        self.extra_size = self.codebook_sizes[-1] if len(self.codebook_sizes) > model.num_levels else 0
        self.codes = item_codes.codes.copy()
        self.item_ids = list(item_codes.item_ids) if item_codes.item_ids is not None else [str(i) for i in range(item_codes.num_items)]
        self.index = CodeIndex.from_codes(self.codes, self.codebook_sizes)
        self.text_map = text_map
        self.backbone = backbone
        self.input_kind = input_kind
        self._embedder = embedder
        self.max_text_tokens = max_text_tokens

    @classmethod
    def load(cls, tokenizer_dir: str | os.PathLike[str], embedder: Any = None) -> ColdStartAssigner:
        """From a ``tokenize train`` output folder. ``embedder`` (a TextEmbedder) replaces
        loading the backbone named in the folder's config (tests pass a tiny one)."""
        directory = Path(tokenizer_dir)
        model = TokenizerModel.load(directory)
        item_codes = ItemCodes.load(directory)
        record = read_json(directory / "config.json")
        config = record.get("config", {})
        text_map_path = directory / TEXT_MAP_FILE
        text_map = TextToBehaviour.load(text_map_path) if text_map_path.is_file() else None
        backbone = record.get("text_vectors", {}).get("backbone") or (None if config.get("llm", "none") == "none" else config.get("llm"))
        return cls(
            model,
            item_codes,
            text_map=text_map,
            backbone=backbone,
            input_kind=config.get("input", "behaviour"),
            embedder=embedder,
            max_text_tokens=int(config.get("max_text_tokens", 512)),
        )

    # -- inputs -------------------------------------------------------------------------------
    def _text_vectors(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            if not self.backbone:
                raise InputError(
                    "this tokenizer was trained without text (behaviour only): new items need a behaviour embedding"
                )
            from alignrec.tokenizer.text import load_text_embedder

            self._embedder = load_text_embedder(self.backbone, self.max_text_tokens)
        vectors, has_text = self._embedder.embed(texts)
        if not has_text.all():
            missing = int(np.nonzero(~has_text)[0][0])
            raise InputError(f"new item {missing}: empty title and description; give it text or a behaviour embedding")
        return vectors

    def model_inputs(self, texts: list[str] | None, behaviour_embeddings: np.ndarray | None) -> np.ndarray:
        """The model's input vectors for new items: (N, D)."""
        if self.input_kind == "text":
            if texts is None:
                raise InputError("this tokenizer quantises text vectors: new items need text")
            return self._text_vectors(texts)
        if behaviour_embeddings is not None:
            vectors = np.asarray(behaviour_embeddings, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[1] != self.model.input_dim:
                raise InputError(f"behaviour embeddings must be (N, {self.model.input_dim}), got {vectors.shape}")
            return vectors
        if texts is None:
            raise InputError("new items need text or behaviour embeddings")
        if self.text_map is None:
            raise InputError(
                "this tokenizer has no text-to-behaviour map (trained without text): new items need a behaviour embedding"
            )
        return self.text_map.predict(self._text_vectors(texts))

    # -- assignment ---------------------------------------------------------------------------
    def assign(
        self,
        texts: list[str] | None = None,
        behaviour_embeddings: np.ndarray | None = None,
        item_ids: list[str] | None = None,
    ) -> np.ndarray:
        """Codes (N, L) for new items, unique w.r.t. existing items and each other; reserved."""
        inputs = self.model_inputs(texts, behaviour_embeddings)
        count = len(inputs)
        if item_ids is not None and len(item_ids) != count:
            raise InputError(f"{len(item_ids)} item ids for {count} new items")
        latent = self.model.latent(inputs)
        out = np.zeros((count, len(self.codebook_sizes)), dtype=np.int64)
        for row in range(count):
            code = find_free_code(self.model.quantizer, latent[row], self.index, extra_size=self.extra_size)
            self.index.add(code)
            out[row] = code
        self.codes = np.concatenate([self.codes, out])
        start = len(self.item_ids)
        self.item_ids.extend(item_ids if item_ids is not None else [f"new-{start + i}" for i in range(count)])
        return out

    def item_codes(self) -> ItemCodes:
        """Existing + assigned items (new ones after the old, in assignment order)."""
        return ItemCodes(codes=self.codes.copy(), codebook_sizes=list(self.codebook_sizes), item_ids=list(self.item_ids))

    def save(self, directory: str | os.PathLike[str], new_from: int | None = None) -> Path:
        """Write the extended ItemCodes (+ ``new_items.json`` listing items from ``new_from``)."""
        directory = Path(directory)
        codes = self.item_codes()
        codes.save(directory)
        if new_from is not None:
            atomic_write_json(
                directory / "new_items.json",
                [
                    {"item_index": i, "item_id": codes.item_ids[i], "codes": codes.codes[i].tolist(), "tokens": codes.item_string(i)}  # type: ignore[index]
                    for i in range(new_from, codes.num_items)
                ],
            )
        return directory


def evaluate_cold_start(
    model: TokenizerModel,
    behaviour: np.ndarray,
    text: np.ndarray,
    text_rows: np.ndarray,
    codes: np.ndarray,
    *,
    fraction: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Hold out ``fraction`` of the items with text as "new", fit the text map on the rest,
    assign the held-out items from text only, and compare their prefixes with the codes the
    full model gives them from their behaviour embeddings (``codes``, rule output).

    Baselines for scale: ``random`` (a prefix drawn from the warm items' distribution,
    expected value), ``popular`` (everyone gets the most common warm prefix) and
    ``text_neighbour`` (the codes of the nearest warm item in LLM text space).
    """
    rng = np.random.default_rng(seed)
    count = max(1, int(round(fraction * len(text_rows))))
    if len(text_rows) - count < 3:
        return {"skipped": f"only {len(text_rows)} items with text"}
    held = np.sort(rng.choice(len(text_rows), size=count, replace=False))
    warm = np.setdiff1d(np.arange(len(text_rows)), held)
    mapping = TextToBehaviour.fit(text[warm], behaviour[text_rows[warm]])
    predicted_codes = model.encode(mapping.predict(text[held]))
    truth = codes[text_rows[held]]
    warm_codes = codes[text_rows[warm]]
    # nearest warm item in text space
    normed = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    neighbour = (normed[held] @ normed[warm].T).argmax(1)
    neighbour_codes = warm_codes[neighbour]
    result: dict[str, Any] = {
        "held_out_items": int(count),
        "warm_items": int(len(warm)),
        "ridge_alpha": mapping.alpha,
        "ridge_loo_relative_error": mapping.loo_error,
        "protocol": "tokenizer trained on all items; text map fitted on the warm items only; held-out items coded from text",
    }
    for depth in range(1, min(codes.shape[1], 2) + 1):
        truth_key = [tuple(r) for r in truth[:, :depth].tolist()]
        warm_keys = [tuple(r) for r in warm_codes[:, :depth].tolist()]
        frequency: dict[tuple[int, ...], int] = {}
        for key in warm_keys:
            frequency[key] = frequency.get(key, 0) + 1
        popular = max(frequency.items(), key=lambda kv: (kv[1], [-v for v in kv[0]]))[0]
        result[f"level{depth}_match"] = float(np.mean((predicted_codes[:, :depth] == truth[:, :depth]).all(1)))
        result[f"level{depth}_text_neighbour"] = float(np.mean((neighbour_codes[:, :depth] == truth[:, :depth]).all(1)))
        result[f"level{depth}_random"] = float(np.mean([frequency.get(k, 0) / len(warm_keys) for k in truth_key]))
        result[f"level{depth}_popular"] = float(np.mean([k == popular for k in truth_key]))
    return result
