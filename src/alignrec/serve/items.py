"""Items registered after fine-tuning (``POST /v1/items``) and how they get their codes.

The paper's claim is that new items need no retraining: the tokenizer assigns codes to a new
item from its text (and behaviour embedding, if any), the code tokens already exist in the
LLM's vocabulary, and adding the new code sequence to the trie makes the item reachable by
beam search. This module keeps those items in a registry file beside the cache, JSON Lines::

    {"format": "alignrec-items-registry", "version": 2, "codebook_sizes": [...]}
    {"item_id", "title", "description", "brand", "categories", "codes", "created"}
    ...

Writes take an exclusive file lock (several server processes may register items), read what
other processes appended since, check the new id and codes against the fine-tuned catalogue and
every registered item, and append one line — never rewrite the file, so a registration costs
the same at any registry size. Every record is checked when read (ids new, codes in range and
unique), so a damaged registry is an error naming it at start-up. ``alignrec precache`` reads the registry and extends the item
codes (item index = catalogue size + position in the registry), so new items enter users'
lists from the next pre-cache run.

Every state of the catalogue has a version (:func:`catalogue_version`). Cached lists record
the version they were computed against; the server publishes the current one in the cache
metadata when it registers an item, so it can flag lists computed before, and
``alignrec precache`` recomputes them.

Codes come from a :class:`CodeAssigner`: by default the tokenizer's cold-start path
(:func:`load_code_assigner`), in tests any object with the same ``assign`` method.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from alignrec.errors import AlignrecError, InputError
from alignrec.tokenizer.codes import ItemCodes
from alignrec.utils.io import atomic_write_bytes
from alignrec.utils.log import get_logger

log = get_logger(__name__)

REGISTRY_FORMAT = "alignrec-items-registry"
REGISTRY_VERSION = 2  # JSON Lines; version 1 (one JSON document) is still read, and migrated by the next registration


class RegistrationError(AlignrecError):
    """A new item cannot be registered; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass
class NewItem:
    """A catalogue item that the fine-tuned model has never seen."""

    item_id: str
    title: str
    description: str = ""
    brand: str = ""
    categories: list[str] = field(default_factory=list)
    embedding: list[float] | None = None  # behaviour embedding, when the caller has one

    def text(self) -> str:
        """Title + description: the same text the tokenizer aligned the known items with."""
        return " ".join(part for part in (self.title, self.description) if part).strip()


@dataclass
class RegisteredItem:
    """A new item with its codes, as stored in the registry."""

    item_id: str
    title: str
    description: str
    brand: str
    categories: list[str]
    codes: list[int]
    created: float


def catalogue_version(codes: ItemCodes) -> str:
    """Identifies a catalogue — item ids and codes in item index order — as ``"<items>-<digest>"``.

    Registering an item changes it; cache entries carry the version they were computed
    against, so a list that predates an item can be told from one that does not.
    """
    digest = hashlib.blake2b(digest_size=8)
    digest.update(json.dumps(list(codes.codebook_sizes)).encode())
    digest.update("\x1f".join(codes.item_ids or []).encode("utf-8"))
    digest.update(b"\x00")
    digest.update(np.ascontiguousarray(codes.codes, dtype="<i8").tobytes())
    return f"{codes.num_items}-{digest.hexdigest()}"


class CodeAssigner(Protocol):
    """Assigns codes to new items: ``(N, L)`` ints, unique among themselves and not used by any
    item of ``existing`` (the fine-tuned catalogue plus the items registered so far)."""

    def assign(self, items: Sequence[NewItem], existing: ItemCodes) -> np.ndarray: ...


