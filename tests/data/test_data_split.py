"""Leave-one-out split, history truncation, filtering counters and k-core: known answers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignrec.data import load_dataset
from alignrec.data.dataset import DatasetFormatError, ItemRecord, RawDataset, Split
from alignrec.data.prepare import PrepareConfig, kcore_filter, leave_one_out, leave_one_out_arrays, prepare, write_dataset


def lcrec_run(tmp_path: Path, sequences: dict[str, list[int]], **settings: object) -> Path:
    inter = tmp_path / "x.inter.json"
    inter.write_text(json.dumps(sequences), encoding="utf-8")
    prepare(PrepareConfig(format="lcrec", inter=str(inter), **settings), tmp_path / "run")  # type: ignore[arg-type]
    return tmp_path / "run"


def rows(split: Split) -> list[tuple[int, list[int], int]]:
    return [(int(u), split.history(i).tolist(), int(t)) for i, (u, t) in enumerate(zip(split.user_index, split.targets, strict=True))]


def test_five_item_user_gives_exact_samples(tmp_path: Path) -> None:
    # item ids 10..14 get indices 0..4
    data = load_dataset(lcrec_run(tmp_path, {"7": [10, 11, 12, 13, 14]}))
    assert rows(data.split("test")) == [(0, [0, 1, 2, 3], 4)]
    assert rows(data.split("valid")) == [(0, [0, 1, 2], 3)]
    assert rows(data.split("train")) == [(0, [0], 1), (0, [0, 1], 2)]
    test = data.split("test")
    assert test.histories.shape == (1, 20)  # left-padded to max_history
    assert test.histories[0].tolist() == [-1] * 16 + [0, 1, 2, 3]
    assert [s.tolist() for s in data.training_sequences()] == [[0, 1, 2]]
    assert data.item_popularity().tolist() == [1, 1, 1, 0, 0]
    stats = data.stats
    assert (stats["train_samples"], stats["valid_samples"], stats["test_samples"]) == (2, 1, 1)


def test_max_history_truncates_from_the_left(tmp_path: Path) -> None:
    data = load_dataset(lcrec_run(tmp_path, {"0": [0, 1, 2, 3, 4, 5]}, max_history=2))
    assert rows(data.split("test")) == [(0, [3, 4], 5)]
    assert rows(data.split("valid")) == [(0, [2, 3], 4)]
    assert rows(data.split("train")) == [(0, [0], 1), (0, [0, 1], 2), (0, [1, 2], 3)]
    assert data.split("train").histories.shape == (3, 2)
    assert data.sequences[0].tolist() == [0, 1, 2, 3, 4, 5]  # the full sequence is kept


def test_leave_one_out_minimum_length_has_no_training_sample() -> None:
    splits = leave_one_out([np.array([5, 6, 7])], max_history=20)
    assert splits["train"] == ([], [], [])
    assert splits["valid"] == ([0], [[5]], [6])
    assert splits["test"] == ([0], [[5, 6]], [7])


def test_short_users_and_unknown_items_are_dropped_and_counted(tmp_path: Path) -> None:
    raw = RawDataset(
        sequences={
            "a": [("x", 3.0), ("y", 1.0), ("z", 2.0), ("ghost", 0.0)],
            "b": [("x", None), ("y", None)],
            "c": [("ghost", None), ("x", None), ("y", None)],
        },
        items={name: ItemRecord(title=name) for name in ("x", "y", "z", "w")},
    )
    path = write_dataset(raw, tmp_path / "run", PrepareConfig(format="csv"))
    data = load_dataset(path.parent)
    assert data.user_ids == ["a"]
    assert data.sequences[0].tolist() == [data.item_index_of[i] for i in ("y", "z", "x")]  # by timestamp
    assert data.stats["dropped"] == {
        "catalogue_items_without_interactions": 1,  # w
        "interactions_of_short_users": 4,  # b: 2, c: 2 after its unknown item went
        "unknown_item_interactions": 2,
        "users_too_short": 2,
    }


def test_min_sequence_length_is_configurable(tmp_path: Path) -> None:
    data = load_dataset(lcrec_run(tmp_path, {"0": [1, 2, 3], "1": [1, 2, 3, 4]}, min_sequence_length=4))
    assert data.user_ids == ["1"]
    assert data.stats["dropped"]["users_too_short"] == 1


def test_kcore_known_answer_with_cascade() -> None:
    sequences = {
        "u1": [("a", 1.0), ("b", 2.0)],
        "u2": [("a", 1.0), ("c", 2.0)],
        "u3": [("a", 1.0), ("b", 2.0)],
        "u4": [("d", 1.0), ("e", 2.0)],
        "u5": [("d", 1.0), ("f", 2.0)],
    }
    kept, dropped = kcore_filter(sequences, 2)
    # c, e, f are rare; then u2, u4, u5 fall under 2; then d has no users left
    assert kept == {"u1": [("a", 1.0), ("b", 2.0)], "u3": [("a", 1.0), ("b", 2.0)]}
    assert dropped == Counter({"kcore_users": 3, "kcore_items": 4, "kcore_interactions": 6})


def test_kcore_already_satisfied_drops_nothing() -> None:
    sequences = {f"u{u}": [(f"i{i}", float(i)) for i in range(3)] for u in range(3)}
    kept, dropped = kcore_filter(sequences, 3)
    assert kept == sequences
    assert dropped == Counter({"kcore_users": 0, "kcore_items": 0, "kcore_interactions": 0})


def test_kcore_option_applies_to_any_format(tmp_path: Path) -> None:
    # items 1..3 are shared by users 0 and 1; item 9 is seen once -> 2-core removes it
    data = load_dataset(lcrec_run(tmp_path, {"0": [1, 2, 3, 9], "1": [3, 2, 1]}, kcore=2))
    assert data.item_ids == ["1", "2", "3"]
    assert data.stats["kcore"] == 2
    assert data.stats["dropped"]["kcore_items"] == 1 and data.stats["dropped"]["kcore_interactions"] == 1


def test_everything_filtered_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"no users left after filtering .*users_too_short': 2"):
        lcrec_run(tmp_path, {"0": [1, 2], "1": [3]})
    assert not (tmp_path / "run" / "dataset").exists()


def test_no_interactions_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("user_id,item_id\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"empty\.csv: no interactions found"):
        prepare(PrepareConfig(format="csv", inter=str(empty)), tmp_path / "run")


def test_stats_fields(tmp_path: Path) -> None:
    data = load_dataset(lcrec_run(tmp_path, {"0": [1, 2, 3], "1": [1, 2, 3, 4, 5]}))
    stats = data.stats
    assert {k: stats[k] for k in ("users", "items", "interactions", "avg_seq_len", "min_seq_len", "max_seq_len")} == {
        "users": 2, "items": 5, "interactions": 8, "avg_seq_len": 4.0, "min_seq_len": 3, "max_seq_len": 5}
    assert stats["density"] == 0.8
    config = json.loads((data.path / "config.json").read_text())
    assert config["stage"] == "prepare" and config["config"]["format"] == "lcrec"
    assert config["inputs"]["inter"]["sha256"]


@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=6),
    max_history=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_vectorised_split_matches_the_reference(lengths: list[int], max_history: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(0, 30, size=n) for n in lengths]
    flat = np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)
    fast = leave_one_out_arrays(flat, np.array(lengths), max_history)
    for name, (users, histories, targets) in leave_one_out(sequences, max_history).items():
        split = fast[name]
        assert split.user_index.tolist() == users
        assert split.targets.tolist() == targets
        assert [split.values[a:b].tolist() for a, b in zip(split.offsets[:-1], split.offsets[1:], strict=True)] == histories
