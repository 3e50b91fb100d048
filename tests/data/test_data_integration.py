"""The papers' counts, reproduced by ``alignrec prepare`` on the real data in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignrec.data import load_dataset
from alignrec.data.prepare import PrepareConfig, prepare

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("name", "users", "items", "avg"),
    [("Games", 50_546, 16_859, 8.96), ("Instruments", 24_772, 9_922, 8.32)],  # Semantic Convergence, Table 2
)
def test_lcrec_amazon18_counts(shared_data: Path, tmp_path: Path, name: str, users: int, items: int, avg: float) -> None:
    inter = shared_data / "amazon18" / f"{name}.inter.json"
    prepare(PrepareConfig(format="lcrec", inter=str(inter)), tmp_path / "run")
    data = load_dataset(tmp_path / "run")
    assert (data.num_users, data.num_items) == (users, items)
    assert round(data.stats["avg_seq_len"], 2) == avg
    assert data.stats["dropped"] == {"interactions_of_short_users": 0, "users_too_short": 0}
    # leave-one-out: one test and one validation sample per user
    assert len(data.split("test")) == len(data.split("valid")) == users
    assert data.stats["train_samples"] == data.stats["interactions"] - 3 * users  # n - 3 per user


def test_minionerec_industrial_counts(shared_data: Path, tmp_path: Path) -> None:
    prepare(PrepareConfig(format="minionerec", dir=str(shared_data / "amazon18" / "Industrial_and_Scientific")), tmp_path / "run")
    data = load_dataset(tmp_path / "run")
    assert data.num_users == 3_285
    assert data.stats["max_seq_len"] <= 11  # history of <= 10 plus the target
    assert data.has_text and data.stats["items_with_title"] == data.num_items
