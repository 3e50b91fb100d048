"""Atomic file and directory writes, hashing and small JSON helpers.

Every stage writes its outputs through these functions so that a run killed midway never
leaves a half-written file or folder that a later stage would accept: files are written to a
temporary name in the same folder and renamed into place (``os.replace`` is atomic on POSIX),
and stage folders are built under a temporary name and renamed when complete.

Temporary names carry their owner: ``.<name>.<pid>-<start>-<host>.<random>.tmp`` (process id,
its start time in clock ticks since boot, host name). A run killed with SIGKILL cannot remove
its temporary, so every write to a target first removes the temporaries of that same target
whose owner is gone (:func:`remove_stale_temporaries`); a live owner's temporary (another run
writing the same target right now, on this machine or another) is never touched.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.errors import InputError

log = logging.getLogger(__name__)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is racy)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    """Mode for a new file at ``path``: the existing file's mode, else 0o666 minus the umask.

    ``mkstemp`` creates 0o600 files; without this every atomically written output would be
    private to its writer, unlike a file written with ``open``.
    """
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- temporaries

_HOST = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname()).strip("-")[:40] or "host"
# .<name>.<pid>-<start>-<host>.<random from tempfile>.<tmp|old>, after the ".<name>." prefix
_OWNED = re.compile(r"(\d+)-(\d+)-([A-Za-z0-9-]+)\.[a-z0-9_]+\.(tmp|old)")
# what tempfile made before owners were recorded: .<name>.<8 random characters>.<tmp|old>
_UNOWNED = re.compile(r"[a-z0-9_]{8}\.(tmp|old)")
_START_TIMES: dict[int, int] = {}


def _process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (/proc/PID/stat field 22); None
    where /proc is not available. With the pid it identifies a process: pids are reused, start
    times of the same pid are not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # field 2, the command, may hold spaces and ')'
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _owner_tag() -> str:
    pid = os.getpid()  # looked up on every call: a forked child is another owner
    if pid not in _START_TIMES:
        _START_TIMES[pid] = _process_start(pid) or 0
    return f"{pid}-{_START_TIMES[pid]}-{_HOST}"


def _owner_alive(pid: int, start: int, host: str) -> bool:
    """Whether the process that made a temporary may still be running (when unsure: yes)."""
    if host != _HOST:
        return True  # another machine's process (a shared file system): no way to tell
    if pid == os.getpid():
        return start == (_START_TIMES.get(pid) or _process_start(pid) or 0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user
        pass
    if start:
        now = _process_start(pid)
        return now is None or now == start
    return True


def process_owner() -> dict[str, Any]:
    """This process as a record another process can test with :func:`owner_alive`."""
    pid = os.getpid()
    _owner_tag()  # caches the start time
    return {"pid": pid, "start": _START_TIMES[pid], "host": _HOST}


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process of a :func:`process_owner` record may still be running (when unsure: yes;
    always yes for another host's process)."""
    try:
        return _owner_alive(int(owner["pid"]), int(owner["start"]), str(owner["host"]))
    except (KeyError, TypeError, ValueError):
        return False  # not a record this module wrote


def temporary_prefix(path: Path) -> str:
    """The name prefix of a temporary of ``path`` owned by this process (for mkstemp/mkdtemp)."""
    return f".{path.name}.{_owner_tag()}."


