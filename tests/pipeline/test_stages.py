"""The stage runner's rules: reuse on the same key, replace on a changed one, resume without a marker;
the key covers the code that runs the stage (and what it imports), not docs or unrelated modules."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from alignrec.pipeline import fingerprint
from alignrec.pipeline.fingerprint import changed_files, code_files, code_fingerprint
from alignrec.pipeline.stages import MARKER, run_stage, stage_key
from alignrec.utils.io import read_json


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

    # Interrupted (folder without a marker), noted as started with this key: the stage is told to resume.
    (out / MARKER).unlink()
    started = tmp_path / ".stage.alignrec-stage-started.json"
    started.write_text(json.dumps({"key": changed.key}))
    run_stage("s", out, {"a": 1}, ["other"], work)
    assert calls == [False, False, True] and not started.exists()  # the note goes once the stage is done

    # ... and by a version that noted no key: resumed too.
    (out / MARKER).unlink()
    run_stage("s", out, {"a": 1}, ["other"], work)
    assert calls == [False, False, True, True]

    # "always" stages run every time (the incremental pre-cache).
    run_stage("s", out, {"a": 1}, ["other"], work, always=True)
    assert calls == [False, False, True, True, False]


def test_an_interrupted_run_started_with_other_settings_starts_again(tmp_path: Path) -> None:
    """A fine-tune killed midway and rerun with another budget must not continue the old run's checkpoint."""
    out = tmp_path / "finetune"
    calls: list[bool] = []

    def killed(folder: Path, resume: bool) -> None:
        folder.mkdir(exist_ok=True)
        (folder / "checkpoint").write_text("step 300 of 12640")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("finetune", out, {"max_steps": 12640}, ["tasks"], killed)
    started = read_json(tmp_path / ".finetune.alignrec-stage-started.json")
    assert started["key"] == stage_key("finetune", {"max_steps": 12640}, ["tasks"]) and not (out / MARKER).exists()

    def work(folder: Path, resume: bool) -> None:
        calls.append(resume)
        folder.mkdir(exist_ok=True)
        (folder / "result.txt").write_text("done")

    run_stage("finetune", out, {"max_steps": 10000}, ["tasks"], work)
    assert calls == [False] and not (out / "checkpoint").exists() and (out / MARKER).is_file()
    # killed again with the same settings: resumed
    (out / MARKER).unlink()
    with pytest.raises(KeyboardInterrupt):
        run_stage("finetune", out, {"max_steps": 10000}, ["tasks"], killed)
    run_stage("finetune", out, {"max_steps": 10000}, ["tasks"], work)
    assert calls == [False, True] and (out / "checkpoint").exists()


def test_stage_key_depends_on_settings_and_upstream() -> None:
    base = stage_key("tasks", {"x": 1}, ["a"])
    assert base == stage_key("tasks", {"x": 1}, ["a"])
    assert base != stage_key("tasks", {"x": 2}, ["a"])
    assert base != stage_key("tasks", {"x": 1}, ["b"])
    assert base != stage_key("finetune", {"x": 1}, ["a"])


# ----------------------------------------------------------------------------- code in the key


def write_package(root: Path) -> Path:
    """A fake ``alignrec`` package: ``stage`` imports ``helper`` lazily and a registry of plugins
    by name; ``unrelated`` is imported by nobody."""
    package = root / "alignrec"
    files = {
        "__init__.py": '"""package"""\n',
        "stage.py": "from alignrec import registry\n\n\ndef work():\n    from .helper import value\n\n    return value\n",
        "helper.py": "value = 1\n",
        "registry.py": "import importlib\n\n\ndef load(name):\n    return importlib.import_module(f'alignrec.plugins.{name}')\n",
        "plugins/__init__.py": "",
        "plugins/one.py": "x = 1\n",
        "unrelated.py": "import alignrec.helper\n",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_code_files_follow_static_lazy_relative_and_registry_imports(tmp_path: Path) -> None:
    package = write_package(tmp_path)
    files = {str(p.relative_to(package)) for p in code_files(["alignrec.stage"], package)}
    assert files == {"__init__.py", "stage.py", "helper.py", "registry.py", "plugins/__init__.py", "plugins/one.py"}
    with pytest.raises(ValueError, match="no such module"):
        code_files(["alignrec.missing"], package)


def test_code_fingerprint_changes_with_imported_code_only(tmp_path: Path) -> None:
    package = write_package(tmp_path)
    before = code_fingerprint(["alignrec.stage"], package)
    (package / "unrelated.py").write_text("import alignrec.helper\nchanged = True\n")
    (tmp_path / "README.md").write_text("docs and tests live outside the package")
    assert code_fingerprint(["alignrec.stage"], package) == before
    (package / "plugins" / "one.py").write_text("x = 2  # a bug fix in a registered plugin\n")
    after = code_fingerprint(["alignrec.stage"], package)
    assert after["*"] != before["*"] and changed_files(before, after) == ["plugins/one.py"]
    # a newly imported module joins the closure
    (package / "helper.py").write_text("from alignrec import unrelated\nvalue = 1\n")
    assert "unrelated.py" in code_fingerprint(["alignrec.stage"], package)


def test_real_stage_closures_hold_their_imports_and_nothing_downstream() -> None:
    files = {str(p.relative_to(fingerprint.PACKAGE_ROOT)) for p in code_files(["alignrec.collab.trainer"])}
    # the scorer, the data loader and every registered model (imported through the registry)
    assert {"collab/trainer.py", "metrics/metrics.py", "data/dataset.py", "collab/models/sasrec.py", "utils/io.py"} <= files
    assert not {f for f in files if f.startswith(("pipeline/", "serve/", "tokenizer/", "finetune/", "evaluate/", "llm/"))}


def test_stage_reruns_when_its_code_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "src")
    monkeypatch.setattr(fingerprint, "PACKAGE_ROOT", package)
    calls: list[bool] = []

    def work(folder: Path, resume: bool) -> None:
        calls.append(resume)
        folder.mkdir(exist_ok=True)

    out = tmp_path / "stage"
    first = run_stage("s", out, {"a": 1}, [], work, code=["alignrec.stage"])
    assert read_json(out / MARKER)["code"]["helper.py"] == hashlib.sha256((package / "helper.py").read_bytes()).hexdigest()
    (package / "unrelated.py").write_text("changed = True\n")
    assert run_stage("s", out, {"a": 1}, [], work, code=["alignrec.stage"]).skipped and calls == [False]
    (package / "helper.py").write_text("value = 2  # the bug fix\n")
    again = run_stage("s", out, {"a": 1}, [], work, code=["alignrec.stage"])
    assert not again.skipped and again.key != first.key and calls == [False, False]
    # a marker written before code was recorded (no "code") is not trusted either
    marker = read_json(out / MARKER)
    del marker["code"]
    (out / MARKER).write_text(json.dumps({**marker, "key": stage_key("s", {"a": 1}, [])}))
    assert not run_stage("s", out, {"a": 1}, [], work, code=["alignrec.stage"]).skipped
