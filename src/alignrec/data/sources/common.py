"""Helpers shared by the source readers: clear errors, text cleaning, list-like fields, opening
plain or gzip-compressed text files."""

from __future__ import annotations

import ast
import gzip
import html
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from alignrec.data.dataset import DatasetFormatError

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
# A single string holding several categories: "a|b|c" or "a,b,c" (LC-Rec joins with a bare
# comma). A comma followed by a space is part of a name ("Arts, Crafts & Sewing").
_CATEGORY_SEPARATOR = re.compile(r"\||,(?!\s)")
GZIP_MAGIC = b"\x1f\x8b"


_NOTHING = object()


def fail(path: str | Path, where: str, expected: str, got: Any = _NOTHING) -> NoReturn:
    """Raise a DatasetFormatError naming the file, the line/record and what was expected
    (and what was found, when given: ``got=None`` shows a missing field as ``None``)."""
    shown = "" if got is _NOTHING else f", got {_shorten(got)}"
    raise DatasetFormatError(f"{path}: {where}: expected {expected}{shown}")


def _shorten(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require_file(path: str | Path | None, option: str, what: str) -> Path:
    """``path`` as a Path if it names an existing file, else an error naming the option."""
    if not path:
        raise DatasetFormatError(f"missing {option}: {what}")
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found ({option}: {what})")
    return path


def iter_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) of a UTF-8 text file, gzip-compressed or not.

    Compression is detected from the first bytes, not the name. A broken or truncated gzip
    stream is a :class:`DatasetFormatError` naming the file and the last line read.
    """
    try:
        with open(path, "rb") as probe:
            compressed = probe.read(2) == GZIP_MAGIC
    except OSError as error:
        raise DatasetFormatError(f"{path}: cannot read ({error.strerror})") from None
    line_number = 0
    try:
        if compressed:
            handle = gzip.open(path, "rt", encoding="utf-8", errors="replace")
        else:
            handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        with handle:
            for line_number, line in enumerate(handle, start=1):  # noqa: B007 - used in the error
                yield line_number, line
    except (OSError, EOFError, zlib.error) as error:
        where = f"after line {line_number}" if line_number else "at the start"
        kind = "gzip" if compressed or path.suffix == ".gz" else "text"
        raise DatasetFormatError(f"{path}: not a readable {kind} file ({where}: {error})") from None


def clean_text(value: Any) -> str:
    """HTML-unescape, strip tags and collapse whitespace; lists are joined with spaces."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(clean_text(v) for v in value)
    text = html.unescape(str(value))
    text = _TAG.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def parse_listish(value: Any) -> list[Any]:
    """A field that may hold a list, a Python/JSON list literal as a string, or a scalar."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                parsed = ast.literal_eval(stripped)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return [stripped]
            return list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
        return [stripped]
    return [value]


def categories_of(value: Any) -> list[str]:
    """Flatten a category field into unique cleaned names, first occurrence first.

    Accepts a list (Amazon 2018 ``category``), a list of category paths (Amazon 2014
    ``categories``), a list literal stored as a string, or one string of names joined by
    ``|`` or a bare ``,`` (list elements are never split).
    """
    out: list[str] = []

    def add_name(name: Any) -> None:
        text = clean_text(name)
        if text and text not in out:
            out.append(text)

    def add(entry: Any) -> None:
        if isinstance(entry, (list, tuple)):
            for sub in entry:
                if isinstance(sub, (list, tuple)):
                    add(sub)
                else:
                    add_name(sub)
        elif entry is not None:
            add_name(entry)

    if isinstance(value, str):
        parsed = parse_listish(value)
        if len(parsed) == 1 and parsed[0] == value.strip():  # a plain string, not a list literal
            parsed = _CATEGORY_SEPARATOR.split(value)
        add(parsed)
    else:
        add(value)
    return out
