"""``alignrec precache --histories``: the file's ids are checked like ingested ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrec.cli import main
from alignrec.errors import InputError
from alignrec.serve.precache import read_histories_file


def test_a_lone_surrogate_user_id_is_an_input_error(tmp_path: Path) -> None:
    # it used to be accepted here and to crash later (UnicodeEncodeError when the id is hashed or stored)
    histories = tmp_path / "h.jsonl"
    histories.write_text(json.dumps({"user_id": "u1", "items": ["1"]}) + "\n" + json.dumps({"user_id": "\ud800", "items": ["1"]}) + "\n")
    with pytest.raises(InputError) as caught:
        read_histories_file(histories, {"1": 0})
    assert str(caught.value) == (f"{histories}: line 2, field user_id: expected Unicode text, got a lone surrogate '\\ud800' "
                                 "at character 1 (an escape \\ud800-\\udfff must be one half of a pair)")


def test_precache_with_a_lone_surrogate_exits_2(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    histories = tmp_path / "h.jsonl"
    histories.write_text(json.dumps({"user_id": "\ud800", "items": ["1"]}) + "\n")
    code = main(["precache", "--model", str(tiny_run), "--cache", str(tmp_path / "c.sqlite"), "--histories", str(histories)])
    assert code == 2
    assert "h.jsonl: line 1, field user_id: expected Unicode text, got a lone surrogate" in capsys.readouterr().err
