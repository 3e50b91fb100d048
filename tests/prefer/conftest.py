"""Fixtures of the preference-stage tests: a tiny fine-tuned run trained with the code-only head."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (tests/conftest.py)."""


def make_run(run_dir: Path, num_users: int = 30, num_items: int = 24, max_history: int = 20,
             item_residual: bool = False) -> Path:
    """A tiny random "fine-tuned" run whose model says it was trained with the dense format and code head
    (``item_residual``: and with the item head and a random item residual)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignrec.llm.finetuned import ModelSettings, write_model
    from alignrec.llm.item_head import ItemResidual, attach_item_residual
    from alignrec.llm.tiny_run import build_tiny_finetune_run

    build_tiny_finetune_run(run_dir, num_users=num_users, num_items=num_items, codebook_sizes=(4, 4, 4), logit_scale=8.0)
    model_dir = run_dir / "finetune" / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ModelSettings(head="code", sequential_format="dense", llm_layers=2, max_history=max_history,
                  item_loss_weight=1.0 if item_residual else 0.0, item_residual=item_residual).store(model)
    if item_residual:
        residual = ItemResidual(num_items, model.config.hidden_size)
        with torch.no_grad():
            residual.vectors.copy_(torch.randn(residual.vectors.shape, generator=torch.Generator().manual_seed(4)))
        attach_item_residual(model, residual)
    write_model(model, AutoTokenizer.from_pretrained(model_dir), model_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("prefer") / "run")


@pytest.fixture
def residual_run(tmp_path: Path) -> Path:
    """A tiny run whose model was trained with the item head and its residual."""
    return make_run(tmp_path / "residual_run", item_residual=True)
