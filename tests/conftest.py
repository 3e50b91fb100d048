"""Fixtures shared by every test module (keep this file small and generic)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """No progress bars in test output."""
    monkeypatch.setenv("ALIGNREC_PROGRESS", "0")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test, then as before. Tiny models run faster on one thread than on
    two contended ones (the machine is shared); the collab, LLM, fine-tuning and preference tests
    use it for every test (their conftest.py), others where they train."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture
def torchrun():
    """Launch ``python -m torch.distributed.run --nproc_per_node N ARGS...`` on CPUs (gloo, one
    torch thread per process; N None: ``python ARGS...``, one process without a launcher) with
    this checkout's alignrec; returns the finished process."""
    import socket
    import subprocess
    import sys

    import alignrec

    source = str(Path(alignrec.__file__).resolve().parents[1])  # the children import the same alignrec

    def launch(processes: int | None, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "ALIGNREC_PROGRESS": "0",
                       "PYTHONPATH": os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])]),
                       **(env or {})}
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                    "--master_port", str(port)] if processes else []
        command = [sys.executable, *launcher, *args]
        return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)

    return launch
