"""What a collaborative model may train on, as arrays, and vectorised batch builders.

:class:`TrainingData` is built from a prepared data set's *training* part only —
``training_sequences()`` (each user's sequence without its validation and test items) and
``split("train")`` — so no model can see a validation or test target while it learns.
Validation and test samples are read by the trainer at evaluation time, never here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from alignrec.data.dataset import PreparedDataset
from alignrec.data.windows import sequence_windows


@dataclass
class TrainingData:
    """Training interactions of a prepared data set.

    ``seq_values[seq_offsets[u]:seq_offsets[u + 1]]`` is user ``u``'s training sequence
    (oldest first); ``train_*`` are the leave-one-out training samples (history -> next item)
    with histories left-padded with -1.
    """

    num_users: int
    num_items: int
    max_history: int
    seq_values: np.ndarray  # (N,) int64, all training sequences concatenated
    seq_offsets: np.ndarray  # (U + 1,) int64
    train_users: np.ndarray  # (S,) int64
    train_histories: np.ndarray  # (S, H) int64, -1 = padding, newest last
    train_targets: np.ndarray  # (S,) int64

    @classmethod
    def from_dataset(cls, dataset: PreparedDataset) -> TrainingData:
        """Read the training sequences and training split of ``dataset`` (nothing else)."""
        sequences = dataset.training_sequences()
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(sequences).astype(np.int64) if len(sequences) else np.zeros(0, dtype=np.int64)
        train = dataset.split("train")
        return cls(
            num_users=dataset.num_users,
            num_items=dataset.num_items,
            max_history=dataset.max_history,
            seq_values=values,
            seq_offsets=offsets,
            train_users=train.user_index,
            train_histories=train.histories,
            train_targets=train.targets,
        )

    # -- derived views --------------------------------------------------------------------
    @property
    def sequence_lengths(self) -> np.ndarray:
        return np.diff(self.seq_offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.seq_values[self.seq_offsets[user] : self.seq_offsets[user + 1]]

    @cached_property
    def interactions(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique (user, item) training pairs, sorted by user then item: ``(users (E,), items (E,))``."""
        users = np.repeat(np.arange(self.num_users, dtype=np.int64), self.sequence_lengths)
        keys = np.unique(users * self.num_items + self.seq_values)
        return keys // self.num_items, keys % self.num_items

    @cached_property
    def interaction_keys(self) -> np.ndarray:
        """Sorted ``user * num_items + item`` keys of the training pairs (for membership tests)."""
        users, items = self.interactions
        return users * self.num_items + items

    def user_items(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The training items of each of ``users`` as (row in ``users``, item) pairs, (P,) each."""
        users = np.asarray(users, dtype=np.int64)
        counts = self.sequence_lengths[users]
        rows = np.repeat(np.arange(users.shape[0], dtype=np.int64), counts)
        shift = self.seq_offsets[users] - (np.cumsum(counts) - counts)  # start of each block in seq_values
        return rows, self.seq_values[np.repeat(shift, counts) + np.arange(int(counts.sum()), dtype=np.int64)]

    def item_popularity(self) -> np.ndarray:
        """Interactions per item over the training sequences, repeats counted (I,)."""
        return np.bincount(self.seq_values, minlength=self.num_items).astype(np.int64)

    # -- sequence windows -----------------------------------------------------------------
    def sequence_windows(self, length: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cut every training sequence into windows of ``length`` items, left-padded with -1.

        The windows of :mod:`alignrec.data.windows` (the LLM's dense task uses the same ones).
        Returns ``(windows (N, length), first_target (N,))``: in window n only positions
        ``>= first_target[n]`` count as targets, so every item after a sequence's first is a
        target exactly once per epoch. ``stride`` defaults to ``length - 1`` (consecutive windows
        share one item); a smaller stride makes windows overlap so that every target keeps at
        least ``length - stride`` items of context.
        """
        step = length - 1 if stride is None else stride
        bounds = sequence_windows(self.sequence_lengths, length, step)
        ends = bounds.end  # exclusive end within the user's sequence
        positions = ends[:, None] - length + np.arange(length, dtype=np.int64)[None, :]  # (N, length)
        valid = positions >= 0
        flat = self.seq_offsets[bounds.sequence][:, None] + np.where(valid, positions, 0)
        windows = np.where(valid, self.seq_values[flat], -1)
        # the target positions inside the padded window: 1 on (the window reaching the start), or the last `step`
        first_target = np.where(bounds.start == 0, 1, length - step).astype(np.int64)
        return windows, first_target

    def prefix_windows(self, history_length: int) -> np.ndarray:
        """The leave-one-out training samples as windows ``history + [target]``: (S, history_length + 1).

        Histories longer than ``history_length`` keep their newest items; shorter ones are
        left-padded with -1.
        """
        histories = self.train_histories
        width = histories.shape[1]
        if history_length <= width:
            histories = histories[:, width - history_length :]
        else:
            pad = np.full((histories.shape[0], history_length - width), -1, dtype=np.int64)
            histories = np.concatenate([pad, histories], axis=1)
        return np.concatenate([histories, self.train_targets[:, None]], axis=1)


def sample_negative_items(
    rng: np.random.Generator, users: np.ndarray, data: TrainingData, max_rounds: int = 20
) -> np.ndarray:
    """One item per user drawn uniformly among the items that user did NOT interact with in training.

    Vectorised rejection sampling: draw for everyone, redraw only the collisions. After
    ``max_rounds`` the few remaining collisions (users who interacted with almost every item)
    are kept, which can only make the task slightly harder, never leak anything.
    """
    items = rng.integers(0, data.num_items, size=users.shape[0], dtype=np.int64)
    keys = data.interaction_keys
    todo = np.arange(users.shape[0])
    for _ in range(max_rounds):
        query = users[todo] * data.num_items + items[todo]
        position = np.searchsorted(keys, query)
        hit = (position < keys.shape[0]) & (keys[np.minimum(position, keys.shape[0] - 1)] == query)
        todo = todo[hit]
        if todo.size == 0:
            break
        items[todo] = rng.integers(0, data.num_items, size=todo.size, dtype=np.int64)
    return items
