"""A trained tokenizer: input standardisation -> (optional encoder) -> cascaded residual
codebooks with their assignment rule. One class for every method, one file on disk.

The assignment rule (what ``encode`` applies to training items after training and to new
items at inference) is, level by level with ``r_1 = z`` (the item's latent vector)::

    k_l = argmin_k  D(r_l, e^l_k) + p^l[prefix_{<l}, k]        r_{l+1} = r_l - e^l_{k_l}

``D`` is the squared Euclidean or the cosine distance; ``p^l`` are the balancing prices of
the item's prefix group at level l (see :mod:`alignrec.tokenizer.assign`; zero for methods
without balancing and for prefixes the training set never produced). Every cost is computed
in float64 from the float32 parameters as stored, so a training item's embedding maps back to
exactly its training-time codes.

``codebooks.safetensors`` holds ``input.mean``, ``input.scale``, ``codebook.{l}`` (K, e),
``prices.{l}.keys`` / ``prices.{l}.values`` (only prefix groups with a non-zero price) and,
for methods with an encoder, ``encoder.{i}.weight`` / ``encoder.{i}.bias``; the metadata
names the method, the distance and the sizes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignrec.errors import InputError
from alignrec.tokenizer.assign import Distance, pairwise_cost, prefix_keys
from alignrec.utils.io import atomic_path

CODEBOOKS_FILE = "codebooks.safetensors"
FORMAT_VERSION = "1"


@dataclass
class LevelPrices:
    """Balancing prices of one level: ``values[g]`` (K,) belongs to the prefix ``keys[g]``."""

    keys: np.ndarray  # (G,) int64, sorted prefix keys (see assign.prefix_keys)
    values: np.ndarray  # (G, K) float64

    def rows(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each query key and whether it was found: (N,) -> ((N,), (N,) bool)."""
        if len(self.keys) == 0:
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        position = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return position, self.keys[position] == keys


