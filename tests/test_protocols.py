"""benchmarks/protocols.py on a tiny pipeline run: both protocols for the LLM and every classic model,
the figures worked out here from the run's own files."""

from __future__ import annotations

import json
import sys

import pytest
from benchmark_scripts import load_script, run_tiny_pipeline

from alignrec.data import load_dataset
from alignrec.metrics import metrics_from_ranks
from alignrec.metrics.predictions import evaluate_predictions_file
from alignrec.pipeline.report import collab_test_ranks
from alignrec.utils.io import read_json


def test_protocols_of_a_run(tmp_path, monkeypatch):
    run = run_tiny_pipeline(tmp_path / "run")
    script = load_script("protocols")
    monkeypatch.setattr(sys, "argv", ["protocols.py", "--run", str(run), "--name", "p", "--results-dir", str(tmp_path / "out")])
    script.main()
    record = json.loads((tmp_path / "out" / "p.json").read_text())
    assert record["main_predictions_identical_to_run"] is True
    rows = {row["model"]: row for row in record["rows"]}
    dataset = load_dataset(run / "dataset")
    # the LLM's main figures are the run's evaluation
    main = read_json(run / "evaluate" / "metrics.json")["metrics"]
    llm = rows["LLM (alignment codes)"]
    assert llm["ndcg@10"] == pytest.approx(main["ndcg@10"]) and llm["hr@10"] == pytest.approx(main["hr@10"])
    # every classic model of the run, both protocols, as its trainer ranks them
    collab = sorted(p.name for p in (run / "collab").iterdir())
    assert sorted(set(rows) - {"LLM (alignment codes)"}) == sorted(read_json(run / "collab" / c / "config.json")["config"]["train"]["model"] for c in collab)
    for folder in collab:
        model = read_json(run / "collab" / folder / "config.json")["config"]["train"]["model"]
        seen = metrics_from_ranks(collab_test_ranks(run / "collab" / folder, dataset, seen_excluded=True), (1, 5, 10))
        assert rows[model]["ndcg@10 seen excluded"] == pytest.approx(seen["ndcg@10"])
        assert rows[model]["hr@10"] == pytest.approx(read_json(run / "collab" / folder / "metrics.json")["test"]["hr@10"])
    # the LLM's seen-excluded figures: an evaluation with --exclude history, re-scored from its file
    from alignrec.config import from_mapping
    from alignrec.evaluate.recipe import EvaluateConfig, evaluate

    recorded = read_json(run / "evaluate" / "config.json")["config"]
    evaluate(from_mapping(EvaluateConfig, {**recorded, "exclude": "history"}, source="test"), run, out=tmp_path / "seen")
    seen = evaluate_predictions_file(tmp_path / "seen" / "predictions.jsonl", dataset, "test", [1, 5, 10])["metrics"]
    assert llm["ndcg@10 seen excluded"] == pytest.approx(seen["ndcg@10"]) and llm["hr@10 seen excluded"] == pytest.approx(seen["hr@10"])
    assert len(record["llm_vs_classic"]) == len(collab)
    assert "## Seen items excluded" in (tmp_path / "out" / "p.md").read_text()
