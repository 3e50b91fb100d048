"""Running one stage with a content key: skip when done, resume when interrupted.

A stage's key is a hash of its resolved settings, of the code that runs it (the source files
of its entry modules and of every package module they import, :mod:`alignrec.pipeline.fingerprint`)
and of the keys of the stages it reads, so a change anywhere upstream — settings or code —
re-runs everything downstream and nothing else. After a stage succeeds the runner writes
``.alignrec-stage.json`` (the key, the settings, the code's file hashes, the time) into its
folder; a folder whose marker holds the same key is reused as is. A folder without a marker is
an interrupted run, handed to the stage with ``resume=True`` when it was started with the same
key (the runner notes the key beside the folder, ``.<folder>.alignrec-stage-started.json``, before
the stage starts) and replaced when it was started with another one: a fine-tune killed midway
and rerun with another learning rate or step budget starts again rather than continuing the old
one's checkpoint. A folder with another key is replaced.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignrec.pipeline.fingerprint import changed_files, code_fingerprint
from alignrec.utils.io import atomic_write_json, read_json, to_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

MARKER = ".alignrec-stage.json"


def stage_key(stage: str, settings: Any, upstream: list[str], code: str = "") -> str:
    """Hash of a stage's name, settings (JSON), code digest and the keys of the stages it reads."""
    material = to_json({"stage": stage, "settings": settings, "upstream": upstream, "code": code})
    return hashlib.sha256(material.encode()).hexdigest()


def stage_code(modules: Sequence[str]) -> dict[str, str]:
    """The fingerprint of a stage's code (``{}`` for a stage that names no modules, e.g. in tests)."""
    return code_fingerprint(modules) if modules else {}


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


def started_marker(out: Path) -> Path:
    """Where the runner notes the key of a stage it starts: beside the folder, which the stage itself creates."""
    return out.parent / f".{out.name}.alignrec-stage-started.json"


def run_stage(
    name: str,
    out: Path,
    settings: Any,
    upstream: list[str],
    work: Callable[[Path, bool], None],
    *,
    always: bool = False,
    code: Sequence[str] = (),
) -> StageResult:
    """Run ``work(out, resume)`` unless ``out`` already holds this stage's result.

    ``code``: the stage's entry modules (e.g. ``["alignrec.tokenizer.train"]``); their source and
    that of everything they import from the package is part of the key. ``always`` stages
    (pre-cache, which is incremental on its own) run every time.
    """
    fingerprint = stage_code(code)
    key = stage_key(name, settings, upstream, fingerprint.get("*", ""))
    marker = read_marker(out)
    if marker is not None and marker.get("key") == key and not always:
        log.info("[%s] up to date, reusing %s", name, out)
        # seconds: what the stage took when it ran (the report shows it beside "reused")
        return StageResult(name, key, out, skipped=True, seconds=float(marker.get("seconds") or 0.0))
    resume = False
    if marker is not None and marker.get("key") != key:
        log.info("[%s] %s changed, replacing %s", name, _what_changed(marker, settings, upstream, fingerprint), out)
        shutil.rmtree(out)
    elif marker is None and out.exists():
        started_with = read_json(started_marker(out)) if started_marker(out).is_file() else None
        if started_with is not None and started_with.get("key") != key:
            log.info("[%s] the interrupted run was started with other %s, replacing %s", name,
                     _what_changed(started_with, settings, upstream, fingerprint), out)
            shutil.rmtree(out)
        else:  # started with this key (or by a version that noted no key)
            resume = True
            log.info("[%s] resuming the interrupted run in %s", name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(started_marker(out), {"stage": name, "key": key, "upstream": upstream,
                                            "settings": json.loads(to_json(settings)), "code": fingerprint})
    started = time.perf_counter()
    log.info("[%s] running -> %s", name, out)
    work(out, resume)
    seconds = round(time.perf_counter() - started, 2)
    atomic_write_json(
        out / MARKER,
        {"stage": name, "key": key, "upstream": upstream, "seconds": seconds, "settings": json.loads(to_json(settings)),
         "code": fingerprint},
    )
    started_marker(out).unlink(missing_ok=True)
    log.info("[%s] done in %.1f s", name, seconds)
    return StageResult(name, key, out, skipped=False, seconds=seconds)


def _what_changed(marker: dict[str, Any], settings: Any, upstream: list[str], fingerprint: dict[str, str]) -> str:
    """A few words for the log: which of settings, inputs and code differ from the marker's."""
    reasons = []
    if marker.get("settings") != json.loads(to_json(settings)):
        reasons.append("settings")
    if marker.get("upstream") != upstream:
        reasons.append("inputs")
    if (marker.get("code") or {}).get("*") != fingerprint.get("*"):
        files = changed_files(marker.get("code") or {}, fingerprint)
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        reasons.append(f"code ({shown})" if marker.get("code") else "code (no record in the marker)")
    return " and ".join(reasons) or "the key"


def remove_stale(out: Path) -> None:
    """Delete a stage folder (used when a config turns a stage off)."""
    if out.exists():
        shutil.rmtree(out)
