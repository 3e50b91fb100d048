"""TrainingData: what models may learn from, and its vectorised batch builders."""

from __future__ import annotations

import numpy as np
import pytest

from alignrec.collab.data import TrainingData, sample_negative_items
from alignrec.data import load_dataset


def test_training_data_never_contains_valid_or_test_items(leak_run):
    dataset = load_dataset(leak_run)
    data = TrainingData.from_dataset(dataset)
    held_out = {dataset.item_index_of[str(i)] for i in range(100, 160)}
    assert len(held_out) == 60
    assert not held_out & set(data.seq_values.tolist())
    assert not held_out & set(data.train_targets.tolist())
    assert not held_out & set(data.train_histories[data.train_histories >= 0].tolist())
    users, items = data.interactions
    assert not held_out & set(items.tolist())
    popularity = data.item_popularity()
    assert popularity[sorted(held_out)].sum() == 0
    assert popularity.sum() == 30 * 5


def test_sequence_windows_cover_every_transition_once(tmp_path, write_raw):
    dataset = load_dataset(write_raw(tmp_path / "run", {"a": [0, 1, 2, 3, 4, 5, 6, 7, 8], "b": [9, 8, 7, 6]}))
    data = TrainingData.from_dataset(dataset)
    idx = dataset.item_index_of
    a = [idx[str(i)] for i in range(7)]  # training part of user a: 7 items
    b = [idx[str(i)] for i in (9, 8)]
    windows, first_target = data.sequence_windows(4)  # 3 transitions per window
    expected = [
        [a[3], a[4], a[5], a[6]],
        [a[0], a[1], a[2], a[3]],
        [-1, -1, b[0], b[1]],
    ]
    assert windows.tolist() == expected
    assert first_target.tolist() == [1, 1, 1]
    # every transition (x -> y) of the training sequences appears exactly once
    transitions = [(w[t - 1], w[t]) for w in windows.tolist() for t in range(1, 4) if w[t - 1] >= 0]
    assert sorted(transitions) == sorted([(a[t], a[t + 1]) for t in range(6)] + [(b[0], b[1])])


def test_overlapping_windows_count_each_target_once_with_long_context(tmp_path, write_raw):
    dataset = load_dataset(write_raw(tmp_path / "run", {"a": list(range(9))}))
    data = TrainingData.from_dataset(dataset)
    a = [dataset.item_index_of[str(i)] for i in range(7)]  # training part: 7 items
    windows, first_target = data.sequence_windows(4, stride=1)
    # windows end at 7, 6, 5, 4 (the last one reaches the start); all but the last count one target
    assert windows.tolist() == [a[3:7], a[2:6], a[1:5], a[0:4]]
    assert first_target.tolist() == [3, 3, 3, 1]
    counted = [(w[p - 1], w[p]) for w, f in zip(windows.tolist(), first_target.tolist()) for p in range(f, 4)]
    assert sorted(counted) == sorted((a[t], a[t + 1]) for t in range(6))
    with pytest.raises(ValueError, match="stride must be in 1..3"):
        data.sequence_windows(4, stride=4)


def test_prefix_windows_are_train_samples(tmp_path, write_raw):
    dataset = load_dataset(write_raw(tmp_path / "run", {"a": [0, 1, 2, 3, 4, 5], "b": [6, 7, 8, 9]}))
    data = TrainingData.from_dataset(dataset)
    windows = data.prefix_windows(2)
    idx = dataset.item_index_of
    a = [idx[str(i)] for i in range(6)]
    b = [idx[str(i)] for i in range(6, 10)]
    rows = sorted(map(tuple, windows.tolist()))
    assert rows == sorted([(-1, a[0], a[1]), (a[0], a[1], a[2]), (a[1], a[2], a[3]), (-1, b[0], b[1])])


def test_negative_samples_avoid_training_items(cyclic_run):
    data = TrainingData.from_dataset(load_dataset(cyclic_run))
    users = np.repeat(np.arange(data.num_users), 400)
    negatives = sample_negative_items(np.random.default_rng(0), users, data)
    keys = set(data.interaction_keys.tolist())
    assert not any(int(u) * data.num_items + int(i) in keys for u, i in zip(users, negatives))
    # each user trained on one ring of 6 items, so 18 candidates remain: all of them get drawn
    assert len(set(negatives[users == 0].tolist())) == 18


def test_sequence_windows_reject_short_length(cyclic_run):
    data = TrainingData.from_dataset(load_dataset(cyclic_run))
    with pytest.raises(ValueError, match="window length"):
        data.sequence_windows(1)


def test_user_items_by_hand(tmp_path, write_raw):
    dataset = load_dataset(write_raw(tmp_path / "run", {"a": [0, 1, 2, 3, 4], "b": [5, 6, 7], "c": [8, 9, 5, 6]}))
    data = TrainingData.from_dataset(dataset)
    idx = dataset.item_index_of
    users = np.array([dataset.user_index_of["c"], dataset.user_index_of["a"]])
    rows, items = data.user_items(users)
    assert rows.tolist() == [0, 0, 1, 1, 1]
    assert items.tolist() == [idx["8"], idx["9"], idx["0"], idx["1"], idx["2"]]
