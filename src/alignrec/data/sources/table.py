"""Plain interaction tables (CSV, TSV or Parquet) with an optional item table and a column mapping.

Interactions need a user and an item column (``--user-column``, ``--item-column``). A
timestamp column (numbers, ISO-8601 dates/times, or Parquet timestamp/date values) orders each
user's events; without one, file order is kept. ``--time-column`` defaults to ``timestamp``
when the file has it; a column named explicitly must exist. An optional review column
(``--review-column``) feeds the query task. The item table (``--items``) is keyed by the same
item column and maps ``--title-column``/``--description-column``/``--brand-column``/
``--categories-column``; absent text columns are simply empty. Timestamps without a time zone
are read as UTC so that results do not depend on the machine's zone.

Files are read row by row (Parquet one batch at a time), so only the compact interaction
columns stay in memory. Text files must be UTF-8 (a byte-order mark is fine); timestamps must
be finite; ids are strings or integers (an integral float such as ``12.0``, as pandas writes
an id column with gaps, counts as ``12``), never lists, NaN or ``1.7``.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignrec.data.dataset import DatasetFormatError, InteractionLogBuilder, ItemRecord, RawDataset
from alignrec.data.sources.common import (
    FLOAT_EXACT_INTEGERS,
    MAX_ID_LENGTH,
    allow_long_csv_fields,
    categories_of,
    check_id,
    check_row_width,
    check_unique_columns,
    clean_text,
    fail,
    field_text,
    finite_timestamp,
    integral_float_text,
    open_text,
    plain_number,
    require_file,
    utf8_errors,
)

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig

PARQUET_SUFFIXES = {".parquet", ".pq"}


def _columns(path: Path) -> list[str]:
    """The column names of a table file (read from the header/schema only)."""
    if path.suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as error:  # pyarrow raises several types for a broken file
            raise DatasetFormatError(f"{path}: not a readable Parquet file ({error})") from None
    allow_long_csv_fields()
    with open_text(path, newline="") as handle, utf8_errors(path, "a CSV/TSV file"):
        sample = handle.read(4096)
        handle.seek(0)
        return next(csv.reader(handle, delimiter=_delimiter(path, sample)), [])


def _delimiter(path: Path, sample: str) -> str:
    if path.suffix == ".tsv":
        return "\t"
    if path.suffix == ".csv":
        return ","
    return "\t" if sample.count("\t") > sample.count(",") else ","


def _check_columns(path: Path, have: list[str], required: list[str]) -> None:
    where = "schema" if path.suffix in PARQUET_SUFFIXES else "line 1 (header)"
    check_unique_columns(path, where, have)
    missing = [c for c in required if c not in have]
    if missing:
        raise DatasetFormatError(
            f"{path}: {where}: missing column(s) {missing}; the file has {have} "
            "(map yours with --user-column/--item-column/--time-column/...)"
        )


def iter_rows(path: Path, required: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, row) from a CSV/TSV or Parquet file; missing columns name the file."""
    if path.suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except Exception as error:  # pyarrow raises several types for a broken file
            raise DatasetFormatError(f"{path}: not a readable Parquet file ({error})") from None
        _check_columns(path, table.schema_arrow.names, required)
        number = 0
        try:
            for batch in table.iter_batches(batch_size=65536):  # one batch in memory at a time
                for row in batch.to_pylist():
                    number += 1
                    yield f"row {number}", row
        except OSError as error:  # a damaged page: pyarrow raises OSError (ArrowIOError)
            raise DatasetFormatError(f"{path}: not a readable Parquet file (after row {number}: {error})") from None
        return
    allow_long_csv_fields()
    with open_text(path, newline="") as handle, utf8_errors(path, "a CSV/TSV file"):
        delimiter = _delimiter(path, handle.read(4096))
        handle.seek(0)
        reader = csv.DictReader(handle, delimiter=delimiter)
        fields = list(reader.fieldnames or [])
        _check_columns(path, fields, required)
        for row in reader:
            check_row_width(path, reader.line_num, row, len(fields))
            yield f"line {reader.line_num}", row


