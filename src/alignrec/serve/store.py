"""Cache stores: where ``alignrec precache`` puts each user's top-K and ``alignrec serve`` reads it.

One interface, :class:`CacheStore`, two implementations chosen by URL through a registry:

- ``sqlite:///path/cache.sqlite`` (or a plain path): embedded, the default. One row per user
  holding the entry as a JSON text, written in transactions with write-ahead logging, so a
  reader sees either the previous or the new entry of a user, never a part of one, and readers
  never block the writer.
- ``redis://host:port/db`` (``?namespace=name`` to share a server): for several API servers.
  One key per user holding the JSON entry (a single ``SET`` is atomic), written in
  ``MULTI``/``EXEC`` batches together with the fingerprint hash used by incremental runs.

Stores also keep user *histories* (``alignrec serve --live``: ``POST /v1/users/{id}/events``
appends to them): item ids, oldest first, appended atomically (SQLite: a transaction; Redis: one
Lua script), so two concurrent events never lose one another.

Entries are JSON, never pickle: a cache written by one version of the code must not be able to
run code in the server that reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlparse

from alignrec.errors import InputError, MissingDependencyError
from alignrec.utils.log import get_logger

log = get_logger(__name__)

CACHE_FORMAT = "alignrec-cache"
CACHE_FORMAT_VERSION = 1


class CacheError(InputError):
    """A cache store is missing, unreachable, corrupt or of another format."""


_SECRET_PARAMETERS = ("password", "username", "user")  # query parameters redis-py takes credentials from


def redact_url(url: str) -> str:
    """``url`` with its credentials (``user:password@`` and ``?password=``) replaced by ``***``:
    every message or log line that shows a store URL goes through this."""
    try:
        parsed = urlparse(url)
        has_credentials = "@" in parsed.netloc
        query = parse_qsl(parsed.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable URL>"
    secret_query = any(name.lower() in _SECRET_PARAMETERS for name, _ in query)
    if not has_credentials and not secret_query:
        return url
    netloc = "***@" + parsed.netloc.rpartition("@")[2] if has_credentials else parsed.netloc
    if secret_query:
        query = [(name, "***" if name.lower() in _SECRET_PARAMETERS else value) for name, value in query]
    return parsed._replace(netloc=netloc, query=urlencode(query, safe="*")).geturl()


@dataclass
class CachedItem:
    """One recommended item as served: source id, title, code string and beam score."""

    id: str
    title: str
    codes: str
    score: float | None


@dataclass
class CacheEntry:
    """A user's pre-computed recommendations and where they came from.

    ``fingerprint`` identifies the history the list was computed from, ``run_key`` the model
    version and search settings and ``catalogue`` the catalogue version (items registered since
    fine-tuning included; :func:`alignrec.serve.items.catalogue_version`), so an incremental run
    recomputes exactly the users for which one of them changed. ``created`` is a Unix time
    (seconds). Entries written before catalogue versions were recorded have ``catalogue == ""``.
    """

    user_id: str
    items: list[CachedItem]
    model_version: str
    run_key: str
    fingerprint: str
    created: float = field(default_factory=time.time)
    catalogue: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> CacheEntry:
        """Parse and check an entry; anything malformed raises :class:`CacheError` naming ``where``."""
        try:
            data = json.loads(text)
            items = [CachedItem(**item) for item in data.pop("items")]
            entry = cls(items=items, **data)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise CacheError(f"{where}: corrupt cache entry ({error})") from None
        if not isinstance(entry.user_id, str) or not all(isinstance(i.id, str) for i in entry.items):
            raise CacheError(f"{where}: corrupt cache entry (ids must be strings)")
        return entry


class CacheStore(ABC):
    """A key-value store of :class:`CacheEntry` per user id, plus a small metadata map.

    Implementations must make :meth:`put_many` all-or-nothing per call and each entry
    visible atomically (readers never see a half-written entry).
    """

    scheme: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, create: bool, timeout_s: float | None = None) -> CacheStore:
        """Open the store at ``url``; without ``create`` a missing store is a :class:`CacheError`.
        ``timeout_s``: how long one call may wait on a network store (None: the store's default)."""

    @abstractmethod
    def get_json(self, user_id: str) -> str | None:
        """The raw JSON entry of ``user_id``, or None."""

    def get(self, user_id: str) -> CacheEntry | None:
        raw = self.get_json(user_id)
        return None if raw is None else CacheEntry.from_json(raw, f"{self.describe()}: user {user_id!r}")

    @abstractmethod
    def put_many(self, entries: Sequence[CacheEntry]) -> None:
        """Insert or replace entries, all of them or none."""

    @abstractmethod
    def fingerprints(self) -> dict[str, tuple[str, str]]:
        """``{user_id: (history fingerprint, run key)}`` of every stored entry."""

    @abstractmethod
    def catalogue_versions(self) -> dict[str, str]:
        """``{user_id: catalogue version}`` of every stored entry (``""`` where none was recorded)."""

    @abstractmethod
    def count(self) -> int:
        """Number of users with an entry."""

    @abstractmethod
    def get_meta(self, key: str) -> Any:
        """A metadata value (JSON-decoded), or None."""

    @abstractmethod
    def set_meta(self, values: dict[str, Any]) -> None:
        """Set metadata values (JSON-encoded), atomically."""

    @abstractmethod
    def get_history(self, user_id: str) -> list[str] | None:
        """The stored history of ``user_id`` (item ids, oldest first), or None if none was stored."""

    @abstractmethod
    def append_history(self, user_id: str, items: Sequence[str], base: Sequence[str] = ()) -> list[str]:
        """Append ``items`` to the user's stored history, atomically, and return the new history.
        A user without one starts from ``base`` (the history the data set knows, if any)."""

    def get_with_history(self, user_id: str) -> tuple[str | None, list[str] | None]:
        """(raw JSON entry, stored history) of ``user_id``: what a live read needs."""
        return self.get_json(user_id), self.get_history(user_id)

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for messages (never includes a password)."""

    def close(self) -> None:  # noqa: B027 - optional for implementations
        """Release connections."""

    def check_source(self) -> None:  # noqa: B027 - optional for implementations
        """Notice now (not at the next periodic check) a store that went away or was replaced;
        raise :class:`CacheError` when it cannot be used. Health checks call it."""

    def check_format(self) -> None:
        """Refuse a store written by something else (or a newer cache format)."""
        found = self.get_meta("format")
        if found is None:
            return  # an empty, new store
        if found != {"name": CACHE_FORMAT, "version": CACHE_FORMAT_VERSION}:
            raise CacheError(f"{self.describe()}: not an alignrec cache of version {CACHE_FORMAT_VERSION} (found {found})")

    def mark_format(self) -> None:
        """Stamp a new store with the cache format (opening with ``create`` does it)."""
        if self.get_meta("format") is None:
            self.set_meta({"format": {"name": CACHE_FORMAT, "version": CACHE_FORMAT_VERSION}})

    def __enter__(self) -> CacheStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- SQLite


_HISTORIES_TABLE = "CREATE TABLE IF NOT EXISTS histories (user_id TEXT PRIMARY KEY, items TEXT NOT NULL) WITHOUT ROWID"


class SQLiteStore(CacheStore):
    """The embedded default: one SQLite file in WAL mode, one connection per thread.

    Connections hold the file they opened, even after it is deleted or replaced by another
    file under the same name; so the store checks the file's identity (device, inode) at most
    every ``FILE_CHECK_S`` seconds and on :meth:`check_source`: a replaced file is reopened
    (each thread's connection at its next query), a deleted one is a :class:`CacheError`.
    """

    scheme = "sqlite"
    FILE_CHECK_S = 1.0

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS entries (user_id TEXT PRIMARY KEY, value TEXT NOT NULL, "
        "fingerprint TEXT NOT NULL, run_key TEXT NOT NULL) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
        _HISTORIES_TABLE,
    )

    def __init__(self, path: str | os.PathLike[str], create: bool = False, timeout_s: float = 60.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        if not self.path.is_file():
            if not create:
                raise CacheError(f"{self.path}: cache not found (run `alignrec precache` first)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.create = create
        self._local = threading.local()
        self._identity: tuple[int, int] | None = None  # of the file opened (set once it is open)
        self._generation = 0  # bumped when the file is replaced: connections of an older one are reopened
        self._checked_at = time.monotonic()
        self._problem: str | None = None  # why the file cannot be used now (deleted), until the next check
        self._switch = threading.Lock()
        try:
            connection = self._connection()  # creates the file (with `create`)
            self._identity = self._file_identity()
            if create:
                with connection:
                    for statement in self._SCHEMA:
                        connection.execute(statement)
        except sqlite3.DatabaseError as error:
            raise CacheError(f"{self.path}: not a readable SQLite cache ({error})") from None
        self._check_schema()
        if create:
            self.mark_format()

    def _check_schema(self) -> None:
        try:
            tables = {row[0] for row in self._connection().execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as error:
            raise CacheError(f"{self.path}: not a readable SQLite cache ({error})") from None
        if not {"entries", "meta"} <= tables:
            raise CacheError(f"{self.path}: not an alignrec cache (tables entries/meta missing)")
        self.check_format()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return status.st_dev, status.st_ino

    def check_source(self) -> None:
        identity = self._file_identity()
        self._checked_at = time.monotonic()
        if identity is None:
            self._problem = f"{self.path}: the cache file was deleted (the server kept reading the deleted file)"
            raise CacheError(self._problem)
        self._problem = None
        if identity != self._identity:
            with self._switch:
                if identity != self._identity:
                    self._identity = identity
                    self._generation += 1
                    log.warning("%s: the cache file was replaced; reopening it", self.path)
            self._check_schema()

    @classmethod
    def from_url(cls, url: str, create: bool, timeout_s: float | None = None) -> SQLiteStore:  # a local file: no network timeout
        parsed = urlparse(url)
        path = url if parsed.scheme == "" else (parsed.netloc + parsed.path)
        if not path:
            raise CacheError(f"{redact_url(url)}: expected sqlite:///path/to/cache.sqlite")
        return cls(path, create=create)

    def _connection(self) -> sqlite3.Connection:
        if self._identity is not None and time.monotonic() - self._checked_at > self.FILE_CHECK_S:
            self.check_source()
        elif self._problem is not None:
            raise CacheError(self._problem)
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.generation != self._generation:
            connection.close()  # of a file that was replaced since
            connection = None
        if connection is None:
            # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE for writes).
            # mode=rw unless creating: a deleted file must not come back as an empty database.
            target = self.path.resolve().as_uri() + ("" if self.create else "?mode=rw")
            connection = sqlite3.connect(target, uri=True, timeout=self.timeout_s, isolation_level=None, check_same_thread=True)
            connection.execute("PRAGMA journal_mode=WAL")  # readers see the last commit, never block the writer
            connection.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; a crash loses at most the last commits
            self._local.connection = connection
            self._local.generation = self._generation
        return connection

    def _query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._connection().execute(sql, parameters).fetchall()
        except sqlite3.DatabaseError as error:
            raise CacheError(f"{self.path}: cannot read the cache ({error})") from None

    def get_json(self, user_id: str) -> str | None:
        rows = self._query("SELECT value FROM entries WHERE user_id = ?", (user_id,))
        return rows[0][0] if rows else None

    @contextlib.contextmanager
    def _write(self, prepare: str | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue, readers go on), committed
        when the block ends and rolled back when it raises; ``prepare`` runs before it (DDL).
        A database error becomes a :class:`CacheError` naming the file."""
        connection = self._connection()
        try:
            if prepare:
                connection.execute(prepare)
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as error:
            raise CacheError(f"{self.path}: cannot write the cache ({error})") from None

    def put_many(self, entries: Sequence[CacheEntry]) -> None:
        rows = [(e.user_id, e.to_json(), e.fingerprint, e.run_key) for e in entries]
        with self._write() as connection:
            connection.executemany("INSERT OR REPLACE INTO entries (user_id, value, fingerprint, run_key) VALUES (?, ?, ?, ?)", rows)

    def fingerprints(self) -> dict[str, tuple[str, str]]:
        return {user: (fp, key) for user, fp, key in self._query("SELECT user_id, fingerprint, run_key FROM entries")}

    def get_history(self, user_id: str) -> list[str] | None:
        try:
            rows = self._connection().execute("SELECT items FROM histories WHERE user_id = ?", (user_id,)).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):  # a cache written before histories existed: none stored
                return None
            raise CacheError(f"{self.path}: cannot read the cache ({error})") from None
        except sqlite3.DatabaseError as error:
            raise CacheError(f"{self.path}: cannot read the cache ({error})") from None
        return _history_from_json(rows[0][0], f"{self.path}: history of user {user_id!r}") if rows else None

    def append_history(self, user_id: str, items: Sequence[str], base: Sequence[str] = ()) -> list[str]:
        with self._write(prepare=_HISTORIES_TABLE) as connection:  # a cache written before histories existed gets the table
            rows = connection.execute("SELECT items FROM histories WHERE user_id = ?", (user_id,)).fetchall()
            where = f"{self.path}: history of user {user_id!r}"
            history = (_history_from_json(rows[0][0], where) if rows else list(base)) + list(items)
            connection.execute("INSERT OR REPLACE INTO histories (user_id, items) VALUES (?, ?)",
                               (user_id, json.dumps(history, ensure_ascii=False, separators=(",", ":"))))
        return history

    def catalogue_versions(self) -> dict[str, str]:
        # Read from the JSON value (no extra column: caches written before versions existed
        # need no migration, and only `alignrec precache` asks, once per run).
        rows = self._query("SELECT user_id, coalesce(json_extract(value, '$.catalogue'), '') FROM entries")
        return {user: str(version) for user, version in rows}

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM entries")[0][0])

    def get_meta(self, key: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:
            return None
        try:
            return json.loads(rows[0][0])
        except ValueError:
            raise CacheError(f"{self.path}: corrupt metadata {key!r}") from None

    def set_meta(self, values: dict[str, Any]) -> None:
        with self._write() as connection:
            connection.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _history_from_json(text: str | bytes, where: str) -> list[str]:
    try:
        history = json.loads(text)
    except ValueError:
        raise CacheError(f"{where}: corrupt (not JSON)") from None
    if not isinstance(history, list) or not all(isinstance(item, str) for item in history):
        raise CacheError(f"{where}: corrupt (not a list of item ids)")
    return history


# ----------------------------------------------------------------------------- Redis

# KEYS[1] = the history list; ARGV = [number of base items, base..., items...]. Atomic: Redis runs a
# script alone, so the base is pushed once even when two first events of a user race.
_APPEND_HISTORY = """
local base = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 and base > 0 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 2, base + 1))
end
if #ARGV > base + 1 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, base + 2, #ARGV))
end
return redis.call('LRANGE', KEYS[1], 0, -1)
"""


class RedisStore(CacheStore):
    """Entries in a Redis server: ``NS:user:<id>`` JSON strings, ``NS:history:<id>`` lists, ``NS:fingerprints``,
    ``NS:catalogues`` and ``NS:meta`` hashes. Needs the ``redis`` client (``pip install 'alignrec[redis]'``)."""

    scheme = "redis"

    def __init__(self, url: str, namespace: str = "alignrec", create: bool = False, client: Any = None, timeout_s: float | None = None):
        try:
            import redis
        except ImportError:
            raise MissingDependencyError("the Redis cache store needs the redis client: pip install 'alignrec[redis]'") from None
        self._redis_errors = (redis.RedisError, OSError)
        try:
            parsed = urlparse(url)
            self._where = f"redis://{parsed.hostname}:{parsed.port or 6379}{parsed.path or ''} (namespace {namespace})"
            self.client = client or redis.Redis.from_url(url, **self._client_options(redis, timeout_s))
        except ValueError as error:  # a bad port or option; the message never holds the password
            raise CacheError(f"{redact_url(url)}: not a valid Redis URL ({error})") from None
        self.namespace = namespace
        self._fingerprints_key = f"{namespace}:fingerprints"
        self._catalogues_key = f"{namespace}:catalogues"
        self._meta_key = f"{namespace}:meta"
        try:
            self.client.ping()
            exists = bool(self.client.exists(self._meta_key))
        except self._redis_errors as error:
            raise CacheError(f"{self._where}: cannot reach the Redis server ({error})") from None
        if not exists and not create:
            raise CacheError(f"{self._where}: no alignrec cache in this namespace (run `alignrec precache` first)")
        self.check_format()
        if create:
            self.mark_format()

    @staticmethod
    def _client_options(redis: Any, timeout_s: float | None) -> dict[str, Any]:
        """Socket timeouts and retries. With ``timeout_s`` (the server's) a call that gets no
        answer fails after ``timeout_s``, once: redis-py's default retries a timeout three times
        with backoff, so a hung server held each call for a minute."""
        if timeout_s is None:
            return {"socket_timeout": 10, "socket_connect_timeout": 5}
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One retry on a broken connection (e.g. after a Redis restart), none on a timeout.
        retry = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
        return {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, "retry": retry}

    @classmethod
    def from_url(cls, url: str, create: bool, timeout_s: float | None = None) -> RedisStore:
        parsed = urlparse(url)
        query = parse_qs(parsed.query)
        namespace = query.pop("namespace", ["alignrec"])[0]
        if not namespace or any(c in namespace for c in " :\n"):
            raise CacheError(f"{redact_url(url)}: namespace must be a non-empty word without spaces or ':'")
        clean = parsed._replace(query="").geturl()
        return cls(clean, namespace=namespace, create=create, timeout_s=timeout_s)

    def _user_key(self, user_id: str) -> str:
        return f"{self.namespace}:user:{user_id}"

    def _history_key(self, user_id: str) -> str:
        return f"{self.namespace}:history:{user_id}"

    def get_history(self, user_id: str) -> list[str] | None:
        values = self._call("read a history", self.client.lrange, self._history_key(user_id), 0, -1)
        return [value.decode("utf-8") for value in values] if values else None

    def append_history(self, user_id: str, items: Sequence[str], base: Sequence[str] = ()) -> list[str]:
        arguments = [len(base), *base, *items]
        values = self._call("append to a history", self.client.eval, _APPEND_HISTORY, 1, self._history_key(user_id), *arguments)
        return [value.decode("utf-8") for value in values]

    def get_with_history(self, user_id: str) -> tuple[str | None, list[str] | None]:
        def read() -> tuple[Any, Any]:
            pipe = self.client.pipeline(transaction=False)  # one round trip
            pipe.get(self._user_key(user_id))
            pipe.lrange(self._history_key(user_id), 0, -1)
            return tuple(pipe.execute())

        raw, values = self._call("read the cache", read)
        return (None if raw is None else raw.decode("utf-8")), ([v.decode("utf-8") for v in values] if values else None)

    def _call(self, what: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except self._redis_errors as error:
            raise CacheError(f"{self._where}: cannot {what} ({error})") from None

    def get_json(self, user_id: str) -> str | None:
        value = self._call("read the cache", self.client.get, self._user_key(user_id))
        return None if value is None else value.decode("utf-8")

    def put_many(self, entries: Sequence[CacheEntry]) -> None:
        if not entries:
            return

        def write() -> None:
            pipe = self.client.pipeline(transaction=True)  # MULTI ... EXEC: all or nothing
            pipe.mset({self._user_key(e.user_id): e.to_json() for e in entries})
            pipe.hset(self._fingerprints_key, mapping={e.user_id: f"{e.fingerprint}|{e.run_key}" for e in entries})
            pipe.hset(self._catalogues_key, mapping={e.user_id: e.catalogue for e in entries})
            pipe.execute()

        self._call("write the cache", write)

    def fingerprints(self) -> dict[str, tuple[str, str]]:
        raw = self._call("read fingerprints", self.client.hgetall, self._fingerprints_key)
        out = {}
        for user, value in raw.items():
            fingerprint, _, run_key = value.decode("utf-8").partition("|")
            out[user.decode("utf-8")] = (fingerprint, run_key)
        return out

    def catalogue_versions(self) -> dict[str, str]:
        raw = self._call("read catalogue versions", self.client.hgetall, self._catalogues_key)
        versions = {user.decode("utf-8"): value.decode("utf-8") for user, value in raw.items()}
        # Entries written before catalogue versions were recorded have a fingerprint but no version.
        return {user: versions.get(user, "") for user in self.fingerprints()}

    def count(self) -> int:
        return int(self._call("count entries", self.client.hlen, self._fingerprints_key))

    def get_meta(self, key: str) -> Any:
        value = self._call("read metadata", self.client.hget, self._meta_key, key)
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise CacheError(f"{self._where}: corrupt metadata {key!r}") from None

    def set_meta(self, values: dict[str, Any]) -> None:
        mapping = {k: json.dumps(v) for k, v in values.items()}
        self._call("write metadata", lambda: self.client.hset(self._meta_key, mapping=mapping))

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        self.client.close()


# ----------------------------------------------------------------------------- registry

CACHE_STORES: dict[str, type[CacheStore]] = {"sqlite": SQLiteStore, "redis": RedisStore}


def open_store(url: str | os.PathLike[str], create: bool = False, timeout_s: float | None = None) -> CacheStore:
    """Open a cache store by URL (``sqlite:///...``, ``redis://...``, or a plain file path);
    ``timeout_s``: how long one call may wait on a network store (None: the store's default)."""
    url = str(url)
    scheme = urlparse(url).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        scheme = "sqlite"
        url = urlparse(url).path if url.startswith("file:") else url
    if scheme == "rediss":
        scheme = "redis"
    if scheme not in CACHE_STORES:
        raise CacheError(f"{redact_url(url)}: unknown cache store {scheme!r}; expected one of {sorted(CACHE_STORES)}")
    return CACHE_STORES[scheme].from_url(url, create, timeout_s)


__all__ = [
    "CACHE_STORES",
    "CacheEntry",
    "CacheError",
    "CacheStore",
    "CachedItem",
    "RedisStore",
    "SQLiteStore",
    "open_store",
    "redact_url",
]
