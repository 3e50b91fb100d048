"""The canonical data set: what ``alignrec prepare`` writes and every later stage reads.

On disk, ``RUN_DIR/dataset/``::

    items.parquet      item_index (dense 0..I-1), item_id (source id), title, description,
                       brand, categories (list of str)
    users.parquet      user_index (dense 0..U-1), user_id, sequence (item indices, oldest
                       first), timestamps (same length, or null when the source has none)
    splits/train.parquet, splits/valid.parquet, splits/test.parquet
                       user_index, history (<= max_history item indices, oldest first), target
    reviews.parquet    (optional) user_index, item_index, text — review/query text
    stats.json         counts, averages, what was dropped and why
    config.json        the resolved prepare config, input hashes, code version
    manifest.json      written last; a folder without it is incomplete and is refused

Leave-one-out split (the papers' protocol): for a user sequence s of length n, the test sample
is (s[:n-1], s[n-1]), the validation sample (s[:n-2], s[n-2]) and the training samples are
(s[:t], s[t]) for t = 1..n-3; every history keeps its last ``max_history`` items.
"""

from __future__ import annotations

import math
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alignrec.errors import InputError
from alignrec.utils.io import read_json

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")


class DatasetFormatError(InputError):
    """Input that does not have the expected shape; the message names file, line/field and expectation."""


@dataclass
class ItemRecord:
    """Text attributes of one item (all optional; empty strings when the source has none)."""

    title: str = ""
    description: str = ""
    brand: str = ""
    categories: list[str] = field(default_factory=list)

    def text(self) -> str:
        """Title + description, the text the LLM alignment loss and tasks read."""
        return " ".join(part for part in (self.title, self.description) if part).strip()


@dataclass
class InteractionLog:
    """Interactions in source order as parallel columns: what the readers build.

    About 16 bytes an event (a list of ``(item, time)`` tuples per user takes ~150), so a file
    of tens of millions of interactions fits in memory. ``user_ids[c]`` / ``item_ids[c]`` are
    the source ids of user / item code ``c`` (first-seen order); ``users`` and ``items`` (N,)
    hold the codes of each event; ``timestamps`` (N,) float64 its time, NaN for an event without
    one, or is None when no event has a time. A user may have no events (a key with an empty
    list in LC-Rec json): it is a user all the same, and is dropped as too short later.
    """

    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray  # (N,) int32 user codes
    items: np.ndarray  # (N,) int32 item codes
    timestamps: np.ndarray | None  # (N,) float64, NaN = no time; None = no event has one

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def select(self, keep: np.ndarray) -> InteractionLog:
        """The events where ``keep`` (N,) is true, in order; the id lists are unchanged."""
        return InteractionLog(
            self.user_ids, self.item_ids, self.users[keep], self.items[keep],
            None if self.timestamps is None else self.timestamps[keep],
        )

    @classmethod
    def from_sequences(cls, sequences: dict[str, list[tuple[str, float | None]]]) -> InteractionLog:
        """The columns of ``{user: [(item, time or None), ...]}`` (user order = dict order)."""
        builder = InteractionLogBuilder()
        for user, events in sequences.items():
            builder.user(user)
            for position, (item, when) in enumerate(events):
                if when is not None and not math.isfinite(when):
                    raise DatasetFormatError(f"user {user!r}, position {position}: expected a finite timestamp, got {when!r}")
                builder.add(user, item, when)
        return builder.build()


class InteractionLogBuilder:
    """Collects events one at a time into the compact columns of an :class:`InteractionLog`."""

    def __init__(self) -> None:
        self._user_codes: dict[str, int] = {}
        self._item_codes: dict[str, int] = {}
        self._users = array("i")
        self._items = array("i")
        self._times: array[float] | None = None  # created at the first event with a time

    def __len__(self) -> int:
        return len(self._users)

    def user(self, user: str) -> int:
        """The code of ``user``, registering it (with no events yet) when new."""
        code = self._user_codes.get(user)
        if code is None:
            code = self._user_codes[user] = len(self._user_codes)
        return code

    def add(self, user: str, item: str, when: float | None = None) -> None:
        """Append one event; ``when`` is seconds (finite, checked by the reader) or None."""
        user_code = self._user_codes.get(user)
        if user_code is None:
            user_code = self._user_codes[user] = len(self._user_codes)
        item_code = self._item_codes.get(item)
        if item_code is None:
            item_code = self._item_codes[item] = len(self._item_codes)
        if when is not None and self._times is None:
            self._times = array("d", [math.nan]) * len(self._users)  # earlier events had no time
        self._users.append(user_code)
        self._items.append(item_code)
        if self._times is not None:
            self._times.append(math.nan if when is None else when)

    def build(self) -> InteractionLog:
        return InteractionLog(
            user_ids=list(self._user_codes),
            item_ids=list(self._item_codes),
            users=np.frombuffer(self._users, dtype=np.intc) if len(self._users) else np.zeros(0, np.intc),
            items=np.frombuffer(self._items, dtype=np.intc) if len(self._items) else np.zeros(0, np.intc),
            timestamps=None if self._times is None else np.frombuffer(self._times, dtype=np.float64),
        )


