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


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    max_history=st.integers(1, 5),
    rows=st.integers(1, 7),
    seed=st.integers(0, 2**16),
)
def test_splits_built_in_pieces_match_the_whole(lengths: list[int], max_history: int, rows: int, seed: int) -> None:
    import pyarrow as pa

    from alignrec.data.prepare import iter_split_tables

    flat = np.random.default_rng(seed).integers(0, 30, size=sum(lengths))
    whole = leave_one_out_arrays(flat, np.array(lengths), max_history)
    for name, split in whole.items():
        pieces = list(iter_split_tables(flat, np.array(lengths), max_history, name, rows=rows))
        assert all(piece.num_rows == rows for piece in pieces[:-1]) and 0 < pieces[-1].num_rows <= rows or (
            len(pieces) == 1 and pieces[0].num_rows == 0)
        assert pa.concat_tables(pieces).equals(split.to_table())


def test_split_file_written_in_row_groups_is_byte_identical(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from alignrec.data.prepare import _write_table, iter_split_tables

    lengths = np.full(700, 9)
    flat = np.random.default_rng(0).integers(0, 100, size=int(lengths.sum()))
    whole = leave_one_out_arrays(flat, lengths, 20)["train"].to_table()  # 4200 rows
    pq.write_table(whole, tmp_path / "whole.parquet", row_group_size=1000)
    # what _write_table does with pieces, at a row-group size small enough for a test
    with pq.ParquetWriter(tmp_path / "pieces.parquet", whole.schema) as writer:
        for piece in iter_split_tables(flat, lengths, 20, "train", rows=1000):
            writer.write_table(piece)
    assert (tmp_path / "pieces.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    _write_table(iter_split_tables(flat, lengths, 20, "train"), tmp_path / "default.parquet")
    pq.write_table(whole, tmp_path / "default_whole.parquet")
    assert (tmp_path / "default.parquet").read_bytes() == (tmp_path / "default_whole.parquet").read_bytes()
    assert pq.read_table(tmp_path / "default.parquet").equals(whole)


@settings(max_examples=60, deadline=None)
@given(
    sequences=st.dictionaries(st.sampled_from([f"u{u}" for u in range(8)]),
                              st.lists(st.sampled_from("abcdefg"), max_size=8), max_size=8),
    k=st.integers(1, 4),
)
def test_kcore_on_arrays_matches_the_reference(sequences: dict[str, list[str]], k: int) -> None:
    from alignrec.data.dataset import InteractionLog
    from alignrec.data.prepare import kcore_arrays

    events = {user: [(item, None) for item in items] for user, items in sequences.items()}
    kept, dropped = kcore_filter(events, k)
    log = InteractionLog.from_sequences(events)
    alive, present, dropped_arrays = kcore_arrays(
        log.users, log.items, np.ones(len(log), dtype=bool), np.ones(len(log.user_ids), dtype=bool), len(log.item_ids), k)
    assert dropped_arrays == dropped
    assert [log.user_ids[u] for u in np.flatnonzero(present)] == list(kept)
    assert [(log.user_ids[u], log.item_ids[i]) for u, i in zip(log.users[alive], log.items[alive], strict=True)] == [
        (user, item) for user, user_events in kept.items() for item, _ in user_events]


def test_sequences_and_interaction_log_give_the_same_data_set(tmp_path: Path) -> None:
    from alignrec.data.dataset import InteractionLog

    sequences = {"3": [("b", 2.0), ("a", None), ("c", 1.0), ("d", 1.0)], "1": [("a", None), ("b", None), ("c", None)],
                 "2": [], "10": [("x", 5.0), ("y", 4.0), ("z", 3.0), ("a", 2.0)]}
    by_dict = write_dataset(RawDataset(sequences=sequences), tmp_path / "a", PrepareConfig(format="csv"))
    by_log = write_dataset(RawDataset(interactions=InteractionLog.from_sequences(sequences)), tmp_path / "b",
                           PrepareConfig(format="csv"))
    for name in ("users.parquet", "items.parquet", "splits/train.parquet", "splits/valid.parquet", "splits/test.parquet"):
        assert (by_dict / name).read_bytes() == (by_log / name).read_bytes()
    data = load_dataset(by_log)
    assert data.user_ids == ["1", "3", "10"]
    # ties keep source order, events without a time go last; a user with any untimed event has null timestamps
    assert [[data.item_ids[i] for i in seq] for seq in data.sequences] == [["a", "b", "c"], ["c", "d", "b", "a"],
                                                                             ["a", "z", "y", "x"]]
    assert data.users_table.column("timestamps").to_pylist() == [None, None, [2.0, 3.0, 4.0, 5.0]]
    assert data.stats["dropped"] == {"interactions_of_short_users": 0, "users_too_short": 1}  # user "2", no events
    with pytest.raises(DatasetFormatError, match=r"user '3', position 1: expected a finite timestamp, got nan"):
        write_dataset(RawDataset(sequences={"3": [("a", 1.0), ("b", float("nan")), ("c", 2.0)]}), tmp_path / "c",
                      PrepareConfig(format="csv"))
