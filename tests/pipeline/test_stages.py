"""The stage runner's rules: reuse on the same key, replace on a changed one, resume without a marker."""

from __future__ import annotations

from pathlib import Path

from alignrec.pipeline.stages import MARKER, run_stage, stage_key


def test_stage_reuse_replace_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: list[bool] = []

    def work(folder: Path, resume: bool) -> None:
        calls.append(resume)
        folder.mkdir(exist_ok=True)
        (folder / "result.txt").write_text(str(len(calls)))

    first = run_stage("s", out, {"a": 1}, ["up"], work)
    assert calls == [False] and not first.skipped and (out / MARKER).is_file()

    again = run_stage("s", out, {"a": 1}, ["up"], work)
    assert calls == [False] and again.skipped and again.key == first.key

    # Upstream changed: the old folder is removed before the stage runs again from scratch.
    (out / "stale.txt").write_text("old")
    changed = run_stage("s", out, {"a": 1}, ["other"], work)
    assert calls == [False, False] and not (out / "stale.txt").exists() and changed.key != first.key

    # Interrupted (folder without a marker): the stage is told to resume.
    (out / MARKER).unlink()
    run_stage("s", out, {"a": 1}, ["other"], work)
    assert calls == [False, False, True]

    # "always" stages run every time (the incremental pre-cache).
    run_stage("s", out, {"a": 1}, ["other"], work, always=True)
    assert calls == [False, False, True, False]


def test_stage_key_depends_on_settings_and_upstream() -> None:
    base = stage_key("tasks", {"x": 1}, ["a"])
    assert base == stage_key("tasks", {"x": 1}, ["a"])
    assert base != stage_key("tasks", {"x": 2}, ["a"])
    assert base != stage_key("tasks", {"x": 1}, ["b"])
    assert base != stage_key("finetune", {"x": 1}, ["a"])
