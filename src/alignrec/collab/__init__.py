"""Stage 2 — behaviour models and classic baselines (``alignrec collab train``).

DCCF, LightGCN, SASRec, BERT4Rec, FMLP-Rec and popularity, one registry
(:mod:`alignrec.collab.registry`), one training loop (:func:`alignrec.collab.trainer.train`)
scored by :mod:`alignrec.metrics`. A run folder ``RUN/collab/<model>/`` holds ``metrics.json``,
``item_embeddings.safetensors`` + ``item_ids.json`` (read them with
:func:`load_item_embeddings`), ``model.safetensors``, ``train_log.json`` and ``config.json``.
"""

from typing import Any

from alignrec.collab.config import CollabConfig, resolve_configs
from alignrec.collab.registry import MODELS, build_model, get_model_spec, model_names, register_model

__all__ = [
    "MODELS",
    "CollabConfig",
    "build_model",
    "get_model_spec",
    "load_item_embeddings",
    "load_trained_model",
    "model_names",
    "register_model",
    "resolve_configs",
    "save_item_embeddings",
    "train",
]


def train(*args, **kwargs):  # noqa: D103 - thin lazy wrapper, see alignrec.collab.trainer.train
    from alignrec.collab.trainer import train as _train

    return _train(*args, **kwargs)


train.__doc__ = "Train a collaborative model; see :func:`alignrec.collab.trainer.train`."

_EXPORT_NAMES = ("load_item_embeddings", "load_trained_model", "save_item_embeddings")


def __getattr__(name: str) -> Any:
    """The export helpers import torch: load them on first use so ``alignrec --help`` stays fast."""
    if name in _EXPORT_NAMES:
        from alignrec.collab import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
