"""Fixtures of the fine-tuning tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """Tiny models run faster on one thread than on two contended ones (the machine is shared)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
