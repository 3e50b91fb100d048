"""``alignrec tokenize train``: from a prepared data set and item embeddings to item codes.

Steps: load behaviour embeddings (and, when the data set has text and ``llm`` is not
``none``, the items' LLM text vectors) -> standardise -> train the chosen method -> codes by
the model's assignment rule (raw) -> the method's own collision fix (rqvae) -> resolution to
unique codes -> text-to-behaviour map and cold-start evaluation (on a fit of its own, with some
items' text held out; the tokenizer written is trained on every item) -> code descriptions ->
outputs, written into a temporary folder that replaces ``--out`` only when complete.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.config import write_run_record
from alignrec.errors import InputError
from alignrec.tokenizer.codes import ItemCodes
from alignrec.tokenizer.coldstart import COLDSTART_FILE, TEXT_MAP_FILE, TextProjection, TextToBehaviour, evaluate_cold_start
from alignrec.tokenizer.collisions import collision_rate, describe_resolution, resolve_collisions
from alignrec.tokenizer.config import TokenizerConfig
from alignrec.tokenizer.embeddings import duplicate_rows, load_behaviour_embeddings
from alignrec.tokenizer.keywords import code_descriptions
from alignrec.tokenizer.methods import TrainingInputs, build_tokenizer, nearest_codes
from alignrec.tokenizer.metrics import level_statistics, neighbourhood_agreement, prefix_statistics, quantisation_errors
from alignrec.tokenizer.model import TokenizerModel, standardize_inputs
from alignrec.tokenizer.report import write_report
from alignrec.tokenizer.text import TEXT_VECTORS_FILE, TextEmbedder, item_text_vectors, save_text_vectors, texts_fingerprint
from alignrec.utils.io import atomic_directory, atomic_write_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

ASSIGNMENT_FILE = "assignment.safetensors"
TEXT_CACHE_DIR = "tokenizer_cache"  # RUN/tokenizer_cache/: text vectors per (backbone, texts)


@dataclass
class TokenizerRun:
    """What :func:`train_tokenizer` produced (the folder plus the main figures)."""

    out_dir: Path
    item_codes: ItemCodes
    raw_codes: np.ndarray
    report: dict[str, Any]


def standardisation(vectors: np.ndarray, normalize_rows: bool) -> tuple[np.ndarray, float]:
    """Mean (D,) and scale such that (x - mean) / scale has mean squared norm 1."""
    x = np.asarray(vectors, dtype=np.float64)
    if normalize_rows:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    mean = x.mean(0)
    scale = float(np.sqrt(((x - mean) ** 2).sum(1).mean())) or 1.0
    return mean.astype(np.float32), scale


def train_tokenizer(
    config: TokenizerConfig,
    run_dir: str | os.PathLike[str],
    *,
    embeddings: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    embedder: TextEmbedder | None = None,
) -> TokenizerRun:
    """Train a tokenizer on ``run_dir``'s data set and write its folder (default RUN/tokenizer).

    ``embeddings``: a collab run folder, a safetensors file or ``spectral`` (default: the
    folder ``RUN/collab/dccf``). ``embedder`` replaces loading ``config.llm`` (tests).
    """
    from alignrec.data import load_dataset

    started = time.perf_counter()
    run_dir = Path(run_dir)
    dataset = load_dataset(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "tokenizer"
    notes: list[str] = []
    num_items = dataset.num_items
    if num_items < 2:
        raise InputError(f"{dataset.path}: {num_items} item(s); a tokenizer needs at least 2")

    behaviour: np.ndarray | None = None
    embedding_info: dict[str, Any] = {"kind": "none", "source": None}
    if config.input == "behaviour" or embeddings is not None:
        behaviour, embedding_info = load_behaviour_embeddings(embeddings, dataset, run_dir, seed=config.seed)

    # -- text vectors ---------------------------------------------------------------------------
    texts = dataset.item_texts()
    items_with_text = sum(1 for t in texts if t.strip())
    text_vectors: np.ndarray | None = None
    has_text = np.zeros(num_items, dtype=bool)
    text_info: dict[str, Any] = {"items_with_text": items_with_text, "items_without_text": num_items - items_with_text}
    spec = embedder.spec if embedder is not None else config.llm
    fingerprint = None
    if not config.uses_llm:
        text_info["summary"] = "LLM disabled (--llm none): behaviour only"
    elif items_with_text == 0:
        text_info["summary"] = "the data set has no item text: behaviour only (no LLM alignment, no text cold start)"
        notes.append("no item text: LLM alignment off, cold start needs a behaviour embedding")
    else:
        tick = time.perf_counter()
        fingerprint = texts_fingerprint(spec, texts, config.max_text_tokens)
        # cached per (backbone, texts): in the previous output and in RUN/tokenizer_cache/
        shared_cache = run_dir / TEXT_CACHE_DIR / f"text_vectors-{fingerprint[:20]}.safetensors"
        text_vectors, has_text, cached = item_text_vectors(
            texts, spec, max_tokens=config.max_text_tokens, cache_paths=[out / TEXT_VECTORS_FILE, shared_cache], embedder=embedder
        )
        if not cached:
            save_text_vectors(shared_cache, text_vectors, has_text, fingerprint, spec)
        text_info.update(
            {
                "backbone": spec,
                "dim": int(text_vectors.shape[1]),
                "items_with_vector": int(has_text.sum()),
                "excluded_from_llm_loss": int(num_items - has_text.sum()),
                "seconds": round(time.perf_counter() - tick, 2),
                "from_cache": cached,
            }
        )
        text_info["summary"] = (
            f"{int(has_text.sum())} of {num_items} items have text vectors from {spec} "
            f"({num_items - int(has_text.sum())} without text are left out of the LLM loss)"
        )
    if config.input == "text" and text_vectors is None:
        raise InputError(f"--input text needs item text and an LLM, but {text_info['summary']}")
    if config.input == "text" and not has_text.all():
        raise InputError(f"--input text: {int((~has_text).sum())} items have no text to quantise")

    raw_inputs = behaviour if config.input == "behaviour" else text_vectors
    assert raw_inputs is not None
    mean, scale = standardisation(raw_inputs, config.normalize_rows)
    text_rows = np.nonzero(has_text)[0]

    # -- train (every item's behaviour and text: this is the tokenizer later stages use) ------------
    tick = time.perf_counter()
    method, fit, model, text_extra = _fit(config, raw_inputs, mean, scale, text_vectors, text_rows, embedding_info)
    train_seconds = time.perf_counter() - tick
    latent = model.latent(raw_inputs)
    raw_codes = model.quantizer.quantize(latent)
    sizes = model.codebook_sizes
    collisions: dict[str, Any] = {"raw": collision_rate(raw_codes)}
    if config.method == "alignment" and config.balance == "optimal":
        collisions["nearest_code"] = collision_rate(nearest_codes(latent, model.quantizer.codebooks, config.distance))
    refined = method.refine_collisions(fit, latent, raw_codes)
    if refined is not raw_codes:
        collisions["after_method_refinement"] = collision_rate(refined)
    resolution = resolve_collisions(config.resolution, refined, latent, model.quantizer)
    final_codes = resolution.codes
    collisions["final"] = collision_rate(final_codes)
    item_codes = ItemCodes(codes=final_codes, codebook_sizes=resolution.codebook_sizes, item_ids=list(dataset.item_ids))
    notes += resolution.notes

    # -- text map and cold start ------------------------------------------------------------------
    text_map = None
    cold_start: dict[str, Any]
    projection = TextProjection.from_extra(text_extra | fit.extra_tensors) if text_extra else None
    if text_vectors is not None and config.input == "behaviour" and behaviour is not None and len(text_rows) >= 3:
        text_map = TextToBehaviour.fit(text_vectors[text_rows], behaviour[text_rows])
        held_rows = _held_out_rows(config, text_rows)
        if len(held_rows):
            cold_start = _evaluate_cold_start(config, raw_inputs, mean, scale, behaviour, text_vectors, text_rows,
                                              held_rows, embedding_info)
        else:
            cold_start = {"skipped": "coldstart_holdout = 0 (or too few items with text)"}
    elif config.input == "text":
        cold_start = {"skipped": "the tokenizer quantises text vectors: new items are coded from their text directly"}
    else:
        cold_start = {"skipped": "no item text: cold start needs a behaviour embedding for each new item"}

    # -- metrics ------------------------------------------------------------------------------------
    report: dict[str, Any] = {
        "method": config.method,
        "levels": config.levels,
        "codebook_size": config.codebook_size,
        "data": str(dataset.path),
        "items": num_items,
        "embeddings": embedding_info,
        "text": text_info,
        "train_seconds": round(train_seconds, 3),
        "duplicate_input_rows": duplicate_rows(raw_inputs),
        "collisions": collisions,
        "prefix_collision_rates_raw": [row["collision_rate"] for row in prefix_statistics(raw_codes, sizes)],
        "resolution": describe_resolution(resolution),
        "levels_raw": level_statistics(raw_codes, sizes),
        "levels_final": level_statistics(final_codes, resolution.codebook_sizes),
        "prefixes_raw": prefix_statistics(raw_codes, sizes),
        "prefixes_final": prefix_statistics(final_codes, resolution.codebook_sizes),
        "quantisation_error": quantisation_errors(latent, raw_codes, model.quantizer.codebooks),
        "text_neighbourhood": neighbourhood_agreement(text_vectors[text_rows], raw_codes[text_rows], sizes, seed=config.seed)
        if text_vectors is not None and len(text_rows) > 12
        else {},
        "behaviour_neighbourhood": neighbourhood_agreement(behaviour, raw_codes, sizes, seed=config.seed) if behaviour is not None else {},
        "cold_start": cold_start,
        "method_info": fit.info,
        "history": fit.history,
        "notes": notes,
    }
    descriptions = code_descriptions(final_codes, resolution.codebook_sizes, dataset.items, keywords_per_code=config.keywords_per_code)

    # -- write --------------------------------------------------------------------------------------
    with atomic_directory(out) as tmp:
        model.save(tmp, extra={**fit.extra_tensors, **text_extra})
        item_codes.save(tmp)
        _save_assignment(tmp / ASSIGNMENT_FILE, raw_codes)
        if text_vectors is not None and fingerprint is not None:
            save_text_vectors(tmp / TEXT_VECTORS_FILE, text_vectors, has_text, fingerprint, spec)
        if text_map is not None:
            text_map.save(tmp / TEXT_MAP_FILE, spec)
            atomic_write_json(
                tmp / COLDSTART_FILE,
                {"text_path": cold_start.get("chosen_path", "projection" if projection is not None else "ridge"),
                 "chosen_by": "held-out level-1/2 match" if "chosen_path" in cold_start else "default"},
            )
        atomic_write_json(tmp / "code_descriptions.json", descriptions)
        report["total_seconds"] = round(time.perf_counter() - started, 3)
        write_report(tmp, report, [np.bincount(final_codes[:, level], minlength=size).tolist() for level, size in enumerate(resolution.codebook_sizes)])
        inputs = {"items": dataset.path / "items.parquet", "users": dataset.path / "users.parquet"}
        if embedding_info.get("kind") == "file":
            inputs["embeddings"] = embedding_info["source"]
        write_run_record(
            tmp,
            config,
            stage="tokenize",
            seed=config.seed,
            inputs=inputs,
            extra={"embeddings": embedding_info, "text_vectors": {k: text_info.get(k) for k in ("backbone", "dim")}, "data": str(run_dir)},
        )
    log.info(
        "tokenizer %s: raw collisions %.4f%%, final %.4f%%, trained in %.1f s -> %s",
        config.method, 100 * collisions["raw"], 100 * collisions["final"], train_seconds, out,
    )
    return TokenizerRun(out_dir=out, item_codes=item_codes, raw_codes=raw_codes, report=report)


def _fit(config: TokenizerConfig, raw_inputs: np.ndarray, mean: np.ndarray, scale: float,
         text_vectors: np.ndarray | None, text_rows: np.ndarray, embedding_info: dict[str, Any]) -> tuple[Any, Any, TokenizerModel, dict[str, np.ndarray]]:
    """Train ``config.method`` on every item's input, with the text of ``text_rows`` in the LLM
    loss. Returns (method, fit, model, the LLM text standardisation tensors)."""
    text_std = None
    text_extra: dict[str, np.ndarray] = {}
    if text_vectors is not None and len(text_rows):
        t_mean, t_scale = standardisation(text_vectors[text_rows], False)
        text_std = ((text_vectors[text_rows] - t_mean) / t_scale).astype(np.float32)
        text_extra = {"llm_text.mean": t_mean, "llm_text.scale": np.asarray([t_scale], dtype=np.float64)}
    method = build_tokenizer(config)
    z = standardize_inputs(raw_inputs, mean, scale, config.normalize_rows)
    fit = method.fit(TrainingInputs(vectors=z, text=text_std, text_rows=text_rows if text_std is not None else None))
    if not any(name.startswith("llm_projection.") for name in fit.extra_tensors):
        text_extra = {}  # no projection was trained: nothing to standardise for
    model = TokenizerModel(
        method=config.method,
        quantizer=fit.quantizer,
        input_mean=mean,
        input_scale=scale,
        normalize_rows=config.normalize_rows,
        encoder=fit.encoder,
        metadata={"embeddings": str(embedding_info.get("source")), "input": config.input},
    )
    return method, fit, model, text_extra


def _held_out_rows(config: TokenizerConfig, text_rows: np.ndarray) -> np.ndarray:
    """The seeded ``coldstart_holdout`` share of the items with text (empty when too few)."""
    count = int(round(config.coldstart_holdout * len(text_rows)))
    if count < 1 or len(text_rows) - count < 3:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.random.default_rng(config.seed).choice(text_rows, size=count, replace=False))


def _evaluate_cold_start(config: TokenizerConfig, raw_inputs: np.ndarray, mean: np.ndarray, scale: float,
                         behaviour: np.ndarray, text_vectors: np.ndarray, text_rows: np.ndarray, held_rows: np.ndarray,
                         embedding_info: dict[str, Any]) -> dict[str, Any]:
    """The cold-start score, from a fit of its own: the same settings and seed, but the held-out
    items' text kept out of the LLM loss (their behaviour stays in), so that coding them from
    text is a fair test of the text -> code paths. The tokenizer this stage writes never has
    anything held out; this fit only yields the figures (and the choice of text path)."""
    tick = time.perf_counter()
    warm_rows = np.setdiff1d(text_rows, held_rows)
    _, fit, model, text_extra = _fit(config, raw_inputs, mean, scale, text_vectors, warm_rows, embedding_info)
    projection = TextProjection.from_extra(text_extra | fit.extra_tensors) if text_extra else None
    codes = model.quantizer.quantize(model.latent(raw_inputs))
    result = evaluate_cold_start(model, behaviour, text_vectors, held_rows, warm_rows, codes, projection=projection)
    result["protocol"] = (
        f"a separate evaluation fit (same settings and seed) with the text of {len(held_rows)} of {len(text_rows)} "
        f"items held out (coldstart_holdout = {config.coldstart_holdout}); the tokenizer in this folder was "
        f"trained on every item's text. In the evaluation fit: {result['protocol']}")
    result["evaluation_fit_seconds"] = round(time.perf_counter() - tick, 3)
    return result


def _save_assignment(path: Path, raw_codes: np.ndarray) -> None:
    from safetensors.numpy import save_file

    from alignrec.utils.io import atomic_path

    with atomic_path(path) as tmp:
        save_file({"raw_codes": np.ascontiguousarray(raw_codes, dtype=np.int64)}, str(tmp), metadata={"rows": "item_index"})


def load_raw_codes(directory: str | os.PathLike[str]) -> np.ndarray:
    """The codes the assignment rule gave each training item, before de-duplication."""
    from safetensors.numpy import load_file

    path = Path(directory) / ASSIGNMENT_FILE
    if not path.is_file():
        raise InputError(f"{path}: not found (run `alignrec tokenize train` first)")
    return load_file(str(path))["raw_codes"]


__all__ = ["TokenizerRun", "load_raw_codes", "standardisation", "train_tokenizer"]
