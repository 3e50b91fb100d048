"""Helpers shared by the source readers: clear errors, text cleaning, list-like fields."""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path
from typing import Any, NoReturn

from alignrec.data.dataset import DatasetFormatError

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def fail(path: str | Path, where: str, expected: str, got: Any = None) -> NoReturn:
    """Raise a DatasetFormatError naming the file, the line/record and what was expected."""
    shown = "" if got is None else f", got {str(got)[:80]!r}"
    raise DatasetFormatError(f"{path}: {where}: expected {expected}{shown}")


def require_file(path: str | Path | None, option: str, what: str) -> Path:
    if not path:
        raise DatasetFormatError(f"missing {option}: {what}")
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found ({option}: {what})")
    return path


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
            except (ValueError, SyntaxError):
                return [stripped]
            return list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
        return [stripped]
    return [value]


def categories_of(value: Any) -> list[str]:
    """Flatten category fields (a list, a list of paths, or a comma/pipe separated string)."""
    out: list[str] = []

    def add(entry: Any) -> None:
        if isinstance(entry, (list, tuple)):
            for sub in entry:
                add(sub)
        elif entry is not None:
            for part in re.split(r"[,|]", str(entry)) if isinstance(entry, str) and "[" not in entry else [entry]:
                text = clean_text(part)
                if text and text not in out:
                    out.append(text)

    add(parse_listish(value) if isinstance(value, str) else value)
    return out
