"""Shared helpers for benchmarks: measure a command, record the context, write the results.

Every benchmark writes ``benchmarks/results/<name>.json`` (figures + the exact command, machine,
date, git commit, load average at start and end, whether the shared bench lock was held) and a
``<name>.md`` table beside it, both atomically. Typical use::

    from benchmarks.common import BenchmarkRun, run_measured

    run = BenchmarkRun("prepare")                       # records command, date, loadavg, lock
    m = run_measured([".venv/bin/alignrec", "prepare", ...])   # wall time + peak RSS of the child
    run.add_row({"dataset": "games", "wall_s": m.wall_s, "peak_rss_mb": m.peak_rss_mb})
    json_path, md_path = run.finish(notes=["..."])     # loadavg at end; writes json + md

Run benchmarks from the repository root under the shared lock, so timed runs never overlap::

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/<name>.py

The helpers do not take the lock themselves (that would deadlock under the ``flock`` wrapper);
they only *check* whether someone holds it and record the answer as ``bench_lock_held``.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
BENCH_LOCK = Path("/tmp/alignrec-bench.lock")

# `python benchmarks/<name>.py` puts benchmarks/ (not the root) on sys.path; make `alignrec`
# importable from a source checkout even when it is not installed.
if str(REPO_ROOT / "src") not in sys.path:
    sys.path.append(str(REPO_ROOT / "src"))

from alignrec.config import git_commit, machine_info  # noqa: E402
from alignrec.errors import InputError  # noqa: E402
from alignrec.utils.io import atomic_write_json, atomic_write_text, read_json  # noqa: E402
from alignrec.utils.tables import markdown_table  # noqa: E402,F401 (re-exported for benchmarks)


def bench_lock_held(path: Path = BENCH_LOCK) -> bool:
    """True when some process holds the shared bench lock (normally our own ``flock`` wrapper).

    We try a non-blocking exclusive lock on a fresh descriptor: failure means it is held.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def script_error(script: str, message: str) -> SystemExit:
    """The exit of a results script for bad input: ``<script>: <file>: <what is wrong>``, no traceback."""
    return SystemExit(f"{script}: {message}")


def read_input_json(path: Path, what: str, script: str) -> dict[str, Any]:
    """A JSON file a results script reads (a run's metrics, another benchmark's results); a missing
    or malformed one is a :func:`script_error` naming it and ``what`` it should be."""
    if not path.is_file():
        raise script_error(script, f"{path}: missing; expected {what}")
    try:
        return read_json(path)
    except InputError as error:
        raise script_error(script, f"{error} (expected {what})") from None


def stage_folder(recorded: str, summary: Path, script: str) -> Path:
    """A stage folder a sweep's cell summary names, as recorded: relative to where the sweep ran, which is
    the current directory or the repository root."""
    path = Path(recorded)
    for candidate in (path, REPO_ROOT / path):
        if candidate.is_dir():
            return candidate
    raise script_error(script, f"{summary}: stage folder {recorded} not found (was the sweep moved, or run on "
                               "another machine?)")


SEED_STAGES = ("behaviour", "tokenizer", "tasks", "finetune")  # the stages whose seeds make a replicate of a sweep


def stage_seeds(stages: dict[str, str], summary: Path, script: str) -> dict[str, Any]:
    """The seed of each of SEED_STAGES a sweep's cell summary names (stage -> seed, from its run record)."""
    return {name: read_input_json(stage_folder(stages[name], summary, script) / "config.json",
                                  f"the {name} stage's run record", script).get("seed")
            for name in SEED_STAGES if name in stages}


def classic_stages(stages: dict[str, str], summary: Path, script: str) -> dict[str, Path]:
    """The classic models a sweep cell's run trained (its behaviour model and baselines): model name -> stage
    folder, in the summary's order (a model trained twice, with other settings: its first stage)."""
    found: dict[str, Path] = {}
    for name, stage in stages.items():
        if name == "behaviour" or name.startswith("baseline/"):
            out = stage_folder(stage, summary, script)
            model = read_input_json(out / "config.json", "the classic model's run record", script)["config"]["train"]["model"]
            found.setdefault(model, out)
    return found