def load_code_assigner(tokenizer_dir: str | os.PathLike[str], load_text_embedder: bool = True) -> CodeAssigner:
    """The tokenizer stage's cold-start assigner (:class:`alignrec.tokenizer.coldstart.ColdStartAssigner`)
    for the trained tokenizer in ``tokenizer_dir`` (``RUN/tokenizer``).

    With ``load_text_embedder`` the LLM text embedder of a tokenizer trained with text (its
    input embeddings: seconds to load) is loaded now rather than by the first text-only item.
    If it cannot be loaded, items that come with a behaviour embedding can still be registered,
    so that is a warning here (a text-only item then gets the error).
    """
    try:
        from alignrec.tokenizer.coldstart import ColdStartAssigner
    except ImportError:
        raise RegistrationError(
            "cold-start code assignment is not available in this installation (alignrec.tokenizer.coldstart is missing)",
            status=501,
        ) from None
    try:
        assigner = ColdStartAssigner.load(tokenizer_dir)
    except InputError as error:
        raise RegistrationError(f"cannot load the tokenizer's cold start from {tokenizer_dir}: {error}", status=501) from None
    if load_text_embedder and assigner.backbone:
        from alignrec.tokenizer.text import load_text_embedder as load_embedder

        started = time.perf_counter()
        try:
            embedder = load_embedder(assigner.backbone, assigner.max_text_tokens)
        except (AlignrecError, OSError) as error:
            log.warning("cold start: cannot load the text embedder %s (%s); text-only items will fail", assigner.backbone, error)
        else:
            assigner = ColdStartAssigner.load(tokenizer_dir, embedder=embedder)
            log.info("cold start: text embedder %s loaded in %.1f s", assigner.backbone, time.perf_counter() - started)
    return TokenizerColdStart(assigner)


