"""Plain interaction tables (CSV or Parquet) with an optional item table and a column mapping.

Interactions need a user and an item column; a timestamp column (numbers or ISO-8601 dates)
orders each user's events, otherwise file order is kept. An optional review column feeds the
query task. The item table (``--items``) maps the item column to title/description/brand/
categories columns; absent text columns are simply empty.
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from alignrec.data.dataset import ItemRecord, RawDataset
from alignrec.data.sources.common import categories_of, clean_text, fail, require_file

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig


def iter_rows(path: Path, required: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, row) from a CSV/TSV or Parquet file; missing columns name the file."""
    if path.suffix in {".parquet", ".pq"}:
        try:
            table = pq.read_table(path)
        except Exception as error:  # pyarrow raises several types for a broken file
            fail(path, "whole file", "a Parquet table", error)
        missing = [c for c in required if c not in table.column_names]
        if missing:
            fail(path, "schema", f"columns {required}", f"missing {missing}; has {table.column_names}")
        for index, row in enumerate(table.to_pylist()):
            yield f"row {index}", row
        return
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        delimiter = "\t" if path.suffix == ".tsv" or sample.count("\t") > sample.count(",") else ","
        reader = csv.DictReader(handle, delimiter=delimiter)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            fail(path, "line 1 (header)", f"columns {required}", f"missing {missing}; has {reader.fieldnames}")
        for row in reader:
            if None in row:
                fail(path, f"line {reader.line_num}", f"{len(reader.fieldnames or [])} fields", "extra fields")
            yield f"line {reader.line_num}", row


def parse_timestamp(value: Any, path: Path, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.timestamp()
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(path, where, "a number or an ISO-8601 date/time", value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def read(config: PrepareConfig) -> tuple[RawDataset, dict[str, str]]:
    inter_path = require_file(config.inter, "--inter", "an interactions table (.csv, .tsv or .parquet)")
    time_column = config.time_column or None
    required = [config.user_column, config.item_column]
    sequences: dict[str, list[tuple[str, float | None]]] = {}
    reviews: list[tuple[str, str, str]] = []
    first = True
    for where, row in iter_rows(inter_path, required):
        if first and time_column and time_column not in row:
            time_column = None  # the column is optional; fall back to file order
        first = False
        user = "" if row[config.user_column] is None else str(row[config.user_column]).strip()
        item = "" if row[config.item_column] is None else str(row[config.item_column]).strip()
        if not user:
            fail(inter_path, f"{where}, field {config.user_column}", "a non-empty user id", row[config.user_column])
        if not item:
            fail(inter_path, f"{where}, field {config.item_column}", "a non-empty item id", row[config.item_column])
        when = parse_timestamp(row[time_column], inter_path, f"{where}, field {time_column}") if time_column else None
        sequences.setdefault(user, []).append((item, when))
        if config.review_column and row.get(config.review_column):
            reviews.append((user, item, clean_text(row[config.review_column])))

    inputs = {"inter": str(inter_path)}
    items = None
    if config.items:
        item_path = require_file(config.items, "--items", "an item table (.csv, .tsv or .parquet)")
        items = {}
        for where, row in iter_rows(item_path, [config.item_column]):
            item = "" if row[config.item_column] is None else str(row[config.item_column]).strip()
            if not item:
                fail(item_path, f"{where}, field {config.item_column}", "a non-empty item id", row[config.item_column])
            items[item] = ItemRecord(
                title=clean_text(row.get(config.title_column)),
                description=clean_text(row.get(config.description_column)),
                brand=clean_text(row.get(config.brand_column)),
                categories=categories_of(row.get(config.categories_column)),
            )
        inputs["items"] = str(item_path)
    source = {"format": "csv", "inter": str(inter_path), "items": config.items, "time_column": time_column}
    notes = [] if time_column else ["no timestamp column: each user's events keep file order"]
    return RawDataset(sequences=sequences, items=items, reviews=reviews, source=source, notes=notes), inputs
