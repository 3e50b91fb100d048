"""Typed stage configurations: dataclasses <-> command-line flags <-> YAML/JSON files.

Every stage has one ``@dataclass`` config. Field metadata carries the help text
(``field(default=..., metadata={"help": "..."})``) and ``__post_init__`` validates values.
This module turns such a class into ``argparse`` options (``--field-name``), reads it from a
mapping or file where unknown keys are errors, and writes the resolved config of a run beside
its outputs together with the seed, input hashes and the code version.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import math
import os
import platform
import re
import reprlib
import subprocess
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from alignrec import __version__
from alignrec.errors import AlignrecError
from alignrec.utils.io import atomic_write_json, hash_inputs

C = TypeVar("C")

# Integer settings are stored as signed 64-bit integers (numpy, torch, Parquet): wider ones are refused.
INT_RANGE = (-(2**63), 2**63 - 1)
# A float holds every integer below 2**53 exactly; 2.0**53 may have been 2**53 + 1.
FLOAT_EXACT_INTEGERS = 2**53
_INTEGER_TEXT = re.compile(r"[+-]?\d+", re.ASCII)
# A value shown in an error message is cut short (a config value can be megabytes long).
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 120
_SHOWN.maxlong = 60
MAX_MESSAGE_LENGTH = 2000


class ConfigError(AlignrecError, ValueError):
    """A configuration value or key is invalid; the message names the source and the key."""


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _shown(value: Any) -> str:
    """``repr(value)``, abridged for an error message (bounded however large ``value`` is)."""
    return _SHOWN.repr(value)


def _integer(value: Any, where: str) -> int:
    """``value`` (an int, an integral float below 2**53, or the text of one) as an exact int in
    INT_RANGE. Never through float(): ``9007199254740993`` would become ...992."""
    number: int | float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.fullmatch(text):
            # int() refuses 4300+ digits: a number that long is out of range anyway
            number = int(text) if len(text.lstrip("+-0")) <= 19 else math.inf
        else:
            try:
                number = float(text)  # "20.0", "1e3"
            except ValueError:
                pass
    if isinstance(number, float) and not math.isinf(number):
        if number.is_integer() and abs(number) >= FLOAT_EXACT_INTEGERS:  # 2.0**53: was it 2**53 + 1?
            raise ConfigError(f"{where}: expected an integer without a decimal point or exponent (a float is exact "
                              f"only below 2**53), got {_shown(value)}")
        number = int(number) if number.is_integer() else None  # NaN, 7.5: no integer
    if number is None:
        raise ConfigError(f"{where}: expected an integer, got {_shown(value)}")
    if not INT_RANGE[0] <= number <= INT_RANGE[1]:
        raise ConfigError(f"{where}: expected an integer from -2**63 to 2**63 - 1, got {_shown(value)}")
    return int(number)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce a YAML/JSON/CLI value to the annotated type, or raise ConfigError naming ``where``."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required (got null)")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: expected one of {list(choices)}, got {_shown(value)}")
        return value
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_shown(value)}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {_shown(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_mapping(tp, value, source=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "yes", "1", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"false", "no", "0", "off"}:
            return False
        raise ConfigError(f"{where}: expected true/false, got {_shown(value)}")
    if tp is int:
        return _integer(value, where)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {_shown(value)}")
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond the float range
            raise ConfigError(f"{where}: expected a number, got {_shown(value)}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {_shown(value)}")
    if tp is Path:
        return Path(value)
    return value


def from_mapping(cls: type[C], data: Mapping[str, Any], source: str = "config") -> C:
    """Build ``cls`` from a mapping; unknown keys and bad values raise ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(map(str, set(data) - names))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {_shown(unknown)}; valid keys: {sorted(names)}")
    kwargs = {key: _coerce(value, hints[key], f"{source}: {key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        message = str(error)  # __post_init__ messages may show a whole value
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[:MAX_MESSAGE_LENGTH] + f"... ({len(message)} characters)"
        raise ConfigError(f"{source}: {message}") from None


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without aliases (``*name``): nested aliases expand exponentially (650 bytes of
    "billion laughs" became a 254 MB value), and config files have no need of them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} found; expected no aliases (write the value out)", event.start_mark
            )
        return super().compose_node(parent, index)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (errors name the file and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(f"{path}: {where}: invalid YAML ({getattr(error, 'problem', error)})") from None
    except (ValueError, RecursionError) as error:  # an integer of 4300+ digits; nesting deeper than the parser's limit
        problem = "nested too deeply" if isinstance(error, RecursionError) else str(error)[:200]
        raise ConfigError(f"{path}: invalid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (paths become strings)."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return convert(config)


# ----------------------------------------------------------------------------- argparse bridge


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--option`` per field of ``cls`` (defaults stay unset so that a config file
    and the dataclass defaults can fill them; see :func:`config_from_args`)."""
    hints = _field_types(cls)
    groups: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init or field.name in skip:
            continue
        # A config's sections (field metadata "section", e.g. FinetuneConfig's "model and LoRA")
        # become the help's option groups, so the help reads like the dataclass.
        section = field.metadata.get("section", "options")
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{cls.__name__}: {section}")
        group = groups[section]
        tp, _ = _unwrap_optional(hints[field.name])
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        if default is not None and default != "":
            help_text = f"{help_text} (default: {default})".strip()
        origin = typing.get_origin(tp)
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        elif origin in (list, tuple):
            kwargs["nargs"] = "+"
        elif dataclasses.is_dataclass(tp) or origin is dict or tp is dict:
            continue  # nested settings come from config files only
        else:
            kwargs["metavar"] = field.name.upper()
        group.add_argument(_flag(field.name), **kwargs)


def config_from_args(cls: type[C], args: argparse.Namespace, config_file: str | None = None) -> C:
    """Resolve a config: dataclass defaults < config file (if any) < command-line flags."""
    data: dict[str, Any] = {}
    source = "command line"
    if config_file:
        data.update(load_config_file(config_file))
        source = f"{config_file} + command line"
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for name in names:
        if hasattr(args, name):
            data[name] = getattr(args, name)
    return from_mapping(cls, data, source=source)


# ----------------------------------------------------------------------------- run records


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The current git commit of the source tree (with ``-dirty`` when modified), if any."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """Python, OS, CPU count and memory; torch version, threads and GPU only when torch is
    already imported (importing it here would add ~2 s and ~200 MB to light stages such as
    ``prepare``, and a stage that uses torch has imported it by the time it records this)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "__version__"):
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_record(
    config: Any,
    *,
    stage: str,
    seed: int | None = None,
    inputs: dict[str, str | os.PathLike[str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What every stage writes as ``config.json`` beside its outputs."""
    record: dict[str, Any] = {
        "stage": stage,
        "alignrec_version": __version__,
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "seed": seed,
        "config": to_dict(config),
        "inputs": hash_inputs(inputs or {}),
        "machine": machine_info(),
    }
    if extra:
        record.update(extra)
    return record


def write_run_record(out_dir: str | os.PathLike[str], config: Any, **kwargs: Any) -> Path:
    return atomic_write_json(Path(out_dir) / "config.json", run_record(config, **kwargs))
