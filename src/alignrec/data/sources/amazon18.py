"""Raw Amazon review dumps, both releases, plus their metadata files.

- 2014 (McAuley et al.): ``reviews_<Category>_5.json.gz`` (or the full ``reviews_<Category>.json.gz``),
  JSON lines; ``meta_<Category>.json.gz`` with one *Python literal* per line, ``categories``
  as a list of category paths and ``description`` as a string.
- 2018 (Ni et al.): ``<Category>_5.json.gz`` (or the full ``<Category>.json.gz``), JSON lines;
  ``meta_<Category>.json.gz`` JSON lines with ``category`` and ``description`` as lists and
  HTML entities/tags in some titles.

Files may be gzip-compressed or plain (detected from their first bytes). Lines are parsed as
JSON, then as a Python literal; anything else is an error naming the file and line, and so
is a key repeated in a JSON line (``json`` would keep the last value). Metadata:
titles are cleaned (HTML entities and tags removed, whitespace collapsed); items without a
title (or, with ``--title-max-words``, with an overlong one) are dropped and counted, and so
are repeated metadata records (the first is kept). Reviews: exact repeats (same user, item
and time) are dropped and counted; the summary and text are kept for the query alignment
task. ``write_dataset`` then drops interactions with items that have no metadata record and
applies the k-core filter (default 5: removing items can break the 5-core of a ``_5`` file).
Files must be UTF-8 (a byte-order mark is fine); ``unixReviewTime`` must be a finite number.
"""

from __future__ import annotations

import ast
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alignrec.data.dataset import DatasetFormatError, InteractionLog, InteractionLogBuilder, ItemRecord, RawDataset
from alignrec.data.sources.common import (
    categories_of,
    check_id,
    clean_text,
    fail,
    field_text,
    finite_timestamp,
    iter_text_lines,
    plain_number,
    require_file,
)
from alignrec.errors import InputError
from alignrec.utils.io import loads_unique_keys

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig

