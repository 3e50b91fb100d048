"""Fixtures of the task tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tasks_data import write_handmade_run


@pytest.fixture
def handmade_run(tmp_path: Path) -> Path:
    return write_handmade_run(tmp_path / "run")
