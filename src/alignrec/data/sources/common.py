"""Helpers shared by the source readers: clear errors, checked ids and timestamps, text cleaning,
list-like fields, opening plain or gzip-compressed UTF-8 text files."""

from __future__ import annotations

import ast
import contextlib
import csv
import gzip
import html
import math
import re
import sys
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, NoReturn

from alignrec.data.dataset import DatasetFormatError
from alignrec.utils.io import not_utf8_error

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
# A single string holding several categories: "a|b|c" or "a,b,c" (LC-Rec joins with a bare
# comma). A comma followed by a space is part of a name ("Arts, Crafts & Sewing").
_CATEGORY_SEPARATOR = re.compile(r"\||,(?!\s)")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|nan|inf|infinity)", re.ASCII | re.IGNORECASE)
GZIP_MAGIC = b"\x1f\x8b"
# Longest id accepted. Real ids are short (ASINs 10 characters, user hashes ~30); a longer
# field is a broken file (a whole record in one column), and numeric ids of more than 4300
# digits are beyond what int() converts.
MAX_ID_LENGTH = 1000
# Floats hold every integer of smaller magnitude exactly; beyond it neighbours share a float
# (2**53 + 1 reads as 2**53), so two ids read from a float column could become one.
FLOAT_EXACT_INTEGERS = 2**53
# Text files are read as UTF-8; "utf-8-sig" also accepts (and drops) a byte-order mark at the start.
ENCODING = "utf-8-sig"


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


def check_id(text: str, path: str | Path, where: str, what: str) -> str:
    """``text`` if it is an acceptable id (non-empty, at most MAX_ID_LENGTH characters, valid
    Unicode), else an error."""
    if not text:
        fail(path, where, f"a non-empty {what}", text)
    if len(text) > MAX_ID_LENGTH:
        fail(path, where, f"a {what} of at most {MAX_ID_LENGTH} characters", f"{len(text)} characters: {text[:40]}...")
    return check_unicode(text, path, where)


def check_unicode(text: str, path: str | Path, where: str) -> str:
    """``text`` if it can be written as UTF-8. JSON (and Python literals) accept an escape such
    as ``"\\ud800"`` that is only half of a surrogate pair: such a string has no UTF-8 form, and
    pyarrow would fail with a traceback when the data set is written."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise DatasetFormatError(
                f"{path}: {where}: expected Unicode text, got a lone surrogate {text[error.start]!r} at character "
                f"{error.start + 1} (an escape \\ud800-\\udfff must be one half of a pair)"
            ) from None
    return text


def check_text(value: Any, path: str | Path, where: str) -> Any:
    """``value``, a text field as read, unchanged if it is text: missing (None), a string, an
    integer, or a (nested) list of those, its strings checked with :func:`check_unicode`.
    Anything else is an error: ``str()`` would turn NaN into a title "nan" and ``{"en": "x"}``
    into "{'en': 'x'}" without a word."""
    if isinstance(value, str):
        check_unicode(value, path, where)
    elif isinstance(value, (list, tuple)):
        for entry in value:
            check_text(entry, path, where)
    elif value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        fail(path, where, f"text (a string or a list of strings), not {type(value).__name__}", value)
    return value


def field_text(record: Mapping[str, Any], name: str, path: str | Path, where: str) -> Any:
    """``record.get(name)`` checked with :func:`check_text`; an error names ``where, field name``."""
    return check_text(record.get(name), path, f"{where}, field {name}")


def integral_float_text(value: float) -> str | None:
    """``"12"`` for the float 12.0; None for a float that is not an integer (1.7, NaN, inf) or is
    at least :data:`FLOAT_EXACT_INTEGERS` in magnitude, where distinct ids may have been rounded
    to the same float."""
    return str(int(value)) if value.is_integer() and abs(value) < FLOAT_EXACT_INTEGERS else None


def plain_number(text: str) -> float | None:
    """``text`` as a float if it is a plain decimal number (``12``, ``-1.5``, ``1e9``; also
    ``nan``/``inf``, for :func:`finite_timestamp` to refuse by name), else None. ``float()``
    alone also reads ``1_0`` as 10 and other scripts' digits (``\u0663``, Arabic-Indic 3) as
    numbers, which a data file never means."""
    text = text.strip()
    return float(text) if _PLAIN_NUMBER.fullmatch(text) else None


def finite_timestamp(value: float, raw: Any, path: str | Path, where: str, expected: str) -> float:
    """``value`` if it is finite; NaN and infinities (also ``1e400``, which overflows) are errors:
    they cannot be ordered, and one of them would put a user's events in a wrong order."""
    if not math.isfinite(value):
        fail(path, where, f"{expected}, a finite number", raw)
    return value


def check_unique_columns(path: str | Path, where: str, names: list[str]) -> None:
    """An error when a column name appears twice in a header or schema: a reader would silently
    use one of the two columns (``csv.DictReader`` and pyarrow the last, RecBole the first)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DatasetFormatError(
                f"{path}: {where}: column {_shorten(name)} appears more than once; expected each column name once"
            )
        seen.add(name)


def check_row_width(path: str | Path, line: int, row: dict[Any, Any], width: int) -> None:
    """An error unless a ``csv.DictReader`` row has as many fields as the header (``width``): the
    reader puts extra fields under the key None and fills missing ones with None, so a shifted or
    cut line would otherwise be read with fields silently dropped or empty."""
    if None in row or None in row.values():
        count = width + len(row[None]) if None in row else sum(value is not None for value in row.values())
        fail(path, f"line {line}", f"{width} fields like the header", f"{count} fields")


@contextlib.contextmanager
def utf8_errors(path: Path, expected: str) -> Iterator[None]:
    """Turn a UnicodeDecodeError raised while reading ``path`` into an error naming its line."""
    try:
        yield
    except UnicodeDecodeError:
        raise not_utf8_error(path, expected, DatasetFormatError) from None


def open_text(path: Path, newline: str | None = None) -> IO[str]:
    """``path`` opened as strict UTF-8 text (a byte-order mark is dropped); read it under :func:`utf8_errors`."""
    try:
        return open(path, encoding=ENCODING, newline=newline)  # noqa: SIM115 - the caller closes it
    except OSError as error:
        raise DatasetFormatError(f"{path}: cannot read ({error.strerror})") from None


def allow_long_csv_fields() -> None:
    """Let the csv module read fields of any length (its default limit is 128 KiB)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def iter_text_lines(path: Path, expected: str = "a text file") -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) of a UTF-8 text file, gzip-compressed or not.

    Compression is detected from the first bytes, not the name. A broken or truncated gzip
    stream, or bytes that are not UTF-8, is a :class:`DatasetFormatError` naming the file and
    the line; a byte-order mark at the start is dropped.
    """
    try:
        with open(path, "rb") as probe:
            compressed = probe.read(2) == GZIP_MAGIC
    except OSError as error:
        raise DatasetFormatError(f"{path}: cannot read ({error.strerror})") from None
    line_number = 0
    try:
        if compressed:
            handle = gzip.open(path, "rt", encoding=ENCODING)
        else:
            handle = open(path, encoding=ENCODING)  # noqa: SIM115 - closed below
        with handle, utf8_errors(path, expected):
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