# Looked up in this order in --dir for --category C (5-core files before full dumps).
REVIEW_PATTERNS = (
    "reviews_{c}_5.json.gz", "reviews_{c}_5.json", "{c}_5.json.gz", "{c}_5.json",
    "reviews_{c}.json.gz", "reviews_{c}.json", "{c}.json.gz", "{c}.json",
)
META_PATTERNS = ("meta_{c}.json.gz", "meta_{c}.json")


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) from a JSON-lines or Python-literal-lines file (gz or plain)."""
    for line_number, raw_line in iter_text_lines(path, "JSON lines"):
        line = raw_line.strip()
        if not line:
            continue
        try:
            record = loads_unique_keys(line, path, line_offset=line_number - 1)
        except RecursionError:
            fail(path, f"line {line_number}", "one JSON object per line, nested a few levels (it is nested too deeply to parse)")
        except InputError:  # a repeated key (an InputError is a ValueError: the literal fallback would accept the line)
            raise
        except ValueError:  # JSONDecodeError, or a number of more than 4300 digits
            try:
                record = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                fail(path, f"line {line_number}", "one JSON object (or Python dict literal) per line", line)
        if not isinstance(record, dict):
            fail(path, f"line {line_number}", "an object", record)
        yield line_number, record


def _find(folder: Path, category: str, patterns: tuple[str, ...]) -> Path | None:
    for pattern in patterns:
        candidate = folder / pattern.format(c=category)
        if candidate.is_file():
            return candidate
    return None


def _text_id(value: Any, path: Path, where: str, what: str) -> str:
    if isinstance(value, str) and value.strip():
        return check_id(value.strip(), path, where, what.removeprefix("a non-empty "))
    fail(path, where, what, value)


def read_meta(path: Path, config: PrepareConfig, dropped: Counter[str]) -> dict[str, ItemRecord]:
    """asin -> item text from a 2014 or 2018 metadata file."""
    items: dict[str, ItemRecord] = {}
    seen: set[str] = set()
    dropped["items_without_title"] += 0
    dropped["duplicate_meta_records"] += 0
    if config.title_max_words:
        dropped["items_with_overlong_title"] += 0
    for line_number, record in iter_records(path):
        asin = _text_id(record.get("asin"), path, f"line {line_number}, field asin", "a non-empty product id")
        if asin in seen:
            dropped["duplicate_meta_records"] += 1
            continue
        seen.add(asin)
        where = f"line {line_number}"
        title = clean_text(field_text(record, "title", path, where))
        if not title:
            dropped["items_without_title"] += 1
            continue
        if config.title_max_words and len(title.split()) > config.title_max_words:
            dropped["items_with_overlong_title"] += 1
            continue
        items[asin] = ItemRecord(
            title=title,
            description=clean_text(field_text(record, "description", path, where)),  # 2014: a string; 2018: a list
            brand=clean_text(field_text(record, "brand", path, where)),
            categories=categories_of(field_text(record, "category" if "category" in record else "categories", path, where)),
        )
    return items


def read_reviews(path: Path, dropped: Counter[str]) -> tuple[InteractionLog, list[tuple[str, str, str]]]:
    """(asin, time) events in file order and (user, asin, review text) triples; a review that
    repeats an earlier one exactly (same user, item and time) is dropped with its text and counted."""
    events = InteractionLogBuilder()
    texts: list[tuple[int, str]] = []  # (event number, review text)
    for line_number, record in iter_records(path):
        user = _text_id(record.get("reviewerID"), path, f"line {line_number}, field reviewerID", "a non-empty user id")
        asin = _text_id(record.get("asin"), path, f"line {line_number}, field asin", "a non-empty product id")
        raw_time = record.get("unixReviewTime")
        where = f"line {line_number}, field unixReviewTime"
        when: float | None = None
        if isinstance(raw_time, str):
            when = plain_number(raw_time)
        elif isinstance(raw_time, (int, float)) and not isinstance(raw_time, bool):
            try:
                when = float(raw_time)
            except OverflowError:  # an integer beyond the float range
                when = math.inf
        if when is None:
            fail(path, where, "a Unix timestamp (seconds)", raw_time)
        finite_timestamp(when, raw_time, path, where, "a Unix timestamp (seconds)")
        parts = [clean_text(field_text(record, name, path, f"line {line_number}")) for name in ("summary", "reviewText")]
        text = " ".join(t for t in parts if t)
        if text:
            texts.append((len(events), text))
        events.add(user, asin, when)
    log = events.build()
    repeat = _repeated_events(log)
    dropped["duplicate_reviews"] += int(repeat.sum())
    reviews = [(log.user_ids[log.users[n]], log.item_ids[log.items[n]], text) for n, text in texts if not repeat[n]]
    return (log.select(~repeat) if repeat.any() else log), reviews


def _repeated_events(log: InteractionLog) -> np.ndarray:
    """(N,) true for each event equal (user, item and time) to an earlier one."""
    assert log.timestamps is not None
    number = np.arange(len(log))
    order = np.lexsort((number, log.timestamps, log.items, log.users))  # equal events together, file order within
    same = np.zeros(len(log), dtype=bool)
    if len(log) > 1:
        users, items, times = log.users[order], log.items[order], log.timestamps[order]
        same[1:] = (users[1:] == users[:-1]) & (items[1:] == items[:-1]) & (times[1:] == times[:-1])
    repeat = np.zeros(len(log), dtype=bool)
    repeat[order] = same
    return repeat


def read(config: PrepareConfig) -> tuple[RawDataset, dict[str, str]]:
    if config.dir:
        if not config.category:
            raise DatasetFormatError("--format amazon18 --dir needs --category (e.g. Video_Games)")
        folder = Path(config.dir)
        if not folder.is_dir():
            raise DatasetFormatError(f"{folder}: folder not found (--dir)")
        review_path = _find(folder, config.category, REVIEW_PATTERNS)
        if review_path is None:
            tried = ", ".join(p.format(c=config.category) for p in REVIEW_PATTERNS)
            raise DatasetFormatError(f"{folder}: no reviews file for category {config.category!r} (looked for {tried})")
        meta_path = _find(folder, config.category, META_PATTERNS)
    else:
        if config.category:
            raise DatasetFormatError("--category only selects files in --dir; with --inter, name the files directly")
        review_path = require_file(config.inter, "--inter", "an Amazon reviews file (e.g. reviews_<Category>_5.json.gz)")
        meta_path = require_file(config.items, "--items", "an Amazon metadata file (meta_<Category>.json.gz)") if config.items else None

    dropped: Counter[str] = Counter()
    items = read_meta(meta_path, config, dropped) if meta_path is not None else None
    interactions, reviews = read_reviews(review_path, dropped)

    source = {"format": "amazon18", "inter": str(review_path), "items": str(meta_path) if meta_path else None}
    notes = [] if meta_path else ["no metadata file: items have no text (behaviour only)"]
    inputs = {"reviews": str(review_path)}
    if meta_path:
        inputs["meta"] = str(meta_path)
    raw = RawDataset(interactions=interactions, items=items, reviews=reviews, source=source, dropped=dropped, notes=notes)
    return raw, inputs
