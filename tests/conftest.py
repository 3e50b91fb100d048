"""Fixtures shared by every test module (keep this file small and generic)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """No progress bars in test output."""
    monkeypatch.setenv("ALIGNREC_PROGRESS", "0")


def shared_data_dir() -> Path | None:
    """The read-only benchmark data: $ALIGNREC_SHARED_DATA, else ../shared/data beside the repo."""
    candidate = Path(os.environ.get("ALIGNREC_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
    return candidate if candidate.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """Path of the shared benchmark data; skips the test when it is absent (integration tests)."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data not found (set ALIGNREC_SHARED_DATA to its location)")
    return path


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """A prepared synthetic data set (60 users, 24 items, sequences of 8) in ``tmp_path/run``."""
    from alignrec.data.synthetic import write_synthetic

    run = tmp_path / "run"
    write_synthetic(run, max_history=20, num_users=60, num_items=24, groups=4, length=8, kind="cyclic")
    return run


@pytest.fixture(scope="session")
def tiny_finetuned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fine-tuned run folder (40 users, 24 items, a random tiny Llama; alignrec.llm.tiny_run)."""
    import torch

    from alignrec.llm.tiny_run import build_tiny_finetune_run

    torch.set_num_threads(2)
    return build_tiny_finetune_run(tmp_path_factory.mktemp("tiny-run") / "run", num_users=40, num_items=24)


@pytest.fixture(scope="session")
def tiny_recommender(tiny_finetuned_run: Path):
    """The recommender of :func:`tiny_finetuned_run`."""
    from alignrec.llm.tiny_run import load_tiny_recommender

    return load_tiny_recommender(tiny_finetuned_run)
