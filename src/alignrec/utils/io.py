"""Atomic file and directory writes, hashing and small JSON helpers.

Every stage writes its outputs through these functions so that a run killed midway never
leaves a half-written file or folder that a later stage would accept: files are written to a
temporary name in the same folder and renamed into place (``os.replace`` is atomic on POSIX),
and stage folders are built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.errors import InputError


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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    version) and removes the temporary folder (a SIGKILL leaves it behind under a hidden
    ``.<name>.*.tmp`` name that no reader looks at). With ``overwrite`` an existing folder is
    replaced; otherwise it is an :class:`InputError`.

    Replacing is two renames (old -> ``.<name>.*.old``, new -> ``path``): Linux has no portable
    atomic swap of non-empty folders, so a crash exactly between them leaves ``path`` absent
    (never half-written) with the previous version still on disk under the ``.old`` name.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists (remove it or allow overwriting)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        # mkdtemp makes 0o700 folders; give the result the mode `mkdir` would have.
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
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


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing file or a parse error names the file (and line, column)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: byte {error.start}: not UTF-8 text ({error.reason}); expected a JSON file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None


def iter_jsonl(path: str | os.PathLike[str], missing: str = "file not found") -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of a JSON Lines file.

    A missing file raises InputError ``"{path}: {missing}"``; a line that is not JSON names the
    file, line and column. Checking the shape of each value is the caller's job.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing}")
    try:
        handle = open(path, encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(f"{path}: line {number}, column {error.colno}: invalid JSON ({error.msg})") from None
        except UnicodeDecodeError as error:
            raise InputError(f"{path}: not UTF-8 text ({error.reason}); expected JSON Lines") from None