@dataclass
class RawDataset:
    """What a source reader produces, before indexing, filtering and splitting.

    The interactions come either as ``interactions`` (an :class:`InteractionLog`, what the
    readers build) or as ``sequences``, user id -> chronological list of (item id, timestamp or
    None) (handy for small data built in code). ``items`` maps item id -> text; ``None`` means
    the source has no item table, so every item seen in the interactions is valid. ``reviews``
    holds (user id, item id, text). ``dropped`` counts records the reader skipped, keyed by reason.
    """

    sequences: dict[str, list[tuple[str, float | None]]] | None = None
    items: dict[str, ItemRecord] | None = None
    reviews: list[tuple[str, str, str]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    interactions: InteractionLog | None = None

    def __post_init__(self) -> None:
        if (self.sequences is None) == (self.interactions is None):
            raise ValueError("RawDataset needs exactly one of sequences or interactions")

    def interaction_log(self) -> InteractionLog:
        """The interactions as columns (built from ``sequences`` when given that way)."""
        if self.interactions is not None:
            return self.interactions
        assert self.sequences is not None
        return InteractionLog.from_sequences(self.sequences)


@dataclass(frozen=True)
class Split:
    """One split as arrays: ``histories`` is (S, H) padded with -1 on the left (H = max_history)."""

    user_index: np.ndarray  # (S,) int64
    histories: np.ndarray  # (S, H) int64, -1 = padding, newest item last
    targets: np.ndarray  # (S,) int64

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def history(self, row: int) -> np.ndarray:
        """The unpadded history of sample ``row`` (oldest first)."""
        values = self.histories[row]
        return values[values >= 0]

    def history_lengths(self) -> np.ndarray:
        return (self.histories >= 0).sum(axis=1)


def list_column_to_padded(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """Left-pad a list<int> column into a dense (rows, width) int64 array with -1.

    ``width`` grows to the longest list if needed, so nothing is ever cut here.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = column.value_lengths().fill_null(0).to_numpy().astype(np.int64)
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    rows = len(lengths)
    width = max(width, int(lengths.max()) if rows else 0)
    out = np.full((rows, width), -1, dtype=np.int64)
    if rows and len(values):
        starts = np.cumsum(lengths) - lengths
        row_of_value = np.repeat(np.arange(rows), lengths)
        position = np.arange(len(values)) - np.repeat(starts, lengths) + np.repeat(width - lengths, lengths)
        out[row_of_value, position] = values
    return out


class PreparedDataset:
    """Read access to a prepared data set folder (``RUN_DIR/dataset`` or ``RUN_DIR``)."""

    def __init__(self, path: str | os.PathLike[str]):
        given = Path(path)
        # RUN_DIR/dataset when it exists, else the folder itself if it is a data set folder.
        path = given / "dataset" if (given / "dataset").is_dir() and not (given / "manifest.json").exists() else given
        looks_prepared = any((path / name).exists() for name in ("manifest.json", "stats.json", "items.parquet", "splits"))
        if not path.is_dir() or not looks_prepared:
            raise DatasetFormatError(f"{given}: no prepared data set here (run `alignrec prepare --out {given}` first)")
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            raise DatasetFormatError(
                f"{path}: manifest.json missing — the data set is incomplete (an interrupted prepare?); run prepare again"
            )
        self.path = path
        self.manifest: dict[str, Any] = read_json(manifest_path)
        if not isinstance(self.manifest, dict) or self.manifest.get("format_version") != FORMAT_VERSION:
            got = self.manifest.get("format_version") if isinstance(self.manifest, dict) else self.manifest
            raise DatasetFormatError(f"{manifest_path}: format_version {got!r}, expected {FORMAT_VERSION}")
        self._check_files()
        self.stats: dict[str, Any] = read_json(path / "stats.json")
        self.max_history: int = int(self.manifest["max_history"])
        self._splits: dict[str, Split] = {}

    def _check_files(self) -> None:
        """Every file the manifest lists must exist with its recorded size (a cheap ``stat``
        per file that catches a truncated copy or a partially deleted folder)."""
        files = self.manifest.get("files")
        required = ["items.parquet", "users.parquet", "stats.json", *(f"splits/{s}.parquet" for s in SPLITS)]
        for name in required:
            if not (self.path / name).is_file():
                raise DatasetFormatError(f"{self.path}: {name} missing — the data set is incomplete; run prepare again")
        for name, size in (files or {}).items():
            file = self.path / name
            if not file.is_file():
                raise DatasetFormatError(f"{self.path}: {name} (listed in manifest.json) missing; run prepare again")
            if file.stat().st_size != size:
                raise DatasetFormatError(
                    f"{file}: {file.stat().st_size} bytes, manifest.json says {size}; the data set was modified "
                    "or truncated — run prepare again"
                )

    # -- tables ---------------------------------------------------------------------------
    @cached_property
    def items_table(self) -> pa.Table:
        return pq.read_table(self.path / "items.parquet")

    @cached_property
    def users_table(self) -> pa.Table:
        return pq.read_table(self.path / "users.parquet")

    @property
    def num_items(self) -> int:
        return int(self.stats["items"])

    @property
    def num_users(self) -> int:
        return int(self.stats["users"])

    @property
    def has_text(self) -> bool:
        return bool(self.stats.get("has_text"))

    @property
    def has_reviews(self) -> bool:
        return (self.path / "reviews.parquet").exists()

    @cached_property
    def item_ids(self) -> list[str]:
        """Source item id of each item index."""
        return self.items_table.column("item_id").to_pylist()

    @cached_property
    def user_ids(self) -> list[str]:
        return self.users_table.column("user_id").to_pylist()

    @cached_property
    def item_index_of(self) -> dict[str, int]:
        return {item_id: index for index, item_id in enumerate(self.item_ids)}

    @cached_property
    def user_index_of(self) -> dict[str, int]:
        return {user_id: index for index, user_id in enumerate(self.user_ids)}

    @cached_property
    def items(self) -> list[ItemRecord]:
        table = self.items_table
        columns = {name: table.column(name).to_pylist() for name in ("title", "description", "brand", "categories")}
        return [
            ItemRecord(
                title=columns["title"][i] or "",
                description=columns["description"][i] or "",
                brand=columns["brand"][i] or "",
                categories=list(columns["categories"][i] or []),
            )
            for i in range(table.num_rows)
        ]

    def item_texts(self) -> list[str]:
        return [item.text() for item in self.items]

    @cached_property
    def sequences(self) -> list[np.ndarray]:
        """Each user's full chronological item sequence (train + valid + test items)."""
        column = self.users_table.column("sequence").combine_chunks()
        offsets = column.offsets.to_numpy()
        values = column.values.to_numpy(zero_copy_only=False).astype(np.int64)
        return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]

    def training_sequences(self) -> list[np.ndarray]:
        """Each user's sequence without its validation and test items (what models may train on)."""
        return [seq[:-2] for seq in self.sequences]

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        if name not in self._splits:
            table = pq.read_table(self.path / "splits" / f"{name}.parquet")
            self._splits[name] = Split(
                user_index=table.column("user_index").to_numpy().astype(np.int64),
                histories=list_column_to_padded(table.column("history"), self.max_history),
                targets=table.column("target").to_numpy().astype(np.int64),
            )
        return self._splits[name]

    def reviews(self) -> pa.Table | None:
        return pq.read_table(self.path / "reviews.parquet") if self.has_reviews else None

    def item_popularity(self) -> np.ndarray:
        """Interaction count of each item over the training sequences (I,)."""
        training = self.training_sequences()
        if not training:
            return np.zeros(self.num_items, dtype=np.int64)
        return np.bincount(np.concatenate(training), minlength=self.num_items).astype(np.int64)

    def __repr__(self) -> str:
        return f"PreparedDataset({self.path}, users={self.num_users}, items={self.num_items})"


def load_dataset(path: str | os.PathLike[str]) -> PreparedDataset:
    """Open ``RUN_DIR`` (or ``RUN_DIR/dataset``) written by ``alignrec prepare``."""
    return PreparedDataset(path)

