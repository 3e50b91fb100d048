"""Logging set-up and progress bars shared by every stage."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

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


def progress_draws() -> bool:
    """True when a progress bar may redraw itself: progress is on and stderr is a terminal. A
    bar we do not draw ourselves (the Hugging Face Trainer's) is off otherwise, and its caller
    logs a line every :data:`LOG_STEP` of the run instead (see :func:`progress_step`)."""
    return progress_enabled() and sys.stderr.isatty()


def progress_step(total: int) -> int:
    """Every how many of ``total`` updates a log file gets a progress line (every few percent)."""
    return max(1, int(total * LOG_STEP))


class _LineWriter:
    """tqdm's output for a log file: each status it draws becomes one plain line (no carriage
    returns, no redraws); :func:`_bar_options` makes it draw every few percent."""

    def __init__(self, stream: object) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")  # type: ignore[attr-defined]

    def flush(self) -> None:
        self.stream.flush()  # type: ignore[attr-defined]


LOG_STEP = 0.05  # a bar writes to a log file every 5% of its total (or every LOG_SECONDS without a total)
LOG_SECONDS = 60.0


def _bar_options(total: int | None) -> dict[str, object]:
    """tqdm settings: a redrawn bar on a terminal; in a log file or CI, a line every few percent."""
    stream = sys.stderr
    if stream.isatty():
        return {"dynamic_ncols": True}
    if total:
        return {"file": _LineWriter(stream), "miniters": progress_step(total), "mininterval": 0.0,
                "maxinterval": float("inf"), "ncols": 100}
    return {"file": _LineWriter(stream), "mininterval": LOG_SECONDS, "ncols": 100}


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """A tqdm progress bar on stderr, honouring ALIGNREC_PROGRESS (a line every few percent when
    stderr is not a terminal)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(), **_bar_options(total)))


class _LogFileBar(tqdm):
    """A bar drawn into a log file: ``set_postfix`` updates the text of the next line instead of
    writing a line of its own (tqdm's default), so the bar still writes every few percent."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def progress_bar(total: int | None, desc: str, unit: str = "it") -> tqdm:
    """A manually advanced progress bar (``bar.update(n)``, ``bar.set_postfix(...)``), honouring
    ALIGNREC_PROGRESS (a line every few percent when stderr is not a terminal)."""
    bar_class = tqdm if sys.stderr.isatty() else _LogFileBar
    return bar_class(total=total, desc=desc, unit=unit, disable=not progress_enabled(), **_bar_options(total))
