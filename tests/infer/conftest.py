"""Fixtures shared by the inference tests: a tiny fine-tuned run folder, its recommender and an
evaluation of it in shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alignrec.infer.tiny import build_tiny_finetune_run

    torch.set_num_threads(2)
    return build_tiny_finetune_run(tmp_path_factory.mktemp("tiny-run") / "run", num_users=40, num_items=24)


@pytest.fixture(scope="session")
def tiny_recommender(tiny_run: Path):
    from alignrec.infer.tiny import load_tiny_recommender

    return load_tiny_recommender(tiny_run)


@pytest.fixture
def uninterrupted(tiny_run, tiny_recommender, tmp_path) -> tuple[Path, dict]:
    """An evaluation of the 40 test users in shards of 7 (7, 7, 7, 7, 7, 5), never interrupted."""
    from alignrec.infer.evaluate import EvaluateConfig, evaluate

    out = tmp_path / "whole"
    report = evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=7), tiny_run, out=out,
                      recommender=tiny_recommender)
    return out, report
