"""Running one stage with a content key: skip when done, resume when interrupted.

A stage's key is a hash of its resolved settings and of the keys of the stages it reads, so a
change anywhere upstream re-runs everything downstream and nothing else. After a stage
succeeds the runner writes ``.alignrec-stage.json`` (the key, the settings, the time) into its
folder; a folder whose marker holds the same key is reused as is. A folder without a marker is
an interrupted run, handed to the stage with ``resume=True``; a folder with another key is
replaced.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignrec.utils.io import atomic_write_json, read_json, to_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

MARKER = ".alignrec-stage.json"


def stage_key(stage: str, settings: Any, upstream: list[str]) -> str:
    """Hash of a stage's name, settings (JSON) and the keys of the stages it reads."""
    material = to_json({"stage": stage, "settings": settings, "upstream": upstream})
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass
class StageResult:
    name: str
    key: str
    out: Path
    skipped: bool
    seconds: float


def read_marker(out: Path) -> dict[str, Any] | None:
    marker = out / MARKER
    return read_json(marker) if marker.is_file() else None


def run_stage(
    name: str,
    out: Path,
    settings: Any,
    upstream: list[str],
    work: Callable[[Path, bool], None],
    *,
    always: bool = False,
) -> StageResult:
    """Run ``work(out, resume)`` unless ``out`` already holds this stage's result.

    ``always`` stages (pre-cache, which is incremental on its own) run every time.
    """
    key = stage_key(name, settings, upstream)
    marker = read_marker(out)
    if marker is not None and marker.get("key") == key and not always:
        log.info("[%s] up to date, reusing %s", name, out)
        # seconds: what the stage took when it ran (the report shows it beside "reused")
        return StageResult(name, key, out, skipped=True, seconds=float(marker.get("seconds") or 0.0))
    resume = False
    if marker is not None and marker.get("key") != key:
        log.info("[%s] settings or inputs changed, replacing %s", name, out)
        shutil.rmtree(out)
    elif marker is None and out.exists():
        resume = True
        log.info("[%s] resuming the interrupted run in %s", name, out)
    started = time.perf_counter()
    log.info("[%s] running -> %s", name, out)
    work(out, resume)
    seconds = round(time.perf_counter() - started, 2)
    atomic_write_json(
        out / MARKER,
        {"stage": name, "key": key, "upstream": upstream, "seconds": seconds, "settings": json.loads(to_json(settings))},
    )
    log.info("[%s] done in %.1f s", name, seconds)
    return StageResult(name, key, out, skipped=False, seconds=seconds)


def remove_stale(out: Path) -> None:
    """Delete a stage folder (used when a config turns a stage off)."""
    if out.exists():
        shutil.rmtree(out)