def parse_timestamp(value: Any, path: Path, where: str) -> float:
    """Seconds since the epoch from a number, a numeric string, an ISO-8601 string or a
    datetime/date value (naive values are UTC)."""
    if isinstance(value, bool):
        fail(path, where, "a number or an ISO-8601 date/time", value)
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        return finite_timestamp(number, value, path, where, "a number or an ISO-8601 date/time")
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp()
    text = "" if value is None else str(value).strip()
    number = plain_number(text)
    if number is not None:
        # "nan", "inf" and "1e400" (inf) are numbers too, but none of them can be ordered
        return finite_timestamp(number, value, path, where, "a number or an ISO-8601 date/time")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(path, where, "a number or an ISO-8601 date/time (e.g. 2018-03-01 or 2018-03-01T12:30:00)", value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _integral_text(value: float | decimal.Decimal) -> str | None:
    """``"12"`` for 12.0 or Decimal("12"); None for a value that is not a (reasonably sized) integer."""
    if isinstance(value, float):
        return integral_float_text(value)
    if not value.is_finite() or value != value.to_integral_value() or value.adjusted() >= MAX_ID_LENGTH:
        return None
    return str(int(value))


def _id(row: dict[str, Any], column: str, path: Path, where: str, what: str) -> str:
    """The id in ``row[column]``: a string (stripped), an integer, or an integral float (12.0 -> "12")."""
    value = row[column]
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, (float, decimal.Decimal)):
        integral = _integral_text(value)
        if integral is None:  # 1.7, NaN (a gap in a pandas column), inf, 1E+5000, 2.0**53: no id
            beyond = isinstance(value, float) and value.is_integer()
            exact = f"; a float column holds ids exactly only below 2**53 = {FLOAT_EXACT_INTEGERS}" if beyond else ""
            fail(path, f"{where}, field {column}", f"a {what} (a string or an integer{exact})", value)
        text = integral  # a float/decimal column of ids: 12.0 -> "12"
    elif value is None:
        text = ""
    else:  # a list, a struct, bytes, a date...: its str() would silently become an id like "[10]"
        fail(path, f"{where}, field {column}", f"a {what} (a string or an integer), not {type(value).__name__}", value)
    if not text:
        fail(path, f"{where}, field {column}", f"a non-empty {what}", value)
    return check_id(text, path, f"{where}, field {column}", what)


def read_items(path: Path, config: PrepareConfig, dropped: Counter[str]) -> dict[str, ItemRecord]:
    """item id -> text from an item table (later repeats of an id are dropped and counted)."""
    items: dict[str, ItemRecord] = {}
    dropped["duplicate_item_rows"] += 0
    for where, row in iter_rows(path, [config.item_column]):
        item = _id(row, config.item_column, path, where, "item id")
        if item in items:
            dropped["duplicate_item_rows"] += 1
            continue
        items[item] = ItemRecord(
            title=clean_text(field_text(row, config.title_column, path, where)),
            description=clean_text(field_text(row, config.description_column, path, where)),
            brand=clean_text(field_text(row, config.brand_column, path, where)),
            categories=categories_of(field_text(row, config.categories_column, path, where)),
        )
    return items


def read(config: PrepareConfig) -> tuple[RawDataset, dict[str, str]]:
    inter_path = require_file(config.inter, "--inter", "an interactions table (.csv, .tsv or .parquet)")
    have = _columns(inter_path)
    time_column: str | None
    if config.time_column is None:
        time_column = "timestamp" if "timestamp" in have else None
    else:
        time_column = config.time_column or None  # '' = file order
    required = [config.user_column, config.item_column]
    required += [time_column] if time_column else []
    required += [config.review_column] if config.review_column else []

    events = InteractionLogBuilder()
    reviews: list[tuple[str, str, str]] = []
    for where, row in iter_rows(inter_path, required):
        user = _id(row, config.user_column, inter_path, where, "user id")
        item = _id(row, config.item_column, inter_path, where, "item id")
        when = parse_timestamp(row[time_column], inter_path, f"{where}, field {time_column}") if time_column else None
        events.add(user, item, when)
        if config.review_column and row.get(config.review_column):
            reviews.append((user, item, clean_text(field_text(row, config.review_column, inter_path, where))))

    inputs = {"inter": str(inter_path)}
    dropped: Counter[str] = Counter()
    items = None
    if config.items:
        item_path = require_file(config.items, "--items", "an item table (.csv, .tsv or .parquet)")
        items = read_items(item_path, config, dropped)
        inputs["items"] = str(item_path)
    source = {"format": "csv", "inter": str(inter_path), "items": config.items, "time_column": time_column}
    notes = [] if time_column else ["no timestamp column: each user's events keep file order"]
    raw = RawDataset(interactions=events.build(), items=items, reviews=reviews, source=source, dropped=dropped, notes=notes)
    return raw, inputs
