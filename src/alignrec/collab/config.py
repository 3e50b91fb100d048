"""Settings of ``alignrec collab train``: one training config shared by every model, plus one
typed config per model (registered beside the model class in :mod:`alignrec.collab.registry`).

The training config (:class:`CollabConfig`) holds what the shared loop needs: epochs, early
stopping, seed, evaluation. Each model's config holds its architecture and optimisation
settings (embedding size, layers, learning rate, batch size, ...), because good values differ
between a graph model trained on 10k-edge batches and a transformer trained on 256 sequences.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from alignrec.config import ConfigError, _unwrap_optional, from_mapping, load_config_file

EARLY_STOP_METRICS = ("ndcg@10", "hr@10", "ndcg@5", "hr@5", "hr@1")


@dataclass
class CollabConfig:
    """The shared training loop: which model, how long, when to stop, how to evaluate."""

    model: str = field(default="dccf", metadata={"help": "model name (see `alignrec collab models`)"})
    epochs: int = field(default=200, metadata={"help": "maximum training epochs"})
    patience: int = field(
        default=10,
        metadata={"help": "stop after this many evaluations without a better validation metric (0 = never stop early)"},
    )
    eval_every: int = field(default=1, metadata={"help": "evaluate on the validation split every N epochs"})
    early_stop_metric: str = field(
        default="ndcg@10", metadata={"help": f"validation metric for early stopping, one of {list(EARLY_STOP_METRICS)}"}
    )
    seed: int = field(default=2024, metadata={"help": "random seed (weights, batch order, negatives, dropout)"})
    eval_batch_size: int = field(default=1024, metadata={"help": "users scored at once during evaluation"})
    exclude_history: bool = field(
        default=False,
        metadata={"help": "do not let the items of a user's history compete in the ranking (the papers' protocol "
                  "keeps them, so this is off by default)"},
    )
    test_with_valid_interactions: bool = field(
        default=True,
        metadata={"help": "graph models: when scoring the test split, add each user's validation item to the graph "
                  "they propagate over (no retraining) — the information sequential models read in the test "
                  "history; the test item itself is never added"},
    )
    max_train_minutes: float | None = field(
        default=None, metadata={"help": "stop training (keeping the best model so far) after this many minutes"}
    )
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = leave torch's default)"})
    checkpoint_every: int = field(
        default=1, metadata={"help": "write OUT/checkpoint every N epochs (and always after the last one)"}
    )

    def __post_init__(self) -> None:
        from alignrec.collab.registry import model_names

        if self.model not in model_names():
            raise ValueError(f"model: unknown model {self.model!r}; expected one of {model_names()}")
        if self.epochs < 0:
            raise ValueError(f"epochs: must be >= 0, got {self.epochs}")
        if self.patience < 0:
            raise ValueError(f"patience: must be >= 0, got {self.patience}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every: must be >= 1, got {self.eval_every}")
        if self.early_stop_metric not in EARLY_STOP_METRICS:
            raise ValueError(f"early_stop_metric: expected one of {list(EARLY_STOP_METRICS)}, got {self.early_stop_metric!r}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size: must be >= 1, got {self.eval_batch_size}")
        if self.max_train_minutes is not None and self.max_train_minutes <= 0:
            raise ValueError(f"max_train_minutes: must be > 0, got {self.max_train_minutes}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every: must be >= 1, got {self.checkpoint_every}")
        if self.threads < 0:
            raise ValueError(f"threads: must be >= 0, got {self.threads}")


@dataclass
class OptimConfig:
    """Optimisation settings every trainable model has (subclasses override the defaults)."""

    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay (L2 for adam, decoupled for adamw)"})
    optimizer: Literal["adam", "adamw"] = field(default="adam", metadata={"help": "optimizer"})
    batch_size: int = field(default=256, metadata={"help": "training batch size"})
    grad_clip: float = field(default=0.0, metadata={"help": "clip the gradient norm to this value (0 = off)"})

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip: must be >= 0, got {self.grad_clip}")


def check_positive(config: Any, *names: str) -> None:
    """Raise ValueError naming the first field of ``config`` that is not > 0."""
    for name in names:
        value = getattr(config, name)
        if value <= 0:
            raise ValueError(f"{name}: must be > 0, got {value}")


def check_probability(config: Any, *names: str) -> None:
    """Raise ValueError naming the first field of ``config`` outside [0, 1)."""
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}: must be in [0, 1), got {value}")


# ----------------------------------------------------------------------------- command line


def _model_fields() -> dict[str, list[tuple[str, dataclasses.Field, Any]]]:
    """Field name -> [(model name, field, type)] over every registered model config."""
    from alignrec.collab.registry import MODELS, model_names

    model_names()  # make sure every model module has registered
    fields: dict[str, list[tuple[str, dataclasses.Field, Any]]] = {}
    for name, spec in MODELS.items():
        hints = typing.get_type_hints(spec.config_class)
        for f in dataclasses.fields(spec.config_class):
            if f.init:
                fields.setdefault(f.name, []).append((name, f, hints[f.name]))
    return fields


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per model setting, over all models; the help lists each model's default.

    A flag that the chosen ``--model`` does not have is refused later (see :func:`resolve_configs`).
    """
    group = parser.add_argument_group("model options (each applies to the models listed in its help)")
    for name, owners in sorted(_model_fields().items()):
        types = {str(tp) for _, _, tp in owners}
        if len(types) != 1:  # pragma: no cover - a programming error caught by the test suite
            raise TypeError(f"model config field {name!r} has different types across models: {types}")
        _, first, tp = owners[0]
        tp, _ = _unwrap_optional(tp)
        defaults = ", ".join(f"{model}: {f.default}" for model, f, _ in owners)
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": f"{first.metadata.get('help', '')} ({defaults})",
        }
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        else:
            kwargs["metavar"] = name.upper()
        group.add_argument("--" + name.replace("_", "-"), **kwargs)


