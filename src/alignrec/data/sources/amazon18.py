"""Raw Amazon review dumps (2014 ``reviews_<Category>_5.json.gz`` or 2018 ``<Category>_5.json.gz``
/ ``<Category>.json.gz``) plus ``meta_<Category>.json.gz``.

Review lines are JSON (2018) or Python literals (2014 metadata); both are accepted and any
other line is an error naming the file and line. Items without a usable title are dropped
(counted), titles are cleaned (HTML entities, tags, whitespace), exact duplicate reviews are
removed, and ``write_dataset`` applies the k-core filter (default 5). Review text (summary +
body) is kept for the query alignment task.
"""

from __future__ import annotations

import ast
import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from alignrec.data.dataset import DatasetFormatError, ItemRecord, RawDataset
from alignrec.data.sources.common import categories_of, clean_text, fail, require_file

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig

REVIEW_PATTERNS = ("reviews_{c}_5.json.gz", "{c}_5.json.gz", "reviews_{c}_5.json", "{c}_5.json", "reviews_{c}.json.gz", "{c}.json.gz", "{c}.json")
META_PATTERNS = ("meta_{c}.json.gz", "meta_{c}.json")


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) from a JSON-lines or Python-literal-lines file (gz or plain)."""
    try:
        with _open(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    try:
                        record = ast.literal_eval(line)
                    except (ValueError, SyntaxError):
                        fail(path, f"line {line_number}", "one JSON object (or Python dict literal) per line", line)
                if not isinstance(record, dict):
                    fail(path, f"line {line_number}", "an object", record)
                yield line_number, record
    except (OSError, EOFError) as error:
        if isinstance(error, gzip.BadGzipFile) or "gzip" in str(error).lower() or isinstance(error, EOFError):
            raise DatasetFormatError(f"{path}: not a readable gzip file ({error})") from None
        raise


def _find(folder: Path, category: str, patterns: tuple[str, ...], what: str) -> Path:
    for pattern in patterns:
        candidate = folder / pattern.format(c=category)
        if candidate.is_file():
            return candidate
    tried = ", ".join(p.format(c=category) for p in patterns)
    raise DatasetFormatError(f"{folder}: no {what} file for category {category!r} (looked for {tried})")


def read(config: PrepareConfig) -> tuple[RawDataset, dict[str, str]]:
    if config.dir:
        if not config.category:
            raise DatasetFormatError("--format amazon18 --dir needs --category (e.g. Video_Games)")
        folder = Path(config.dir)
        review_path = _find(folder, config.category, REVIEW_PATTERNS, "reviews")
        try:
            meta_path: Path | None = _find(folder, config.category, META_PATTERNS, "metadata")
        except DatasetFormatError:
            meta_path = None
    else:
        review_path = require_file(config.inter, "--inter", "an Amazon reviews file (reviews_<Category>_5.json.gz)")
        meta_path = require_file(config.items, "--items", "an Amazon metadata file (meta_<Category>.json.gz)") if config.items else None

    dropped: Counter[str] = Counter()
    items: dict[str, ItemRecord] | None = None
    if meta_path is not None:
        items = {}
        for line_number, record in iter_records(meta_path):
            asin = record.get("asin")
            if not isinstance(asin, str) or not asin:
                fail(meta_path, f"line {line_number}, field asin", "a non-empty product id", asin)
            title = clean_text(record.get("title"))
            if not title:
                dropped["items_without_title"] += 1
                continue
            if config.title_max_words and len(title.split()) > config.title_max_words:
                dropped["items_with_overlong_title"] += 1
                continue
            categories = categories_of(record.get("category", record.get("categories")))
            items[asin] = ItemRecord(
                title=title,
                description=clean_text(record.get("description")),
                brand=clean_text(record.get("brand")),
                categories=categories,
            )

    sequences: dict[str, list[tuple[str, float | None]]] = {}
    reviews: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str, float]] = set()
    for line_number, record in iter_records(review_path):
        user, asin, when = record.get("reviewerID"), record.get("asin"), record.get("unixReviewTime")
        if not isinstance(user, str) or not user:
            fail(review_path, f"line {line_number}, field reviewerID", "a non-empty user id", user)
        if not isinstance(asin, str) or not asin:
            fail(review_path, f"line {line_number}, field asin", "a non-empty product id", asin)
        if isinstance(when, bool) or not isinstance(when, (int, float)):
            fail(review_path, f"line {line_number}, field unixReviewTime", "a Unix timestamp (integer)", when)
        key = (user, asin, float(when))
        if key in seen:
            dropped["duplicate_reviews"] += 1
            continue
        seen.add(key)
        sequences.setdefault(user, []).append((asin, float(when)))
        text = " ".join(t for t in (clean_text(record.get("summary")), clean_text(record.get("reviewText"))) if t)
        if text:
            reviews.append((user, asin, text))

    source = {"format": "amazon18", "reviews": str(review_path), "meta": str(meta_path) if meta_path else None}
    notes = [] if meta_path else ["no metadata file: items have no text (behaviour only)"]
    inputs = {"reviews": str(review_path)}
    if meta_path:
        inputs["meta"] = str(meta_path)
    return RawDataset(sequences=sequences, items=items, reviews=reviews, source=source, dropped=dropped, notes=notes), inputs
