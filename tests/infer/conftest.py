"""Fixtures shared by the inference tests: a tiny fine-tuned run folder and its recommender."""

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
