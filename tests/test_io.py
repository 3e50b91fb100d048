"""Atomic writes: a failure leaves the previous state; JSON reading errors name file and line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from alignrec.errors import InputError
from alignrec.utils.io import (
    atomic_directory,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    hash_inputs,
    read_json,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_directory_crash_leaves_the_old_folder_intact(tmp_path: Path) -> None:
    target = tmp_path / "stage"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("new")
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert (target / "a.txt").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_directory_replaces_when_complete_and_refuses_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "stage"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert leftovers(tmp_path) == []
    with pytest.raises(InputError, match="already exists"), atomic_directory(target, overwrite=False):
        pass


def test_atomic_directory_crash_on_first_build_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "stage") as tmp:
        (tmp / "a.txt").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_writes_use_normal_file_modes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
        assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
        path.chmod(0o640)
        atomic_write_text(path, "y")  # an existing file keeps its mode
        assert path.stat().st_mode & 0o777 == 0o640
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("z")
        assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0o700
    finally:
        os.umask(old)


def test_json_round_trip_with_numpy_and_paths(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "x.json", {"n": np.int64(3), "f": np.float32(0.5), "a": np.arange(3), "p": Path("q")})
    assert read_json(path) == {"n": 3, "f": 0.5, "a": [0, 1, 2], "p": "q"}


def test_read_json_errors_name_file_and_position(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.json: file not found"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  "b": \n}\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_json(bad)
    assert str(caught.value) == f"{bad}: line 4, column 1: invalid JSON (Expecting value)"
    bad.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(InputError, match=r"byte 7: not UTF-8 text"):
        read_json(bad)


def test_hash_inputs(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("hello")
    described = hash_inputs({"file": tmp_path / "f.txt", "gone": tmp_path / "nope"})
    assert described["file"]["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert described["file"]["bytes"] == 5
    assert described["gone"]["missing"] is True


def test_iter_jsonl_numbers_lines_and_names_bad_ones(tmp_path):
    from alignrec.utils.io import iter_jsonl

    good = tmp_path / "good.jsonl"
    good.write_text('{"a": 1}\n\n  \n[2, 3]\n"x"\n', encoding="utf-8")
    assert list(iter_jsonl(good)) == [(1, {"a": 1}), (4, [2, 3]), (5, "x")]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": }\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        list(iter_jsonl(bad))
    assert str(caught.value) == f"{bad}: line 2, column 7: invalid JSON (Expecting value)"

    with pytest.raises(InputError, match=r"missing\.jsonl: run the build first$"):
        list(iter_jsonl(tmp_path / "missing.jsonl", missing="run the build first"))

    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"t": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text"):
        list(iter_jsonl(latin))
