"""Typed configs: unknown keys, coercion, validation messages, CLI flags, run records."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from alignrec.config import (
    ConfigError,
    add_config_arguments,
    config_from_args,
    from_mapping,
    load_config_file,
    to_dict,
    write_run_record,
)


@dataclass
class Example:
    """A config with one field of each supported kind."""

    name: str = field(default="x", metadata={"help": "a name"})
    steps: int = field(default=3, metadata={"help": "how many"})
    rate: float = field(default=0.5, metadata={"help": "a rate"})
    flag: bool = field(default=True, metadata={"help": "a switch"})
    mode: Literal["fast", "slow"] = field(default="fast", metadata={"help": "a choice"})
    ks: list[int] = field(default_factory=lambda: [1, 5], metadata={"help": "cut-offs"})
    out: Path | None = field(default=None, metadata={"help": "a path"})
    limit: int | None = field(default=None, metadata={"help": "optional"})

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("steps: 4\nstpes: 5\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    with pytest.raises(ConfigError) as caught:
        config_from_args(Example, parser.parse_args([]), str(path))
    message = str(caught.value)
    assert message.startswith(f"{path} + command line: unknown key(s) ['stpes']; valid keys: ")
    assert "'steps'" in message


def test_coercion_of_file_and_string_values() -> None:
    config = from_mapping(Example, {"steps": "7", "rate": "1e-3", "flag": "no", "ks": "1,10,20", "out": "a/b",
                                    "limit": None, "name": 12})
    assert (config.steps, config.rate, config.flag, config.ks, config.out, config.limit, config.name) == (
        7, 0.001, False, [1, 10, 20], Path("a/b"), None, "12")
    assert from_mapping(Example, {"steps": 7.0}).steps == 7
    assert from_mapping(Example, {"flag": "on"}).flag is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"steps": "7.5"}, "cfg.yaml: steps: expected an integer, got '7.5'"),
        ({"steps": True}, "cfg.yaml: steps: expected an integer, got True"),
        ({"rate": "fast"}, "cfg.yaml: rate: expected a number, got 'fast'"),
        ({"flag": "maybe"}, "cfg.yaml: flag: expected true/false, got 'maybe'"),
        ({"mode": "medium"}, "cfg.yaml: mode: expected one of ['fast', 'slow'], got 'medium'"),
        ({"ks": [1, "x"]}, "cfg.yaml: ks[1]: expected an integer, got 'x'"),
        ({"steps": None}, "cfg.yaml: steps: a value is required (got null)"),
        ({"steps": 0}, "cfg.yaml: steps must be >= 1, got 0"),  # from __post_init__
    ],
)
def test_bad_values_name_the_source_and_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping(Example, values, source="cfg.yaml")
    assert str(caught.value) == message


def test_flags_override_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"steps": 9, "rate": 0.25, "flag": False}), encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    args = parser.parse_args(["--steps", "11", "--mode", "slow", "--ks", "1", "3"])
    config = config_from_args(Example, args, str(path))
    assert (config.steps, config.rate, config.flag, config.mode, config.ks, config.name) == (11, 0.25, False, "slow", [1, 3], "x")


def test_bool_flags_both_ways() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    assert config_from_args(Example, parser.parse_args([])).flag is True
    assert config_from_args(Example, parser.parse_args(["--no-flag"])).flag is False
    assert config_from_args(Example, parser.parse_args(["--flag"])).flag is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "medium"])  # argparse knows the choices


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("steps: 3\nrate: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{path}: line \d+, column \d+: invalid YAML"):
        load_config_file(path)
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_config_file(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config_file(tmp_path / "missing.yaml")


def test_run_record(tmp_path: Path) -> None:
    data = tmp_path / "input.txt"
    data.write_text("hello", encoding="utf-8")
    path = write_run_record(tmp_path / "out", Example(out=Path("x")), stage="demo", seed=3, inputs={"data": data})
    record = json.loads(path.read_text())
    assert record["stage"] == "demo" and record["seed"] == 3
    assert record["config"] == to_dict(Example(out=Path("x"))) == {
        "name": "x", "steps": 3, "rate": 0.5, "flag": True, "mode": "fast", "ks": [1, 5], "out": "x", "limit": None}
    # sha256("hello")
    assert record["inputs"]["data"]["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert {"python", "cpu_count"} <= set(record["machine"])


def test_integers_stay_exact_through_flags_and_files(tmp_path: Path) -> None:
    # they used to pass through float(): 2**53 + 1 was stored as 2**53
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    assert config_from_args(Example, parser.parse_args(["--steps", "9007199254740993"])).steps == 9007199254740993
    path = tmp_path / "run.yaml"
    path.write_text("steps: 9007199254740993\nlimit: -9223372036854775808\n", encoding="utf-8")
    config = config_from_args(Example, parser.parse_args([]), str(path))
    assert (config.steps, config.limit) == (9007199254740993, -(2**63))
    assert from_mapping(Example, {"steps": "20.0", "ks": ["1e1", 2.0]}).steps == 20
    assert from_mapping(Example, {"ks": ["1e1", 2.0]}).ks == [10, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: " + "1" * 400, "steps: expected an integer from -2**63 to 2**63 - 1, got " + "1" * 28 + "..." + "1" * 29),
        ("steps: 9223372036854775808", "steps: expected an integer from -2**63 to 2**63 - 1, got 9223372036854775808"),
        ("steps: 9007199254740993.0", "steps: expected an integer without a decimal point or exponent (a float is exact "
                                      "only below 2**53), got 9007199254740992.0"),
        ("rate: " + "1" * 400, "rate: expected a number, got " + "1" * 28 + "..." + "1" * 29),
    ],
    ids=["400 digits", "2**63", "float 2**53 + 1", "float of 400 digits"],
)
def test_out_of_range_numbers_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    # a 400-digit integer used to crash with an OverflowError traceback (float() of it)
    path = tmp_path / "run.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    with pytest.raises(ConfigError) as caught:
        config_from_args(Example, parser.parse_args([]), str(path))
    assert str(caught.value) == f"{path} + command line: {message}"


def test_yaml_aliases_are_refused(tmp_path: Path) -> None:
    # "billion laughs": 9 levels of 9 aliases each used to expand to ~10**9 strings (a 254 MB error message)
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(path.read_bytes()) < 700
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert str(caught.value) == f"{path}: line 2, column 10: invalid YAML (alias *a0 found; expected no aliases (write the value out))"
    path.write_text("name: &n x\nsteps: 4\n", encoding="utf-8")  # an anchor alone is harmless
    assert load_config_file(path) == {"name": "x", "steps": 4}


def test_error_messages_are_bounded(tmp_path: Path) -> None:
    huge = "x" * 10_000_000
    with pytest.raises(ConfigError) as caught:
        from_mapping(Example, {"steps": huge, "name": "a"}, source="cfg.yaml")
    assert str(caught.value) == "cfg.yaml: steps: expected an integer, got '" + "x" * 57 + "..." + "x" * 58 + "'"
    with pytest.raises(ConfigError) as caught:
        from_mapping(Example, {f"key{i}": 1 for i in range(100_000)}, source="cfg.yaml")
    assert len(str(caught.value)) < 500
    path = tmp_path / "run.yaml"
    path.write_text("steps: " + "9" * 5000 + "\n", encoding="utf-8")  # beyond int()'s 4300 digits: a ValueError inside yaml
    with pytest.raises(ConfigError, match=rf"^{path}: invalid YAML \(Exceeds the limit \(4300 digits\)"):
        load_config_file(path)
