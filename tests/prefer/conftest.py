"""Fixtures of the preference-stage tests: a tiny fine-tuned run trained with the code-only head."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (tests/conftest.py)."""


def make_run(run_dir: Path, num_users: int = 30, num_items: int = 24, max_history: int = 20) -> Path:
    """A tiny random "fine-tuned" run whose model says it was trained with the dense format and code head."""
    from transformers import AutoModelForCausalLM

    from alignrec.llm.finetuned import ModelSettings
    from alignrec.llm.tiny_run import build_tiny_finetune_run

    build_tiny_finetune_run(run_dir, num_users=num_users, num_items=num_items, codebook_sizes=(4, 4, 4), logit_scale=8.0)
    model_dir = run_dir / "finetune" / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ModelSettings(head="code", sequential_format="dense", llm_layers=2, max_history=max_history).store(model)
    model.save_pretrained(model_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("prefer") / "run")
