"""Tiny data sets with known answers for the collab tests (built in temp folders, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignrec.data.dataset import RawDataset
from alignrec.data.prepare import PrepareConfig, write_dataset
from alignrec.data.synthetic import write_synthetic


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (tests/conftest.py)."""


def write_raw(run_dir: Path, sequences: dict[str, list[int]]) -> Path:
    raw = RawDataset(sequences={u: [(str(i), float(t)) for t, i in enumerate(items)] for u, items in sequences.items()})
    write_dataset(raw, run_dir, PrepareConfig(format="csv"))
    return run_dir


@pytest.fixture(name="write_raw")
def write_raw_fixture():
    """Factory: ``write_raw(run_dir, {user: [item, ...]})`` -> a prepared run folder."""
    return write_raw


@pytest.fixture(scope="session")
def cyclic_run(tmp_path_factory) -> Path:
    """60 users walking 4 rings of 6 items: the next item is a function of the last one."""
    run = tmp_path_factory.mktemp("cyclic")
    write_synthetic(run, kind="cyclic", num_users=60, num_items=24, groups=4, length=8, with_text=False)
    return run


@pytest.fixture(scope="session")
def pairs_run(tmp_path_factory) -> Path:
    """Planted co-purchase pairs: items 2k and 2k+1 are always bought together, one after the other.

    Each of 240 users buys three random pairs in a row (a1 b1 a2 b2 a3 b3) followed by two
    filler items from a separate pool, which become the validation and test targets, so the
    training part keeps all three pairs whole.
    """
    run = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(7)
    pairs = 20
    sequences = {}
    for user in range(240):
        chosen = rng.choice(pairs, size=3, replace=False)
        items = [int(x) for p in chosen for x in (2 * p, 2 * p + 1)]
        items += [int(x) for x in 2 * pairs + rng.choice(10, size=2, replace=False)]
        sequences[f"u{user}"] = items
    return write_raw(run, sequences)


@pytest.fixture(scope="session")
def leak_run(tmp_path_factory) -> Path:
    """Every user's validation and test items are unique to that user (items 'v<u>', 't<u>')."""
    run = tmp_path_factory.mktemp("leak")
    rng = np.random.default_rng(3)
    sequences = {}
    for user in range(30):
        items = [int(x) for x in rng.choice(12, size=5, replace=False)]
        sequences[f"u{user}"] = items + [100 + 2 * user, 101 + 2 * user]
    return write_raw(run, sequences)
