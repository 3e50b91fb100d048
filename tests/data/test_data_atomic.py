"""A prepare that dies midway never leaves a data set that load_dataset accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import alignrec.data.prepare as prepare_module
from alignrec.data import load_dataset
from alignrec.data.dataset import DatasetFormatError
from alignrec.data.prepare import PrepareConfig, prepare


def lcrec_input(tmp_path: Path, sequences: dict[str, list[int]]) -> PrepareConfig:
    inter = tmp_path / "x.inter.json"
    inter.write_text(json.dumps(sequences), encoding="utf-8")
    return PrepareConfig(format="lcrec", inter=str(inter))


def crash_on_call(monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    """Make the ``number``-th Parquet write raise, as a kill midway would stop it."""
    real = prepare_module._write_table
    calls = {"n": 0}

    def flaky(table, path):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == number:
            raise KeyboardInterrupt("simulated kill")
        real(table, path)

    monkeypatch.setattr(prepare_module, "_write_table", flaky)


def test_crash_midway_leaves_nothing_loadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = lcrec_input(tmp_path, {"0": [1, 2, 3, 4]})
    crash_on_call(monkeypatch, 3)  # items and users written, splits not
    with pytest.raises(KeyboardInterrupt):
        prepare(config, tmp_path / "run")
    assert not (tmp_path / "run" / "dataset").exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == []  # the temporary folder is removed too
    with pytest.raises(DatasetFormatError, match="no prepared data set here"):
        load_dataset(tmp_path / "run")


def test_crash_while_replacing_keeps_the_previous_data_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare(lcrec_input(tmp_path, {"0": [1, 2, 3, 4]}), tmp_path / "run")
    crash_on_call(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        prepare(lcrec_input(tmp_path, {"0": [1, 2, 3, 4], "1": [5, 6, 7]}), tmp_path / "run")
    data = load_dataset(tmp_path / "run")
    assert data.num_users == 1 and data.sequences[0].tolist() == [0, 1, 2, 3]
    monkeypatch.undo()
    prepare(lcrec_input(tmp_path, {"0": [1, 2, 3, 4], "1": [5, 6, 7]}), tmp_path / "run")
    assert load_dataset(tmp_path / "run").num_users == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["dataset"]


def test_manifest_rule(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare(lcrec_input(tmp_path, {"0": [1, 2, 3, 4]}), run)
    manifest = json.loads((run / "dataset" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["max_history"] == 20
    assert set(manifest["files"]) == {
        "items.parquet", "users.parquet", "splits/train.parquet", "splits/valid.parquet", "splits/test.parquet",
        "stats.json", "config.json"}
    load_dataset(run / "dataset")  # the folder itself is accepted as well as the run folder

    # a truncated file no longer matches the size the manifest recorded
    users = run / "dataset" / "users.parquet"
    original = users.read_bytes()
    users.write_bytes(original[:-10])
    with pytest.raises(DatasetFormatError, match=r"users\.parquet: \d+ bytes, manifest\.json says \d+"):
        load_dataset(run)
    users.write_bytes(original)

    (run / "dataset" / "splits" / "valid.parquet").unlink()
    with pytest.raises(DatasetFormatError, match=r"splits/valid\.parquet missing"):
        load_dataset(run)

    (run / "dataset" / "manifest.json").unlink()
    with pytest.raises(DatasetFormatError, match="manifest.json missing — the data set is incomplete"):
        load_dataset(run)


def test_manifest_of_another_format_version_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare(lcrec_input(tmp_path, {"0": [1, 2, 3, 4]}), run)
    path = run / "dataset" / "manifest.json"
    path.write_text(json.dumps({"format_version": 99, "max_history": 20}))
    with pytest.raises(DatasetFormatError, match="format_version 99, expected 1"):
        load_dataset(run)


def test_output_is_readable_by_others(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        prepare(lcrec_input(tmp_path, {"0": [1, 2, 3, 4]}), tmp_path / "run")
    finally:
        os.umask(old)
    dataset = tmp_path / "run" / "dataset"
    assert dataset.stat().st_mode & 0o777 == 0o755
    assert (dataset / "stats.json").stat().st_mode & 0o777 == 0o644
