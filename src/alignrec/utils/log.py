"""Logging set-up and progress bars shared by every stage."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_CONFIGURED = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (not the stream of the first call),
    so that a caller that swaps stderr (pytest's capture, a notebook) never gets a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - the logging API's own attribute
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(level: str | int = "INFO") -> None:
    """Configure the ``alignrec`` logger once (CLI entry point calls this)."""
    global _CONFIGURED
    if _CONFIGURED:
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("alignrec")
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("alignrec") else f"alignrec.{name}")


def progress_enabled() -> bool:
    """Progress bars are on unless ALIGNREC_PROGRESS=0 (tests and CI logs turn them off)."""
    return os.environ.get("ALIGNREC_PROGRESS", "1") not in {"0", "false", "no"}


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """A tqdm progress bar on stderr, honouring ALIGNREC_PROGRESS."""
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(), dynamic_ncols=True))


def progress_bar(total: int | None, desc: str, unit: str = "it") -> tqdm:
    """A manually advanced progress bar (``bar.update(n)``), honouring ALIGNREC_PROGRESS."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress_enabled(), dynamic_ncols=True)
