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
from alignrec.tokenizer.collisions import CodeIndex, ResidualPath, find_free_path
from alignrec.tokenizer.model import TokenizerModel
from alignrec.utils.io import atomic_path, atomic_write_json, read_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

TEXT_MAP_FILE = "text_to_behaviour.safetensors"
COLDSTART_FILE = "coldstart.json"  # which text path new items take (chosen by the held-out evaluation)
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


@dataclass
class TextProjection:
    """The alignment model's learned map P from (standardised) LLM text vectors to code space.

    Trained by the LLM alignment loss to pick an item's code prefixes from its text, so it
    doubles as a text -> codes path: level by level, the code whose cumulative vector
    q^l = q^{l-1} + e^l_k is most cosine-similar to P t (the InfoNCE geometry).
    """

    layers: list[tuple[np.ndarray, np.ndarray]]  # [(W (out, in), b (out,))], GELU between
    text_mean: np.ndarray
    text_scale: float

    @classmethod
    def from_extra(cls, extra: dict[str, np.ndarray]) -> TextProjection | None:
        """From the ``extra.*`` tensors of codebooks.safetensors (None if absent)."""
        if "llm_text.mean" not in extra:
            return None
        if "llm_projection.weight" in extra:
            layers = [(extra["llm_projection.weight"], extra["llm_projection.bias"])]
        else:
            indices = sorted({int(k.split(".")[1]) for k in extra if k.startswith("llm_projection.") and k.endswith(".weight")})
            layers = [(extra[f"llm_projection.{i}.weight"], extra[f"llm_projection.{i}.bias"]) for i in indices]
        return cls(layers, extra["llm_text.mean"], float(extra["llm_text.scale"][0]))

    def directions(self, text: np.ndarray) -> np.ndarray:
        """Unit vectors P t: (N, D_t) -> (N, e) float64."""
        from scipy.special import erf

        h = (np.asarray(text, dtype=np.float64) - self.text_mean) / self.text_scale
        for index, (weight, bias) in enumerate(self.layers):
            h = h @ weight.T.astype(np.float64) + bias
            if index < len(self.layers) - 1:
                h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))  # exact GELU, as torch.nn.GELU()
        return h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)


@dataclass
class ProjectionPath:
    """Path costs 1 - cos(P t, q^{l-1} + e^l_k) for :func:`find_free_path`."""

    codebooks: list[np.ndarray]
    direction: np.ndarray  # (e,) unit

    @property
    def num_levels(self) -> int:
        return len(self.codebooks)

    def start(self) -> np.ndarray:
        return np.zeros(self.codebooks[0].shape[1])

    def costs(self, level: int, state: np.ndarray, prefix: tuple[int, ...]) -> np.ndarray:
        candidates = state[None, :] + self.codebooks[level].astype(np.float64)  # (K, e)
        norms = np.maximum(np.linalg.norm(candidates, axis=1), 1e-12)
        return 1.0 - candidates @ self.direction / norms

    def advance(self, level: int, state: np.ndarray, code: int) -> np.ndarray:
        return state + self.codebooks[level][code].astype(np.float64)