def resolve_configs(
    args: argparse.Namespace | Mapping[str, Any], config_file: str | None = None
) -> tuple[CollabConfig, Any]:
    """Build (training config, model config) from defaults < config file < flags.

    A config file is one flat mapping holding training and model keys; a key that neither the
    training config nor the chosen model's config knows is an error naming the file.
    """
    from alignrec.collab.registry import get_model_spec

    data: dict[str, Any] = {}
    source = "command line"
    if config_file:
        data.update(load_config_file(config_file))
        source = f"{config_file} + command line"
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    train_names = {f.name for f in dataclasses.fields(CollabConfig)}
    all_model_names = set(_model_fields())
    for name, value in given.items():
        if name in train_names or name in all_model_names:
            data[name] = value
    train_data = {k: v for k, v in data.items() if k in train_names}
    train_config = from_mapping(CollabConfig, train_data, source=source)
    spec = get_model_spec(train_config.model)
    model_names_here = {f.name for f in dataclasses.fields(spec.config_class) if f.init}
    rest = {k: v for k, v in data.items() if k not in train_names}
    foreign = sorted(set(rest) - model_names_here)
    if foreign:
        raise ConfigError(
            f"{source}: setting(s) {foreign} do not apply to model {train_config.model!r}; "
            f"its settings are {sorted(model_names_here)}"
        )
    model_config = from_mapping(spec.config_class, rest, source=f"{source} (model {train_config.model})")
    return train_config, model_config


def model_config_from_dict(model: str, values: Mapping[str, Any], source: str) -> Any:
    """Rebuild a model config from a saved ``config.json`` section."""
    from alignrec.collab.registry import get_model_spec

    return from_mapping(get_model_spec(model).config_class, values, source=source)


__all__ = [
    "CollabConfig",
    "ConfigError",
    "OptimConfig",
    "add_model_arguments",
    "check_positive",
    "check_probability",
    "model_config_from_dict",
    "resolve_configs",
]
