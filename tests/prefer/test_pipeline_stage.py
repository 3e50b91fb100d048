"""The preference stage inside ``alignrec run`` (configs/tiny.yaml): off by default; on, the
evaluation and the pre-cache read the model it selects, and the report has its section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrec.cli import main
from alignrec.pipeline.experiment import load_experiment
from alignrec.utils.io import read_json

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
PREFER = ["prefer.max_steps=2", "prefer.eval_steps=1", "prefer.beams=4", "prefer.eval_beam=10", "prefer.batch_size=4",
          "prefer.learning_rate=0.01", "precache=null"]


def _run(out: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> dict[str, bool]:
    capsys.readouterr()
    sets = [arg for override in (f"out={out}", *overrides) for arg in ("--set", override)]
    assert main(["run", str(TINY), *sets]) == 0
    text = capsys.readouterr().out
    printed = json.loads(text[text.rindex('{\n  "run_dir"'):])
    return {name: stage["reused"] for name, stage in printed["stages"].items()}


def test_the_stage_is_off_by_default() -> None:
    assert load_experiment(TINY).stage_configs().prefer is None
    assert load_experiment(Path(__file__).resolve().parents[2] / "configs" / "ml100k.yaml").stage_configs().prefer is None
    configs = load_experiment(TINY, ["prefer.objective=grpo"]).stage_configs()
    assert configs.prefer.objective == "grpo" and configs.prefer.evaluate_test is False


def test_the_pipeline_evaluates_the_selected_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    stages = _run(run, capsys, *PREFER)
    assert "prefer" in stages and not stages["prefer"]
    evaluation = read_json(run / "evaluate" / "config.json")
    assert evaluation["model"] == str(run / "prefer" / "model")
    metrics = read_json(run / "prefer" / "metrics.json")
    assert [v["step"] for v in metrics["validation"]] == [0, 1, 2]
    assert "## Preference alignment" in (run / "report" / "report.md").read_text()
    assert read_json(run / "report" / "summary.json")["prefer"]["objective"] == "listwise"
    # turned off again: the evaluation reads the fine-tuned model once more
    stages = _run(run, capsys, "precache=null")
    assert "prefer" not in stages and not stages["evaluate"]
    assert read_json(run / "evaluate" / "config.json")["model"] == str(run / "finetune" / "model")