class TokenizerColdStart:
    """Adapter from the tokenizer's ``ColdStartAssigner`` to :class:`CodeAssigner`.

    The assigner knows the tokenizer's items and what it handed out itself; items registered
    earlier (by this or another server process, or before a restart) are reserved from
    ``existing`` first, so their codes are never given out again. ``existing`` only grows at
    its end (the catalogue, then the registry in order), so rows reserved by an earlier call
    are not scanned again.
    """

    def __init__(self, assigner: Any):
        self.assigner = assigner
        self._reserved_rows = 0  # rows of `existing` already reserved by earlier calls

    def assign(self, items: Sequence[NewItem], existing: ItemCodes) -> np.ndarray:
        taken = self.assigner.index.taken
        start = self._reserved_rows if self._reserved_rows <= existing.num_items else 0
        for row in existing.codes[start:].tolist():
            if tuple(row) not in taken:
                self.assigner.index.add(tuple(row))
        self._reserved_rows = existing.num_items
        embeddings = None
        if all(item.embedding is not None for item in items):
            with np.errstate(over="ignore"):  # checked right below
                embeddings = np.asarray([item.embedding for item in items], dtype=np.float32)
            if not np.isfinite(embeddings).all():
                raise RegistrationError("embedding values must be finite float32 numbers (|x| <= 3.4e38)", status=422)
        try:
            return np.asarray(
                self.assigner.assign(
                    texts=[item.text() for item in items], behaviour_embeddings=embeddings, item_ids=[item.item_id for item in items]
                )
            )
        except InputError as error:  # e.g. a behaviour-only tokenizer and no embedding given
            raise RegistrationError(str(error), status=422) from None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class ItemRegistry:
    """The registry file of new items on top of the fine-tuned catalogue ``base``.

    JSON Lines, append-only: a header line, then one line per item, so registering an item
    appends one line (and reads only what other processes appended since), whatever the size
    of the registry. Files of version 1 (one JSON document) are read as they are and rewritten
    as version 2 by the first registration.
    """

    def __init__(self, path: str | os.PathLike[str], base: ItemCodes):
        self.path = Path(path)
        self.base = base
        if base.item_ids is None:
            raise InputError("the fine-tuned item codes carry no item ids; cannot check new ids against them")
        self._base_ids = set(base.item_ids)
        self._base_taken = {row.tobytes() for row in np.ascontiguousarray(base.codes, dtype=np.int64)}
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._reset(None)

    def _reset(self, identity: tuple[int, int] | None) -> None:
        """Forget what was read: the file is new, was replaced (a migration) or is gone."""
        self._identity = identity  # (device, inode) of the file read so far
        self._offset = 0  # bytes read: the end of the last complete line
        self._version: int | None = None
        self._items: list[RegisteredItem] = []
        self._item_ids: list[str] = []  # in order (extended_codes copies it in C, no loop over the items)
        self._ids: set[str] = set()
        self._taken: set[bytes] = set()  # code rows of the registered items (the base's are in _base_taken)
        self._codes = np.empty((0, self.base.num_levels), dtype=np.int64)  # first len(_items) rows used; grows by doubling

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's exclusive lock (no item is registered meanwhile, by any process)."""
        with _file_lock(self._lock_path):
            yield

    def _refresh(self) -> None:
        """Catch up with the file: parse what was appended since the last call (all of it when
        the file is new to us). An incomplete last line (a writer midway, or killed) waits."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            self._reset(None)
            return
        except OSError as error:
            raise InputError(f"{self.path}: cannot read the items registry ({error.strerror})") from None
        identity = (status.st_dev, status.st_ino)
        if identity != self._identity or status.st_size < self._offset:
            self._reset(identity)
        if status.st_size == self._offset:
            return
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except OSError as error:
            raise InputError(f"{self.path}: cannot read the items registry ({error.strerror})") from None
        if self._offset == 0:
            first_line = data.partition(b"\n")[0]
            try:
                header = json.loads(first_line)
            except ValueError:
                header = None  # an indented version-1 document
            if header is None or (isinstance(header, dict) and header.get("version") == 1 and "items" in header):
                self._read_version_1(data)
                return
            self._check_header(header)
            self._version = REGISTRY_VERSION
            data = data[len(first_line) + 1 :]
            self._offset = len(first_line) + 1
        complete = data[: data.rfind(b"\n") + 1]
        records = []
        line_number = self._line_number()
        for line in complete.splitlines():
            line_number += 1
            try:
                records.append(json.loads(line))
            except ValueError as error:
                raise InputError(f"{self.path}: line {line_number}: not JSON ({error})") from None
        self._add(records)
        self._offset += len(complete)

    def _line_number(self) -> int:
        return len(self._items) + 1  # the header, then one line per item

    def _read_version_1(self, data: bytes) -> None:
        try:
            document = json.loads(data)
        except ValueError as error:
            raise InputError(f"{self.path}: not an alignrec items registry ({error})") from None
        self._check_header(document)
        if not isinstance(document.get("items"), list):
            raise InputError(f"{self.path}: malformed items registry (no list of items)")
        self._version = 1
        self._add(document["items"])
        self._offset = len(data)

    def _check_header(self, header: Any) -> None:
        if not isinstance(header, dict) or header.get("format") != REGISTRY_FORMAT or header.get("version") not in (1, REGISTRY_VERSION):
            raise InputError(f"{self.path}: not an alignrec items registry of version 1 or {REGISTRY_VERSION}")
        if list(header.get("codebook_sizes", [])) != list(self.base.codebook_sizes):
            raise InputError(
                f"{self.path}: codebook sizes {header.get('codebook_sizes')} differ from the model's {self.base.codebook_sizes}"
            )

    def _add(self, records: Sequence[Any]) -> None:
        """Check ``records`` and append them to what was read (all of them, or none)."""
        sizes = list(self.base.codebook_sizes)
        items, ids, rows = [], set(), set()
        for position, record in enumerate(records, start=len(self._items)):
            where = f"{self.path}: item {position} (line {position + 2})" if self._version != 1 else f"{self.path}: items[{position}]"
            try:
                item = RegisteredItem(**record)
            except TypeError as error:
                raise InputError(f"{where}: malformed item record ({error})") from None
            if not isinstance(item.item_id, str) or item.item_id in self._base_ids or item.item_id in self._ids or item.item_id in ids:
                raise InputError(f"{where}: item id {item.item_id!r} is not a string, or not new")
            codes = item.codes
            if not isinstance(codes, list) or len(codes) != len(sizes):
                raise InputError(f"{where} ({item.item_id!r}) has codes {codes!r}, expected a list of {len(sizes)}")
            if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < size for c, size in zip(codes, sizes)):
                raise InputError(f"{where} ({item.item_id!r}) has codes {codes} outside the codebooks {sizes}")
            row = np.asarray(codes, dtype=np.int64).tobytes()
            if row in self._base_taken or row in self._taken or row in rows:
                raise InputError(f"{where} ({item.item_id!r}) has the codes {codes} of another item")
            items.append(item)
            ids.add(item.item_id)
            rows.add(row)
        if not items:
            return
        used = len(self._items)
        if used + len(items) > len(self._codes):  # grow by doubling: appending stays O(1) per item
            grown = np.empty((max(2 * len(self._codes), used + len(items), 64), self.base.num_levels), dtype=np.int64)
            grown[:used] = self._codes[:used]
            self._codes = grown
        self._codes[used : used + len(items)] = [item.codes for item in items]
        self._items.extend(items)
        self._item_ids.extend(item.item_id for item in items)
        self._ids |= ids
        self._taken |= rows

    def items(self) -> list[RegisteredItem]:
        """The registered items, in registration order (an absent file = none)."""
        self._refresh()
        return list(self._items)

    def extended_codes(self) -> tuple[ItemCodes, list[RegisteredItem]]:
        """The fine-tuned codes followed by the registered items' codes (item index order)."""
        items = self.items()
        if not items:
            return self.base, items
        codes = np.concatenate([self.base.codes, self._codes[: len(items)]])
        ids = list(self.base.item_ids or []) + self._item_ids
        return ItemCodes(codes, list(self.base.codebook_sizes), ids), items

    def _append(self, record: RegisteredItem) -> None:
        """Add one line to the file (under the lock): version 2 with its header when the file is
        new or of version 1 (a one-off rewrite), otherwise a plain append."""
        line = json.dumps(asdict(record), ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        if self._version != REGISTRY_VERSION:
            header = {"format": REGISTRY_FORMAT, "version": REGISTRY_VERSION, "codebook_sizes": list(self.base.codebook_sizes)}
            lines = [json.dumps(header).encode()] + [json.dumps(asdict(i), ensure_ascii=False, separators=(",", ":")).encode("utf-8") for i in self._items]
            atomic_write_bytes(self.path, b"\n".join(lines) + b"\n" + line)
            if self._version == 1:
                log.info("%s: items registry rewritten as version %d (JSON lines)", self.path, REGISTRY_VERSION)
            return
        with open(self.path, "r+b") as handle:
            handle.truncate(self._offset)  # drops an incomplete last line left by a killed writer
            handle.seek(self._offset)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def register(
        self, item: NewItem, assigner: CodeAssigner, before_commit: Callable[[ItemCodes], None] | None = None
    ) -> RegisteredItem:
        """Assign codes to ``item`` and append it to the registry file (under a lock).

        ``before_commit`` is called under the lock with the catalogue including the new item
        (its index is the last), before the file is written; if it raises, nothing is registered.
        """
        with self.locked():
            existing, _ = self.extended_codes()
            if item.item_id in self._base_ids or item.item_id in self._ids:
                raise RegistrationError(f"item {item.item_id!r} already exists", status=409)
            codes = np.asarray(assigner.assign([item], existing), dtype=np.int64)
            if codes.shape != (1, self.base.num_levels):
                raise RegistrationError(f"cold start returned codes of shape {codes.shape}, expected (1, {self.base.num_levels})", 500)
            row = codes[0]
            if (row < 0).any() or (row >= np.asarray(self.base.codebook_sizes)).any():
                raise RegistrationError(f"cold start returned codes {row.tolist()} outside the codebooks", 500)
            key = row.tobytes()
            if key in self._base_taken or key in self._taken:
                clash = np.nonzero((existing.codes == row).all(axis=1))[0]
                owner = existing.item_ids[int(clash[0])] if existing.item_ids else int(clash[0])
                raise RegistrationError(f"cold start gave {item.item_id!r} the codes of item {owner!r}", 500)
            record = RegisteredItem(
                item_id=item.item_id,
                title=item.title,
                description=item.description,
                brand=item.brand,
                categories=list(item.categories),
                codes=[int(c) for c in row],
                created=time.time(),
            )
            if before_commit is not None:
                ids = list(existing.item_ids or []) + [record.item_id]
                before_commit(ItemCodes(np.concatenate([existing.codes, row[None, :]]), list(self.base.codebook_sizes), ids))
            self._append(record)
            self._refresh()  # reads back the line just written (and makes the rewritten file the one known)
        log.info("registered new item %s with codes %s", record.item_id, record.codes)
        return record
