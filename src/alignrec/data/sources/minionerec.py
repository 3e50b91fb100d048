"""MiniOneRec csv folder: ``item.json`` plus sample files ``valid.csv`` / ``test.csv`` (and
``train.csv`` when present) with columns ``user_id, history_item_id, item_id`` (others ignored;
the ``*_sid`` columns are that project's own semantic ids and are never used as inputs).

Each row is one (history of up to 10 items, target) sample of a global time split, so a user
appears in several rows. We rebuild each user's sequence as their longest ``history + target``
chain (ties: the later row, files read in train, valid, test order), which yields the user's
most recent items; the result is then split leave-one-out like every other source.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from alignrec.data.dataset import DatasetFormatError, RawDataset
from alignrec.data.sources.common import fail, parse_listish
from alignrec.data.sources.lcrec import read_item_table
from alignrec.utils.io import read_json

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig

REQUIRED_COLUMNS = ("user_id", "history_item_id", "item_id")
SAMPLE_FILES = ("train.csv", "valid.csv", "test.csv")


def read(config: PrepareConfig) -> tuple[RawDataset, dict[str, str]]:
    if not config.dir:
        raise DatasetFormatError("missing --dir: the MiniOneRec folder with item.json and valid.csv/test.csv")
    folder = Path(config.dir)
    item_path = folder / "item.json"
    if not item_path.is_file():
        raise DatasetFormatError(f"{item_path}: file not found (a MiniOneRec folder needs item.json)")
    items = read_item_table(item_path, read_json(item_path))
    sample_paths = [folder / name for name in SAMPLE_FILES if (folder / name).is_file()]
    if not sample_paths:
        raise DatasetFormatError(f"{folder}: no sample files found (expected one of {list(SAMPLE_FILES)})")

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    chains: dict[str, list[str]] = {}
    rows_read = 0
    for path in sample_paths:
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                fail(path, "line 1 (header)", f"columns {list(REQUIRED_COLUMNS)}", f"missing {missing}")
            for row in reader:
                line = reader.line_num
                user = (row["user_id"] or "").strip()
                if not user:
                    fail(path, f"line {line}, field user_id", "a non-empty user id", row["user_id"])
                try:
                    history = [str(int(i)) for i in parse_listish(row["history_item_id"])]
                except (TypeError, ValueError):
                    fail(path, f"line {line}, field history_item_id", "a list of integer item ids", row["history_item_id"])
                target = (row["item_id"] or "").strip()
                if not target.lstrip("-").isdigit():
                    fail(path, f"line {line}, field item_id", "an integer item id", row["item_id"])
                chain = history + [str(int(target))]
                rows_read += 1
                if len(chain) >= len(chains.get(user, [])):
                    chains[user] = chain
    sequences = {user: [(item, None) for item in chain] for user, chain in chains.items()}
    source = {
        "format": "minionerec",
        "dir": str(folder),
        "files": [p.name for p in sample_paths],
        "rows": rows_read,
        "rebuilt": "each user's longest history+target chain (no timestamps in the source)",
    }
    notes = [
        "MiniOneRec samples rebuilt into per-user sequences (longest history+target chain); "
        "only the files present were used: " + ", ".join(p.name for p in sample_paths)
    ]
    inputs = {"items": str(item_path), **{p.stem: str(p) for p in sample_paths}}
    return RawDataset(sequences=sequences, items=items, source=source, notes=notes), inputs
