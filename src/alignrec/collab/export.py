"""Files a training run leaves for later stages: item embeddings, model weights, their loaders.

``item_embeddings.safetensors`` holds one tensor ``"item_embeddings"`` (I, d) float32 whose
row i is item_index i; ``item_ids.json`` lists the source item id of each row, so a reader
can check it pairs rows with the right items. Weights are safetensors (no pickle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignrec.errors import InputError
from alignrec.utils.io import atomic_path, atomic_write_json, read_json, read_safetensors

EMBEDDINGS_FILE = "item_embeddings.safetensors"
EMBEDDINGS_KEY = "item_embeddings"
ITEM_IDS_FILE = "item_ids.json"
WEIGHTS_FILE = "model.safetensors"


def save_item_embeddings(out_dir: str | os.PathLike[str], embeddings: torch.Tensor | np.ndarray, item_ids: list[str]) -> None:
    """Write ``item_embeddings.safetensors`` + ``item_ids.json`` atomically."""
    from safetensors.torch import save_file

    tensor = torch.as_tensor(embeddings).detach().to(torch.float32).contiguous()
    if tensor.ndim != 2 or tensor.shape[0] != len(item_ids):
        raise ValueError(f"embeddings {tuple(tensor.shape)} do not match {len(item_ids)} item ids")
    out_dir = Path(out_dir)
    with atomic_path(out_dir / EMBEDDINGS_FILE) as tmp:
        save_file({EMBEDDINGS_KEY: tensor}, str(tmp), metadata={"rows": "item_index", "dim": str(tensor.shape[1])})
    atomic_write_json(out_dir / ITEM_IDS_FILE, [str(i) for i in item_ids])


def read_item_embeddings(path: str | os.PathLike[str]) -> np.ndarray:
    """The tensor ``item_embeddings`` of a safetensors file as a 2-D, finite float32 array (rows, d).

    The one reader of the format: a collab run's export, and the files a user hands the tokenizer
    (``--embeddings``) or the cold-start path (new items' behaviour vectors). Errors name the file.
    """
    tensors = read_safetensors(path)
    if EMBEDDINGS_KEY not in tensors:
        raise InputError(f"{path}: expected a tensor named {EMBEDDINGS_KEY!r}, found {sorted(tensors)}")
    vectors = tensors[EMBEDDINGS_KEY]
    if vectors.ndim != 2:
        raise InputError(f"{path}: {EMBEDDINGS_KEY!r} must be 2-D (items, dim), got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise InputError(f"{path}: embeddings contain NaN or infinite values")
    return vectors.astype(np.float32, copy=False)


def load_item_embeddings(directory: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """Read the item embeddings a collab run exported: ``(embeddings (I, d) float32, item ids)``.

    Row i belongs to item_index i of the data set the run trained on (``item_ids[i]`` is its
    source id). Errors name the file and what is wrong.
    """
    directory = Path(directory)
    path = directory / EMBEDDINGS_FILE
    if not path.is_file():
        raise InputError(f"{path}: file not found (train a model with `alignrec collab train --out {directory}` first)")
    embeddings = read_item_embeddings(path)
    item_ids = read_json(directory / ITEM_IDS_FILE)
    if not isinstance(item_ids, list) or len(item_ids) != embeddings.shape[0]:
        count = len(item_ids) if isinstance(item_ids, list) else type(item_ids).__name__
        raise InputError(
            f"{directory / ITEM_IDS_FILE}: expected a list of {embeddings.shape[0]} item ids (one per embedding row), got {count}"
        )
    return embeddings, [str(i) for i in item_ids]


def save_weights(path: str | os.PathLike[str], model: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    """The model's state dict as safetensors, atomically."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata or {})


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return load_file(str(path))


def load_trained_model(run_out: str | os.PathLike[str], data: str | os.PathLike[str] | None = None) -> Any:
    """Rebuild a trained model from its output folder (``config.json`` + ``model.safetensors``;
    models that do not train, such as popularity, have no weights and are rebuilt from the data).

    ``data`` is the run folder it trained on (default: the path recorded in config.json); the
    model is returned in eval mode, ready for :meth:`CollabModel.score`.
    """
    from alignrec.collab.config import model_config_from_dict
    from alignrec.collab.data import TrainingData
    from alignrec.collab.registry import build_model
    from alignrec.data.dataset import load_dataset

    run_out = Path(run_out)
    record = read_json(run_out / "config.json")
    try:
        name = record["config"]["train"]["model"]
        model_values = record["config"]["model"]
        data_path = data if data is not None else record["inputs"]["dataset"]["path"]
    except (KeyError, TypeError):
        raise InputError(f"{run_out / 'config.json'}: not a collab run record (missing config.train.model)") from None
    config = model_config_from_dict(name, model_values, source=str(run_out / "config.json"))
    model = build_model(name, config, TrainingData.from_dataset(load_dataset(data_path)))
    if not model.trainable:  # e.g. popularity: rebuilt from the training data alone, no weights file
        return model.eval()
    state = load_weights(run_out / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise InputError(f"{run_out / WEIGHTS_FILE}: weights do not fit model {name!r} ({error})") from None
    return model.eval()