def paired_seed_means(first: Any, second: Any) -> dict[str, Any]:
    """Two models' per-user seed means (U,) compared: ``{"difference", "ratio", "ci95"}`` (paired bootstrap
    95% interval over the users)."""
    from alignrec.metrics import paired_bootstrap_interval

    a, b = float(first.mean()), float(second.mean())
    return {"difference": a - b, "ratio": a / b if b else None,
            "ci95": [float(x) for x in paired_bootstrap_interval(first, second)]}


def seed_mean_per_user(ranks: Sequence[Any], metrics: Sequence[str] = ("ndcg@10", "hr@10")) -> dict[str, Any]:
    """Per user, each metric (``name@K``) averaged over the seeds' 0-based test ranks (one (U,) array per seed):
    what a paired comparison of seed means compares."""
    import numpy as np

    from alignrec.metrics import per_user_metrics

    ks = sorted({int(m.partition("@")[2]) for m in metrics})
    scored = [per_user_metrics(r, ks) for r in ranks]
    return {m: np.mean([s[m] for s in scored], axis=0) for m in metrics}


def paired_text(value: dict[str, Any] | None) -> str:
    """A paired difference ``{"difference", "ci95", "ratio"}`` as ``+0.0012 [-0.0030, +0.0050] (1.02x)``; '' for none."""
    if not value:
        return ""
    low, high = value["ci95"]
    ratio = f" ({value['ratio']:.2f}x)" if value.get("ratio") else ""
    return f"{value['difference']:+.4f} [{low:+.4f}, {high:+.4f}]{ratio}"


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages, rounded (how busy the shared machine was)."""
    return [round(value, 2) for value in os.getloadavg()]


@dataclass
class Measured:
    """What :func:`run_measured` observed for one child process."""

    command: list[str]
    returncode: int
    wall_s: float
    peak_rss_mb: float  # the child's own peak resident set size (ru_maxrss from wait4)
    user_s: float
    system_s: float
    stdout: str
    stderr: str

    def check(self) -> Measured:
        """Raise if the command failed (with the tail of its stderr)."""
        if self.returncode != 0:
            raise RuntimeError(f"`{shlex.join(self.command)}` exited {self.returncode}:\n{self.stderr[-2000:]}")
        return self


def run_measured(command: Sequence[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Measured:
    """Run ``command`` in a child process and measure its wall time and peak RSS.

    ``os.wait4`` returns the resource usage of exactly that child, so peak memory is per run
    (``RUSAGE_CHILDREN`` would be the maximum over every child ever waited for). Output goes
    to temporary files rather than pipes so that a chatty child can never block.
    """
    command = [str(part) for part in command]
    full_env = {**os.environ, "ALIGNREC_PROGRESS": "0", **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=full_env, cwd=cwd or REPO_ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it has been reaped
        out.seek(0)
        err.seek(0)
        return Measured(
            command=command,
            returncode=process.returncode,
            wall_s=round(wall, 3),
            peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
            user_s=round(usage.ru_utime, 3),
            system_s=round(usage.ru_stime, 3),
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )


@dataclass
class BenchmarkRun:
    """Context of one benchmark run; collect rows, then :meth:`finish` writes JSON + Markdown.

    ``command`` defaults to how this process was started (``sys.argv``, with the interpreter).
    """

    name: str
    command: str | None = None
    description: str = ""
    results_dir: Path = RESULTS_DIR
    rows: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.command is None:
            self.command = shlex.join([Path(sys.executable).name, *sys.argv])
        self.started = _dt.datetime.now(_dt.timezone.utc)
        self.loadavg_start = loadavg()
        self.lock_held = bench_lock_held()
        if not self.lock_held:
            print(
                f"warning: {BENCH_LOCK} is not held; timings may overlap other benchmarks "
                f"(run under `flock {BENCH_LOCK} ...`)",
                file=sys.stderr,
            )

    def add_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def finish(self, columns: Sequence[str] | None = None, notes: Sequence[str] = (),
               body: str | None = None) -> tuple[Path, Path]:
        """Write ``<name>.json`` and ``<name>.md`` atomically; return their paths.

        ``body``: Markdown shown instead of the table of the rows (for results with several tables).
        """
        finished = _dt.datetime.now(_dt.timezone.utc)
        record = {
            "benchmark": self.name,
            "description": self.description,
            "command": self.command,
            "date": self.started.isoformat(timespec="seconds"),
            "duration_s": round((finished - self.started).total_seconds(), 1),
            "git_commit": git_commit(REPO_ROOT),
            "machine": machine_info(),
            "loadavg_start": self.loadavg_start,
            "loadavg_end": loadavg(),
            "bench_lock_held": self.lock_held,
            "rows": self.rows,
            "notes": list(notes),
            **self.extra,
        }
        machine = record["machine"]
        header = [
            f"# Benchmark: {self.name}",
            "",
            self.description,
            "",
            f"- command: `{self.command}`",
            f"- date: {record['date']} (took {record['duration_s']} s), commit `{record['git_commit']}`",
            f"- machine: {machine.get('processor')}, {machine.get('cpu_count')} CPUs, "
            f"{machine.get('memory_gb')} GB, Python {machine.get('python')}, {machine.get('platform')}",
            f"- load average (1/5/15 min) at start {record['loadavg_start']}, at end {record['loadavg_end']}; "
            f"bench lock held: {self.lock_held}",
            "",
        ]
        body = markdown_table(self.rows, columns) if body is None else body
        tail = ["", "", *[f"- {note}" for note in notes]] if notes else []  # a blank line after the table
        json_path = atomic_write_json(self.results_dir / f"{self.name}.json", record)
        text = "\n".join(header) + "\n" + body.lstrip("\n") + "\n".join(tail) + "\n"  # a blank line before the body
        md_path = atomic_write_text(self.results_dir / f"{self.name}.md", text)
        return json_path, md_path


# ----------------------------------------------------------------------------- per-user ranks kept in git
#
# Run folders (runs/...) do not outlive the machine they were made on, but a results table that
# gains a row in a later session must still compare models user by user (paired intervals) and
# check that they were scored on the same users. So the results scripts keep, beside
# ``<name>.json``, ``per_user/<name>.json``: every row's rank of each test user's item, clipped
# at the top 10 (all the table's metrics are @1, @5 and @10, so they are exact), one character
# per user in split order, and a hash of the (user, test item) list.

PER_USER_DIR = "per_user"
TOP = 10
_MISS = "."  # the item is not in the top 10 (or not retrieved at all)


def encode_ranks(ranks: Any) -> str:
    """0-based ranks (-1 = not retrieved) as one character each: '0'-'9', or '.' from rank 10 on."""
    return "".join(str(int(r)) if 0 <= int(r) < TOP else _MISS for r in ranks)


def decode_ranks(text: str, where: str) -> Any:
    """The inverse of :func:`encode_ranks` (ranks from 10 on come back as -1: a miss for every metric @K <= 10)."""
    import numpy as np

    bad = next((i for i, c in enumerate(text) if not (c.isdigit() or c == _MISS)), None)
    if bad is not None:
        raise InputError(f"{where}: character {bad} is {text[bad]!r}; expected a digit (the rank) or '{_MISS}' "
                         "(not in the top 10)")
    return np.array([int(c) if c != _MISS else -1 for c in text], dtype=np.int64)


def users_sha256(pairs: Sequence[tuple[str, str]]) -> str:
    """A hash of the (user id, test item id) list, in split order: equal hashes = the same users and targets."""
    import hashlib

    digest = hashlib.sha256()
    for user, item in pairs:
        digest.update(f"{user}\t{item}\n".encode())
    return digest.hexdigest()


def per_user_path(results_dir: Path, name: str) -> Path:
    return Path(results_dir) / PER_USER_DIR / f"{name}.json"


def read_per_user(results_dir: Path, name: str, script: str) -> dict[str, Any]:
    """``per_user/<name>.json`` of a results folder, or an empty record when there is none yet."""
    path = per_user_path(results_dir, name)
    return read_input_json(path, f"the per-user ranks kept by benchmarks/{script}.py", script) if path.is_file() else {}


def write_per_user(results_dir: Path, name: str, entries: dict[str, Any], what: str) -> Path:
    """Write ``per_user/<name>.json`` atomically: ``entries`` = what each row keeps (see above)."""
    return atomic_write_json(per_user_path(results_dir, name), {
        "benchmark": name, "what": what,
        "ranks_encoding": f"one character per test user in split order: '0'-'9' = the 0-based rank of the user's "
                          f"test item, '{_MISS}' = not in the top {TOP}",
        "entries": entries})
