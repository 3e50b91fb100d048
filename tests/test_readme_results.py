"""The README's results section is generated from benchmarks/results/ and must be up to date."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def readme_results():
    spec = importlib.util.spec_from_file_location("readme_results", ROOT / "benchmarks" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_results"] = module
    spec.loader.exec_module(module)
    return module


def test_readme_results_section_matches_the_results_files(readme_results):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_results.updated_readme(text) == text, "run .venv/bin/python benchmarks/readme_results.py"


def test_figures_come_from_the_files(readme_results, tmp_path, monkeypatch):
    record = {
        "command": "alignrec run configs/ml100k.yaml", "date": "2026-12-01T10:00:00+00:00", "git_commit": "abc123",
        "machine": {"cpu_count": 2}, "load_average": [0.5, 0.4, 0.3], "total_seconds": 600.0,
        "dataset": {"users": 943, "items": 1682, "interactions": 100000, "avg_seq_len": 106.0},
        "comparison_same_users": [
            {"model": "LLM (alignment codes)", "users": 200, "hr@1": 0.01, "hr@5": 0.05, "hr@10": 0.1234, "ndcg@5": 0.03, "ndcg@10": 0.05},
            {"model": "pop", "users": 200, "hr@1": 0.0, "hr@5": 0.02, "hr@10": 0.04, "ndcg@5": 0.01, "ndcg@10": 0.02},
        ],
        "finetune": {"steps": 120, "train_tokens_per_second": 210.4},
        "tokenizer": {"levels": 3, "codebook_size": 32, "collisions": {"raw": 0.0012}},
    }
    (tmp_path / "e2e_ml-100k.json").write_text(json.dumps(record))
    monkeypatch.setattr(readme_results, "RESULTS", tmp_path)
    block = "\n".join(readme_results.block_main_job())
    assert "| LLM (alignment codes) | 200 | 0.0100 | 0.0500 | 0.1234 | 0.0300 | 0.0500 |" in block
    assert "Total 10.0 min on 2 CPU cores" in block
    assert "fine-tune 120 steps at 210 tokens/s" in block
    assert "raw collision rate 0.12%" in block
    assert "commit `abc123`" in block
    assert "the fine-tuned LLM beats popularity on NDCG@10" in block
    # a missing file is reported as missing, never filled in
    assert readme_results.block_baselines()[2].startswith("*Not run yet*")
    with pytest.raises(SystemExit):
        readme_results.updated_readme("no markers here")