def projection_codes(codebooks: list[np.ndarray], directions: np.ndarray) -> np.ndarray:
    """Greedy codes along :class:`ProjectionPath` (no uniqueness): (N, e) -> (N, L)."""
    codes = np.zeros((len(directions), len(codebooks)), dtype=np.int64)
    for row, direction in enumerate(directions):
        path = ProjectionPath(codebooks, direction)
        state = path.start()
        for level in range(len(codebooks)):
            codes[row, level] = int(path.costs(level, state, ()).argmin())
            state = path.advance(level, state, int(codes[row, level]))
    return codes


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
        projection: TextProjection | None = None,
        text_path: str = "ridge",
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
        self.projection = projection
        if text_path not in ("ridge", "projection"):
            raise ValueError(f"text_path must be 'ridge' or 'projection', got {text_path!r}")
        if text_path == "projection" and projection is None:
            raise InputError("text_path 'projection' needs a tokenizer trained with the LLM alignment term")
        self.text_path = text_path

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
        from alignrec.tokenizer.model import load_extra_tensors

        projection = TextProjection.from_extra(load_extra_tensors(directory))
        choice = read_json(directory / COLDSTART_FILE) if (directory / COLDSTART_FILE).is_file() else {}
        backbone = record.get("text_vectors", {}).get("backbone") or (None if config.get("llm", "none") == "none" else config.get("llm"))
        return cls(
            model,
            item_codes,
            text_map=text_map,
            backbone=backbone,
            input_kind=config.get("input", "behaviour"),
            embedder=embedder,
            max_text_tokens=int(config.get("max_text_tokens", 512)),
            projection=projection,
            text_path=choice.get("text_path", "ridge") if projection is not None else "ridge",
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
        paths: list[Any]
        if behaviour_embeddings is None and texts is not None and self.text_path == "projection" and self.input_kind == "behaviour":
            assert self.projection is not None
            directions = self.projection.directions(self._text_vectors(texts))
            paths = [ProjectionPath(self.model.quantizer.codebooks, d) for d in directions]
        else:
            latent = self.model.latent(self.model_inputs(texts, behaviour_embeddings))
            paths = [ResidualPath(self.model.quantizer, z) for z in latent]
        count = len(paths)
        if item_ids is not None and len(item_ids) != count:
            raise InputError(f"{len(item_ids)} item ids for {count} new items")
        out = np.zeros((count, len(self.codebook_sizes)), dtype=np.int64)
        for row, path in enumerate(paths):
            code = find_free_path(path, self.index, extra_size=self.extra_size)
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
    held: np.ndarray,
    warm: np.ndarray,
    codes: np.ndarray,
    *,
    projection: TextProjection | None = None,
) -> dict[str, Any]:
    """Code the ``held`` items from text only and compare their prefixes with the codes the
    full model gives them from their behaviour embeddings (``codes``, the rule's output).

    ``text`` (N, D) holds every item's text vector; ``held`` / ``warm`` are item rows with
    text. The ridge map is fitted on the warm rows only; ``projection`` must have been
    trained without the held rows' text (the training stage's separate evaluation fit withholds
    them from the LLM loss; the tokenizer it writes is trained on every item's text).
    Baselines for scale: ``random`` (a prefix drawn from the warm items' distribution,
    expected value), ``popular`` (everyone gets the most common warm prefix) and
    ``text_neighbour`` (the codes of the nearest warm item in LLM text space).
    """
    mapping = TextToBehaviour.fit(text[warm], behaviour[warm])
    predictions = {"ridge": model.encode(mapping.predict(text[held]))}
    if projection is not None:
        predictions["projection"] = projection_codes(model.quantizer.codebooks, projection.directions(text[held]))
    truth = codes[held]
    warm_codes = codes[warm]
    normed = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    neighbour_codes = warm_codes[(normed[held] @ normed[warm].T).argmax(1)]
    result: dict[str, Any] = {
        "held_out_items": int(len(held)),
        "warm_items": int(len(warm)),
        "ridge_alpha": mapping.alpha,
        "ridge_loo_relative_error": mapping.loo_error,
        "protocol": "codebooks trained on all items' behaviour; the held-out items' text was kept out of the LLM loss "
        "and the ridge fit; held-out items coded from text only",
    }
    for depth in range(1, min(codes.shape[1], 2) + 1):
        truth_key = [tuple(r) for r in truth[:, :depth].tolist()]
        frequency: dict[tuple[int, ...], int] = {}
        for key in (tuple(r) for r in warm_codes[:, :depth].tolist()):
            frequency[key] = frequency.get(key, 0) + 1
        popular = max(frequency.items(), key=lambda kv: (kv[1], [-v for v in kv[0]]))[0]
        for name, predicted in predictions.items():
            result[f"{name}_level{depth}_match"] = float(np.mean((predicted[:, :depth] == truth[:, :depth]).all(1)))
        result[f"level{depth}_text_neighbour"] = float(np.mean((neighbour_codes[:, :depth] == truth[:, :depth]).all(1)))
        result[f"level{depth}_random"] = float(np.mean([frequency.get(k, 0) / len(warm) for k in truth_key]))
        result[f"level{depth}_popular"] = float(np.mean([k == popular for k in truth_key]))
    best = max(predictions, key=lambda name: (result[f"{name}_level1_match"], result.get(f"{name}_level2_match", 0.0), name == "ridge"))
    result["chosen_path"] = best
    for depth in (1, 2):
        if f"{best}_level{depth}_match" in result:
            result[f"level{depth}_match"] = result[f"{best}_level{depth}_match"]
    return result