def remove_stale_temporaries(path: str | os.PathLike[str], kinds: tuple[str, ...] = ("tmp",)) -> list[Path]:
    """Remove the temporaries of ``path`` left by processes that no longer run; return them.

    Only names this module makes for the same target are considered (``.<name>.<owner>.*.tmp``,
    and ``.old`` with ``kinds=("old",)``), and only when the owner recorded in the name is a
    process of this host that has exited (its pid is gone or now belongs to a process started at
    another time). Temporaries of an older alignrec, which carry no owner, are reported in the
    log and left alone: nothing tells whether a run is still writing them.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        rest = entry.name[len(prefix) :]
        owned = _OWNED.fullmatch(rest)
        if owned is None:
            unowned = _UNOWNED.fullmatch(rest)
            if unowned is not None and unowned.group(1) in kinds:
                log.warning("%s: left by an older alignrec run; remove it if no run is writing %s", entry.path, path)
            continue
        pid, start, host, kind = int(owned.group(1)), int(owned.group(2)), owned.group(3), owned.group(4)
        if kind not in kinds or _owner_alive(pid, start, host):
            continue
        stale = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        log.info("removed %s, left by process %d that no longer runs", stale, pid)
        removed.append(stale)
    return removed


def _mkstemp(path: Path) -> tuple[int, str]:
    remove_stale_temporaries(path)
    return tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
    try:
        os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place if the block succeeds.

    For writers that insist on writing a file themselves (pyarrow, safetensors, matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
    os.fchmod(fd, _file_mode(path))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    _fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to ``path`` only when complete.

    A crash inside the block leaves ``path`` as it was (absent or the previous complete
    version) and removes the temporary folder. A SIGKILL leaves it behind under a hidden
    ``.<name>.<owner>.*.tmp`` name that no reader looks at; the next write to ``path`` removes it
    (:func:`remove_stale_temporaries`: only when its owner process has exited, so two runs
    writing at the same time never delete each other's work). With ``overwrite`` an existing
    folder is replaced; otherwise it is an :class:`InputError`.

    Replacing is two renames (old -> ``.<name>.<owner>.*.old``, new -> ``path``): Linux has no
    portable atomic swap of non-empty folders, so a crash exactly between them leaves ``path``
    absent (never half-written) with the previous version still on disk under the ``.old`` name
    (removed by the next write that completes).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists (remove it or allow overwriting)")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp"))
    try:
        # mkdtemp makes 0o700 folders; give the result the mode `mkdir` would have.
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".old"))
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_directory(path.parent)
    # a previous version that a crash between the two renames left behind is obsolete now
    remove_stale_temporaries(path, kinds=("old",))


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def hash_inputs(paths: dict[str, str | os.PathLike[str]]) -> dict[str, dict[str, Any]]:
    """Describe input files (or folders, hashed file by file) for a run's resolved config."""
    described: dict[str, dict[str, Any]] = {}
    for name, raw in paths.items():
        path = Path(raw)
        if path.is_dir():
            digest = hashlib.sha256()
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(str(child.relative_to(path)).encode())
                digest.update(sha256_file(child).encode())
            described[name] = {"path": str(path), "sha256": digest.hexdigest(), "kind": "directory"}
        elif path.is_file():
            described[name] = {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}
        else:
            described[name] = {"path": str(path), "missing": True}
    return described


# ----------------------------------------------------------------------------- reading

def first_invalid_utf8(path: str | os.PathLike[str]) -> tuple[int, int, str] | None:
    """``(line, byte in the line, reason)`` of the first bytes of ``path`` that are not UTF-8
    (both 1-based; gzip files are read decompressed), or None when the whole file decodes.

    Lines are split at ``\\n``: no byte of a UTF-8 multi-byte character can be ``\\n``, so
    checking line by line is exact. Used to turn a decoding error into a message that names
    the line, since a text stream decodes in blocks and cannot tell.
    """
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                shown = " ".join(f"0x{b:02x}" for b in line[error.start : min(error.end, error.start + 4)])
                return number, error.start + 1, f"{error.reason}: {shown}"
    return None


def not_utf8_error(
    path: str | os.PathLike[str], expected: str, error_type: type[InputError] = InputError
) -> InputError:
    """The error for a file that is not UTF-8 text, naming the line and byte where it stops being so."""
    try:
        found = first_invalid_utf8(path)
    except (OSError, EOFError):
        found = None
    where = f"line {found[0]}, byte {found[1]}: " if found else ""
    reason = f" ({found[2]})" if found else ""
    return error_type(f"{path}: {where}not UTF-8 text{reason}; expected {expected} in UTF-8")


# A JSON token for the error-path scanner: a string, a bracket, ':' or a line break.
_JSON_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[{}\[\]:\n]')


