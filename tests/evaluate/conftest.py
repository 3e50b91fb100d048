"""Fixtures shared by the inference tests: a tiny fine-tuned run folder, its recommender and an
evaluation of it in shards."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_run(tiny_finetuned_run: Path) -> Path:
    """Here, the tiny run is the fine-tuned one (tests/conftest.py)."""
    return tiny_finetuned_run


@pytest.fixture
def uninterrupted(tiny_run, tiny_recommender, tmp_path) -> tuple[Path, dict]:
    """An evaluation of the 40 test users in shards of 7 (7, 7, 7, 7, 7, 5), never interrupted."""
    from alignrec.evaluate.recipe import EvaluateConfig, evaluate

    out = tmp_path / "whole"
    report = evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=7), tiny_run, out=out,
                      recommender=tiny_recommender)
    return out, report
