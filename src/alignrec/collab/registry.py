"""The registry of collaborative models: name -> (model class, typed config class).

Models register themselves with :func:`register_model` when :mod:`alignrec.collab.models` is
imported; the training loop, the CLI and the loaders look them up here by name, so adding a
model never touches an if/elif ladder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from alignrec.collab.models.base import CollabModel

M = TypeVar("M", bound=type)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its class, its config dataclass and a one-line description."""

    name: str
    model_class: type[CollabModel]
    config_class: type
    description: str


MODELS: dict[str, ModelSpec] = {}
_LOADED = False


def register_model(name: str, config_class: type, description: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`CollabModel` subclass under ``name``."""

    def decorate(cls: M) -> M:
        if name in MODELS and MODELS[name].model_class is not cls:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = ModelSpec(name=name, model_class=cls, config_class=config_class, description=description)
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        importlib.import_module("alignrec.collab.models")
        _LOADED = True


def model_names() -> list[str]:
    """Registered model names, in registration order."""
    _ensure_loaded()
    return list(MODELS)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; an unknown name is a ValueError listing the known ones."""
    _ensure_loaded()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {list(MODELS)}")
    return MODELS[name]


def build_model(name: str, config: Any, data: Any) -> CollabModel:
    """Instantiate model ``name`` with its config on :class:`~alignrec.collab.data.TrainingData`."""
    return get_model_spec(name).model_class(config, data)
