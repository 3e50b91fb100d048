"""``alignrec sweep``: where its results are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignrec.pipeline.sweep import SweepConfig, write_results


@pytest.mark.parametrize(("name", "label", "stem"), [("sweep", "../x", "sweep_.._x"), ("a/b", "ml-100k", "a_b_ml-100k"),
                                                       ("s", "/etc/passwd", "s__etc_passwd")])
def test_results_files_stay_in_the_results_folder(tmp_path: Path, name: str, label: str, stem: str) -> None:
    # the label (from the config or the data file's name) used to be put in the file name as is:
    # "../x" wrote tmp/x.json beside the results folder, "a/b" needed a folder that does not exist
    results = tmp_path / "results"
    config = SweepConfig(name=name, base={"data": {}}, cells=[{"name": "only"}], results=str(results), label=label)
    record = write_results(config, label, [], {}, tmp_path / "sweep", 1.0, complete=True)
    assert record["name"] == stem
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        f"results/{stem}.json", f"results/{stem}.md"]
