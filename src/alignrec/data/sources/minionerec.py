"""MiniOneRec csv folder: ``item.json`` plus sample files ``valid.csv`` / ``test.csv`` (and
``train.csv`` when present) with columns ``user_id, history_item_id, item_id`` (others ignored;
the ``*_sid`` columns are that project's own semantic ids and are never used as inputs).

Each row is one (history of up to 10 items, target) sample of a global time split, so a user
appears in several rows. We rebuild each user's sequence as their longest ``history + target``
chain (ties: the later row, files read in train, valid, test order), which yields the user's
most recent items; the result is then split leave-one-out like every other source.

The files must be UTF-8 (a byte-order mark is fine); item ids are integers (``12``, ``"12"``;
``1.7`` or ``True`` is an error, never truncated).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignrec.data.dataset import DatasetFormatError, InteractionLogBuilder, RawDataset
from alignrec.data.sources.common import (
    MAX_ID_LENGTH,
    allow_long_csv_fields,
    check_id,
    check_row_width,
    check_unique_columns,
    fail,
    integral_float_text,
    open_text,
    parse_listish,
    utf8_errors,
)
from alignrec.data.sources.lcrec import read_item_table
from alignrec.utils.io import read_json

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig

REQUIRED_COLUMNS = ("user_id", "history_item_id", "item_id")
SAMPLE_FILES = ("train.csv", "valid.csv", "test.csv")


def integer_id(value: Any) -> str | None:
    """``value`` as a canonical integer id (``"007"`` -> ``"7"``), or None when it is not one:
    an int, an integral float below 2**53 (``3.0``) or a string of ASCII digits with an optional sign."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if value.bit_length() > 3.33 * MAX_ID_LENGTH + 4:  # more digits than MAX_ID_LENGTH (str() could refuse it)
            return None
        text = str(value)
        return text if len(text.lstrip("-")) <= MAX_ID_LENGTH else None
    if isinstance(value, float):
        return integral_float_text(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if digits.isascii() and digits.isdigit() and len(digits) <= MAX_ID_LENGTH:
            return str(int(text))
    return None


def read(config: PrepareConfig) -> tuple[RawDataset, dict[str, str]]:
    if not config.dir:
        raise DatasetFormatError("missing --dir: the MiniOneRec folder with item.json and valid.csv/test.csv")
    folder = Path(config.dir)
    item_path = folder / "item.json"
    if not item_path.is_file():
        raise DatasetFormatError(f"{item_path}: file not found (a MiniOneRec folder needs item.json)")
    items = read_item_table(item_path, read_json(item_path, unique_keys=True))
    sample_paths = [folder / name for name in SAMPLE_FILES if (folder / name).is_file()]
    if not sample_paths:
        raise DatasetFormatError(f"{folder}: no sample files found (expected one of {list(SAMPLE_FILES)})")

    allow_long_csv_fields()
    chains: dict[str, list[str]] = {}
    rows_read = 0
    for path in sample_paths:
        with open_text(path, newline="") as handle, utf8_errors(path, "a CSV file"):
            reader = csv.DictReader(handle)
            check_unique_columns(path, "line 1 (header)", list(reader.fieldnames or []))
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                # the header as read (repr), so that a stray invisible character shows
                fail(path, "line 1 (header)", f"columns {list(REQUIRED_COLUMNS)}; missing {missing}", reader.fieldnames)
            for row in reader:
                line = reader.line_num
                check_row_width(path, line, row, len(reader.fieldnames or []))
                user = (row["user_id"] or "").strip()
                if not user:
                    fail(path, f"line {line}, field user_id", "a non-empty user id", row["user_id"])
                check_id(user, path, f"line {line}, field user_id", "user id")
                history = [integer_id(i) for i in parse_listish(row["history_item_id"])]
                if None in history:
                    fail(path, f"line {line}, field history_item_id", "a list of integer item ids", row["history_item_id"])
                target = integer_id(row["item_id"] or "")
                if target is None:
                    fail(path, f"line {line}, field item_id", "an integer item id", row["item_id"])
                chain = [*history, target]
                rows_read += 1
                if len(chain) >= len(chains.get(user, [])):
                    chains[user] = chain
    events = InteractionLogBuilder()
    for user, chain in chains.items():
        for item in chain:
            events.add(user, item)
    del chains
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
    return RawDataset(interactions=events.build(), items=items, source=source, notes=notes), inputs