@dataclass
class ResidualQuantizer:
    """L codebooks (K_l, e) applied to residuals, with optional per-prefix prices."""

    codebooks: list[np.ndarray]
    distance: Distance = "l2"
    prices: list[LevelPrices | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.codebooks = [np.ascontiguousarray(c, dtype=np.float32) for c in self.codebooks]
        if not self.codebooks:
            raise ValueError("a quantizer needs at least one codebook")
        dims = {c.shape[1] for c in self.codebooks}
        if len(dims) != 1:
            raise ValueError(f"codebooks must share their dimension, got {sorted(dims)}")
        if not self.prices:
            self.prices = [None] * len(self.codebooks)
        if len(self.prices) != len(self.codebooks):
            raise ValueError("one prices entry per level is required")

    @property
    def num_levels(self) -> int:
        return len(self.codebooks)

    @property
    def codebook_sizes(self) -> list[int]:
        return [int(c.shape[0]) for c in self.codebooks]

    @property
    def dim(self) -> int:
        return int(self.codebooks[0].shape[1])

    def level_cost(self, level: int, residual: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        """Costs of level ``level``'s codes for residuals (N, e) whose earlier codes are
        ``prefix`` (N, level): distance plus the prefix group's prices -> (N, K) float64."""
        cost = pairwise_cost(residual, self.codebooks[level], self.distance)
        prices = self.prices[level]
        if prices is not None and len(prices.keys):
            rows, found = prices.rows(prefix_keys(prefix, self.codebook_sizes))
            if found.any():
                cost[found] += prices.values[rows[found]]
        return cost

    def quantize(self, latent: np.ndarray) -> np.ndarray:
        """The assignment rule: (N, e) -> codes (N, L) int64."""
        residual = np.asarray(latent, dtype=np.float64)
        codes = np.zeros((residual.shape[0], self.num_levels), dtype=np.int64)
        for level in range(self.num_levels):
            codes[:, level] = self.level_cost(level, residual, codes[:, :level]).argmin(1)
            residual = residual - self.codebooks[level][codes[:, level]].astype(np.float64)
        return codes

    def residuals(self, latent: np.ndarray, codes: np.ndarray) -> list[np.ndarray]:
        """Input residual of every level (L+1 arrays: r_1 = z, ..., r_{L+1} = final error)."""
        residual = np.asarray(latent, dtype=np.float64)
        out = [residual]
        for level in range(codes.shape[1]):
            residual = residual - self.codebooks[level][codes[:, level]].astype(np.float64)
            out.append(residual)
        return out

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Sum of the chosen code vectors: (N, L) -> (N, e) float64."""
        out = np.zeros((codes.shape[0], self.dim))
        for level in range(codes.shape[1]):
            out += self.codebooks[level][codes[:, level]]
        return out


def standardize_inputs(x: np.ndarray, mean: np.ndarray, scale: float, normalize_rows: bool) -> np.ndarray:
    """``((x / ||x|| if normalize_rows) - mean) / scale``: (N, D) -> (N, D) float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != mean.shape[0]:
        raise InputError(f"expected input vectors of shape (N, {mean.shape[0]}), got {x.shape}")
    if normalize_rows:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return ((x - mean) / np.float32(scale)).astype(np.float32)


@dataclass
class TokenizerModel:
    """Everything needed to turn an item's input vector into codes.

    ``latent(x)`` = encoder((x / row norm if normalize_rows) - mean) / scale); ``encode(x)`` =
    ``quantizer.quantize(latent(x))``.
    """

    method: str
    quantizer: ResidualQuantizer
    input_mean: np.ndarray  # (D,) float32
    input_scale: float
    normalize_rows: bool = False
    encoder: list[tuple[np.ndarray, np.ndarray]] | None = None  # [(W (out, in), b (out,))], ReLU between
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return int(self.input_mean.shape[0])

    @property
    def num_levels(self) -> int:
        return self.quantizer.num_levels

    @property
    def codebook_sizes(self) -> list[int]:
        return self.quantizer.codebook_sizes

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """The model's input space: (N, D) -> (N, D) float32."""
        return standardize_inputs(x, self.input_mean, self.input_scale, self.normalize_rows)

    def latent(self, x: np.ndarray) -> np.ndarray:
        """Standardise and (for encoder models) encode: (N, D) -> (N, e) float32."""
        z = self.standardize(x)
        if self.encoder:
            import torch

            with torch.no_grad():
                h = torch.from_numpy(z)
                for index, (weight, bias) in enumerate(self.encoder):
                    h = h @ torch.from_numpy(weight).T + torch.from_numpy(bias)
                    if index < len(self.encoder) - 1:
                        h = torch.relu(h)
                z = h.numpy()
        return np.ascontiguousarray(z, dtype=np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes of input vectors (N, D) -> (N, L) by the model's assignment rule."""
        return self.quantizer.quantize(self.latent(x))

    # -- files ------------------------------------------------------------------------------
    def tensors(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "input.mean": np.ascontiguousarray(self.input_mean, dtype=np.float32),
            "input.scale": np.asarray([self.input_scale], dtype=np.float64),
        }
        for level, codebook in enumerate(self.quantizer.codebooks):
            out[f"codebook.{level}"] = codebook
            prices = self.quantizer.prices[level]
            if prices is not None:
                out[f"prices.{level}.keys"] = np.ascontiguousarray(prices.keys, dtype=np.int64)
                out[f"prices.{level}.values"] = np.ascontiguousarray(prices.values, dtype=np.float64)
        for index, (weight, bias) in enumerate(self.encoder or []):
            out[f"encoder.{index}.weight"] = np.ascontiguousarray(weight, dtype=np.float32)
            out[f"encoder.{index}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
        return out

    def save(self, directory: str | os.PathLike[str], extra: dict[str, np.ndarray] | None = None) -> Path:
        """Write ``codebooks.safetensors`` (plus ``extra`` tensors, e.g. the LLM projection)."""
        from safetensors.numpy import save_file

        path = Path(directory) / CODEBOOKS_FILE
        meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "distance": self.quantizer.distance,
            "num_levels": str(self.num_levels),
            "codebook_sizes": json.dumps(self.codebook_sizes),
            "normalize_rows": json.dumps(self.normalize_rows),
            "encoder_layers": str(len(self.encoder or [])),
            **{f"info.{k}": v for k, v in self.metadata.items()},
        }
        tensors = {**self.tensors(), **{f"extra.{k}": np.ascontiguousarray(v) for k, v in (extra or {}).items()}}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TokenizerModel:
        from safetensors import SafetensorError, safe_open

        directory = Path(directory)
        path = directory / CODEBOOKS_FILE if directory.is_dir() else directory
        if not path.is_file():
            raise InputError(f"{path}: not found (run `alignrec tokenize train` first)")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                meta = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except (SafetensorError, OSError) as error:
            raise InputError(f"{path}: not a readable safetensors file ({error})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION!r}")
        try:
            levels = int(meta["num_levels"])
            codebooks = [tensors[f"codebook.{level}"] for level in range(levels)]
            prices: list[LevelPrices | None] = []
            for level in range(levels):
                if f"prices.{level}.keys" in tensors:
                    prices.append(LevelPrices(tensors[f"prices.{level}.keys"], tensors[f"prices.{level}.values"]))
                else:
                    prices.append(None)
            encoder = [
                (tensors[f"encoder.{i}.weight"], tensors[f"encoder.{i}.bias"]) for i in range(int(meta["encoder_layers"]))
            ]
            return cls(
                method=meta["method"],
                quantizer=ResidualQuantizer(codebooks, distance=meta["distance"], prices=prices),  # type: ignore[arg-type]
                input_mean=tensors["input.mean"],
                input_scale=float(tensors["input.scale"][0]),
                normalize_rows=json.loads(meta["normalize_rows"]),
                encoder=encoder or None,
                metadata={k[5:]: v for k, v in meta.items() if k.startswith("info.")},
            )
        except KeyError as error:
            raise InputError(f"{path}: missing entry {error} (written by another version?)") from None


def load_extra_tensors(directory: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The ``extra.*`` tensors saved beside the model (prefix stripped)."""
    from safetensors.numpy import load_file

    path = Path(directory) / CODEBOOKS_FILE
    return {name[6:]: value for name, value in load_file(str(path)).items() if name.startswith("extra.")}