class _DuplicateKey(Exception):
    """Raised inside ``json.loads`` by the object hook of ``read_json(unique_keys=True)``."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def _scan_json(text: str) -> tuple[tuple[int, int, int], tuple[int, int, str] | None]:
    """Walk the brackets and keys of (valid or nearly valid) JSON text, for error messages only:
    ``((line, column, depth) where the nesting is deepest, (line, column, key) of the first key
    repeated in one object or None)``. Lines and columns are 1-based."""
    line, line_start = 1, 0
    deepest = (1, 1, 0)
    stack: list[set[str] | None] = []  # one entry per open bracket: an object's keys so far, or None
    duplicate: tuple[int, int, str] | None = None
    previous: re.Match[str] | None = None
    for token in _JSON_TOKEN.finditer(text):
        kind = token.group()
        if kind == "\n":
            line, line_start = line + 1, token.end()
            continue
        if kind in "{[":
            stack.append(set() if kind == "{" else None)
            if len(stack) > deepest[2]:
                deepest = (line, token.start() - line_start + 1, len(stack))
        elif kind in "}]":
            if stack:
                stack.pop()
        elif kind == ":" and previous is not None and previous.group().startswith('"') and stack and stack[-1] is not None:
            try:
                key = json.loads(previous.group())
            except ValueError:
                key = previous.group()[1:-1]
            if key in stack[-1] and duplicate is None:
                duplicate = (line, previous.start() - line_start + 1, key)
            stack[-1].add(key)
        previous = token
    return deepest, duplicate


def _json_error(path: Path, text: str, error: BaseException, line_offset: int = 0) -> InputError:
    """A clear InputError for a failure of ``json.loads(text)`` (``text`` is line ``line_offset + 1`` on)."""

    def at(line: int, column: int) -> str:
        return f"{path}: line {line + line_offset}, column {column}"

    if isinstance(error, json.JSONDecodeError):
        return InputError(f"{at(error.lineno, error.colno)}: invalid JSON ({error.msg})")
    if isinstance(error, RecursionError):
        (line, column, depth), _ = _scan_json(text)
        return InputError(
            f"{at(line, column)}: JSON nested {depth} levels deep; expected fewer levels than the parser's limit "
            f"(about {sys.getrecursionlimit()})"
        )
    if isinstance(error, _DuplicateKey):
        _, duplicate = _scan_json(text)
        if duplicate is None:
            return InputError(f"{path}: a key appears twice in one object; expected every key once")
        line, column, key = duplicate
        return InputError(
            f"{at(line, column)}: key {key!r} appears a second time in the same object; expected every key "
            "once (a JSON reader keeps only the last value, which would silently lose the others)"
        )
    # int() refuses integers of more than sys.get_int_max_str_digits() digits
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
    long_number = re.search(rf"(?<![\w.\"])-?\d{{{limit + 1},}}", text)
    if long_number is not None:
        line = text.count("\n", 0, long_number.start()) + 1
        column = long_number.start() - (text.rfind("\n", 0, long_number.start()) + 1) + 1
        digits = len(long_number.group().lstrip("-"))
        return InputError(f"{at(line, column)}: a number of {digits} digits; expected at most {limit} digits")
    return InputError(f"{path}: invalid JSON ({error})")


def loads_unique_keys(text: str, path: str | os.PathLike[str], line_offset: int = 0) -> Any:
    """``json.loads(text)`` where a key repeated within one object is an InputError naming
    ``path``, the line (``text`` is line ``line_offset + 1`` on), the column and the key, as in
    ``read_json(unique_keys=True)``; other parse errors propagate as ``json.loads`` raises them."""
    try:
        return json.loads(text, object_pairs_hook=_unique_object)
    except _DuplicateKey as error:
        raise _json_error(Path(path), text, error, line_offset) from None


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as numpy arrays; an unreadable file is an InputError naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise InputError(f"{path}: not a readable safetensors file ({error})") from None


def read_json(path: str | os.PathLike[str], *, unique_keys: bool = False) -> Any:
    """Read a JSON file; a missing file or a parse error names the file (and line, column).

    A UTF-8 byte-order mark is accepted. With ``unique_keys`` a key repeated within one object
    is an error (``json`` would keep the last value and drop the others without a word).
    Nesting too deep for the parser and numbers too long for ``int`` are errors naming the
    line, not tracebacks.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise not_utf8_error(path, "a JSON file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_object if unique_keys else None)
    except (ValueError, RecursionError, _DuplicateKey) as error:
        raise _json_error(path, text, error) from None


def iter_jsonl(path: str | os.PathLike[str], missing: str = "file not found") -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of a JSON Lines file.

    A missing file raises InputError ``"{path}: {missing}"``; a line that is not JSON (or not
    UTF-8, or nested too deeply to parse) names the file, line and column; a UTF-8 byte-order
    mark is accepted. Checking the shape of each value is the caller's job.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing}")
    try:
        handle = open(path, encoding="utf-8-sig")
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except (ValueError, RecursionError) as error:
                    raise _json_error(path, line, error, line_offset=number - 1) from None
                yield number, value
        except UnicodeDecodeError:
            raise not_utf8_error(path, "JSON Lines") from None
