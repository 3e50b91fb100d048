"""Reading the new-items file of ``alignrec tokenize assign``.

Accepted: ``.jsonl`` (one object per line), ``.json`` (a list of objects, or an object keyed
by item id as in LC-Rec's ``*.item.json``), ``.csv`` and ``.parquet``; fields ``item_id``
(required; ``id`` also accepted), ``title`` and ``description`` (optional). The text of an item
is title + description, as for training items.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.data import ItemRecord
from alignrec.errors import InputError


def _record(row: dict[str, Any], where: str) -> tuple[str, str]:
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected an object with item_id, title, description; got {type(row).__name__}")
    item_id = row.get("item_id", row.get("id"))
    if item_id is None or str(item_id).strip() == "":
        raise InputError(f"{where}: missing field 'item_id'")
    title, description = row.get("title") or "", row.get("description") or ""
    if isinstance(description, list):
        description = " ".join(str(d) for d in description)
    return str(item_id), ItemRecord(title=str(title), description=str(description)).text()


def read_new_items(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """``(item ids, texts)`` of the new items in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    records: list[tuple[str, str]] = []
    if suffix == ".jsonl":
        from alignrec.utils.io import iter_jsonl

        records = [_record(row, f"{path}: line {number}") for number, row in iter_jsonl(path)]
    elif suffix == ".json":
        from alignrec.utils.io import read_json

        data = read_json(path)
        if isinstance(data, dict):
            records = [_record({"item_id": key, **value} if isinstance(value, dict) else value, f"{path}: item {key!r}") for key, value in data.items()]
        elif isinstance(data, list):
            records = [_record(row, f"{path}: entry {i}") for i, row in enumerate(data)]
        else:
            raise InputError(f"{path}: expected a list of items or an object keyed by item id")
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), 2):
                records.append(_record(dict(row), f"{path}: line {number}"))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        records = [_record(row, f"{path}: row {i}") for i, row in enumerate(table.to_pylist())]
    else:
        raise InputError(f"{path}: unsupported extension {suffix!r}; use .jsonl, .json, .csv or .parquet")
    if not records:
        raise InputError(f"{path}: no items")
    ids = [r[0] for r in records]
    seen: set[str] = set()
    for i, item_id in enumerate(ids):
        if item_id in seen:
            raise InputError(f"{path}: item_id {item_id!r} appears twice (entry {i})")
        seen.add(item_id)
    return ids, [r[1] for r in records]


def read_embeddings_file(path: str | os.PathLike[str], rows: int) -> np.ndarray:
    """Behaviour embeddings of new items: tensor ``item_embeddings`` (rows, d), one row per new item."""
    from alignrec.collab.export import EMBEDDINGS_KEY, read_item_embeddings

    vectors = read_item_embeddings(path)
    if vectors.shape[0] != rows:
        raise InputError(f"{path}: {EMBEDDINGS_KEY!r} must be ({rows}, d) — one row per new item — got {vectors.shape}")
    return vectors
