"""``alignrec serve``: the HTTP API over the pre-computed cache (FastAPI).

Routes (all answers are JSON; errors are ``{"error": code, "detail": ...}``):

- ``GET /v1/users/{user_id}/recommendations?k=10`` -> the user's cached top-k items (id, title,
  codes, score), and ``stale``: whether items were registered after the list was computed. An
  unknown user is a 404 ``unknown_user`` — or, with ``fallback=popularity``, the most popular
  items flagged ``"fallback": "popularity"`` (scores null).
- ``POST /v1/items`` (``Authorization: Bearer <admin token>``) registers a new item from its
  text: codes from the tokenizer's cold-start path, persisted in the items registry (and so in
  the trie of the next ``alignrec precache``). 201 with the codes.
- ``GET /healthz`` -> store reachable, model version, last update. ``GET /metrics`` -> Prometheus.

Every parameter is validated (id patterns, k bounds, body size and schema): malformed requests
get a 4xx JSON answer, never a 5xx; error details never name files or hosts (the server log
has them). The plain read path is one key lookup and a slice, without response-model
validation. Nothing that can block runs in the event loop: store calls (lookups, health checks)
run in a pool of store threads and are answered 503 when the store takes longer than
``store_timeout_s`` (a hung Redis); registration (file lock, registry I/O, the cold start) runs in
its own thread, and the cold start (with its text embedder) is loaded before the server accepts
connections.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime
# and must resolve names imported inside create_app.
import asyncio
import contextlib
import functools
import hmac
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from alignrec.errors import InputError
from alignrec.layout import stage_dir
from alignrec.serve.store import CacheEntry, CacheError, CachedItem, CacheStore, open_store

if TYPE_CHECKING:
    from alignrec.serve.items import CodeAssigner, ItemRegistry
    from alignrec.serve.live import LiveModel, MicroBatcher
from alignrec.utils.log import get_logger

log = get_logger(__name__)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}$"  # user and item ids: no '/', spaces or control characters
RECOMMENDATIONS_ROUTE = "/v1/users/{user_id}/recommendations"
# Matched with fullmatch: a `$` alone also matches before a final newline ("u1\n" would pass).
_RECOMMENDATIONS_PATH = re.compile(r"/v1/users/([^/]+)/recommendations")
_VALID_ID = re.compile(ID_PATTERN)
_PLAIN_K = re.compile(rb"k=([1-9][0-9]{0,5})")

try:  # orjson: ~10x faster JSON for the lookup path; the standard library otherwise
    import orjson

    def _loads(data: str | bytes) -> Any:
        return orjson.loads(data)

    def _dumps(payload: Any) -> bytes:
        return orjson.dumps(payload)

except ImportError:  # pragma: no cover - orjson is a dependency, kept optional

    def _loads(data: str | bytes) -> Any:
        return json.loads(data)

    def _dumps(payload: Any) -> bytes:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

CONFIG_ENVIRONMENT = "ALIGNREC_SERVE_CONFIG"  # JSON ServeConfig for worker processes
META_TTL_S = 30.0  # how long cache metadata (model version, catalogue, popular list) is reused before re-reading
META_KEYS = ("model_version", "top_k", "updated", "popular", "catalogue")
FLOAT32_MAX = 3.4028234663852886e38  # embeddings are cast to float32: larger values would become inf
# Error details the clients see; the full error, which names files and hosts, goes to the log.
STORE_UNAVAILABLE = "the cache store cannot be reached or read (details in the server log)"
STORE_THREADS = 16  # threads for store calls: a hung store holds each for at most store_timeout_s
CLIENT_CLOSED_REQUEST = 499  # the status metrics count for a request the client abandoned (nginx's convention)
MAX_LIVE_ITEMS = 10000  # item ids in one live history, exclude list or event
NO_HEADERS: dict[str, str] = {}
Answer = tuple[int, bytes, dict[str, str]]  # (status, JSON body, extra headers) of a recommendations request


@dataclass
class ServeConfig:
    """Settings of ``alignrec serve``."""

    cache: str = field(default="", metadata={"help": "cache URL (sqlite:///path, redis://host:port/db; default RUN/cache/cache.sqlite)"})
    run: str = field(default="", metadata={"help": "run folder: enables POST /v1/items (item codes, tokenizer, registry)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    workers: int = field(default=1, metadata={"help": "server processes"})
    default_k: int = field(default=10, metadata={"help": "k when the request gives none"})
    max_k: int | None = field(default=None, metadata={"help": "largest k accepted (default: the items cached per user)"})
    fallback: Literal["none", "popularity"] = field(default="none", metadata={"help": "answer for unknown users: 404 or popular items"})
    admin_token_env: str = field(default="ALIGNREC_ADMIN_TOKEN", metadata={"help": "environment variable holding the admin token"})
    max_body_bytes: int = field(default=65536, metadata={"help": "largest request body accepted"})
    items_registry: str = field(default="", metadata={"help": "registry of new items (default RUN/cache/items_registry.json)"})
    store_timeout_s: float = field(default=1.0, metadata={"help": "seconds a request waits for the cache store before it is answered 503"})
    request_timeout_s: float = field(default=10.0, metadata={"help": "seconds a client has to send a whole request (headers and body) before its connection is closed"})
    keep_alive_timeout_s: float = field(default=5.0, metadata={"help": "seconds an idle keep-alive connection stays open"})
    live: bool = field(default=False, metadata={"help": "compute lists live with the model (needs --run): POST /v1/recommendations, "
                                                 "POST /v1/users/{id}/events, and GET of users whose history changed"})
    exclude: Literal["auto", "off", "history", "history+request"] = field(
        default="auto", metadata={"help": "items live lists never hold: the user's history, and the request's exclude list "
                                  "(auto: both when the data set's items are not repeat-consumed, else off)"})
    unknown_items: Literal["reject", "drop"] = field(
        default="reject", metadata={"help": "unknown item ids in a live history or an event: 422 naming them, or dropped"})
    live_max_batch: int = field(default=16, metadata={"help": "most live requests per beam search"})
    live_max_wait_ms: float = field(default=2.0, metadata={"help": "longest a live request waits for others to join its batch"})
    live_queue: int = field(default=64, metadata={"help": "live requests that may wait; more are answered 503 with Retry-After"})
    live_threads: int = field(default=0, metadata={"help": "torch threads of the live search (0 = torch's default)"})
    live_idle: bool = field(default=True, metadata={"help": "run the live search process in Linux's SCHED_IDLE class: it gets a core only "
                                                        "when the server has nothing to run, so cached reads never wait for it"})
    live_nice: int = field(default=5, metadata={"help": "niceness added to the live search when it is not idle-class (--no-live-idle, "
                                                 "not Linux, or --no-live-process), so cached reads go first on a busy CPU (0-19)"})
    live_process: bool = field(default=True, metadata={"help": "search in a process of its own (else in a thread of the server's: "
                                                           "its Python then shares the GIL with the event loop)"})
    live_device: str = field(default="cpu", metadata={"help": "device of the live model: cpu, cuda or cuda:N"})

    def __post_init__(self) -> None:
        if not self.cache and not self.run:
            raise ValueError("give --cache URL or --run RUN (whose cache is RUN/cache/cache.sqlite)")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.default_k < 1 or (self.max_k is not None and not 1 <= self.default_k <= self.max_k):
            raise ValueError(f"need 1 <= default_k <= max_k, got {self.default_k}, {self.max_k}")
        if not 1024 <= self.max_body_bytes <= 16 * 2**20:
            raise ValueError(f"max_body_bytes must be between 1 KiB and 16 MiB, got {self.max_body_bytes}")
        for name in ("store_timeout_s", "request_timeout_s", "keep_alive_timeout_s"):
            if not 0 < getattr(self, name) <= 600:
                raise ValueError(f"{name} must be in (0, 600] seconds, got {getattr(self, name)}")
        if self.live and not self.run:
            raise ValueError("--live needs --run RUN (the fine-tuned model and its data set)")
        if self.live_max_batch < 1 or self.live_queue < self.live_max_batch:
            raise ValueError(f"need 1 <= live_max_batch <= live_queue, got {self.live_max_batch}, {self.live_queue}")
        if not 0 <= self.live_max_wait_ms <= 1000:
            raise ValueError(f"live_max_wait_ms must be in [0, 1000], got {self.live_max_wait_ms}")
        if not 0 <= self.live_nice <= 19:
            raise ValueError(f"live_nice must be in 0..19, got {self.live_nice}")
        if self.live_threads < 0:
            raise ValueError(f"live_threads must be >= 0, got {self.live_threads}")

    @property
    def cache_url(self) -> str:
        return self.cache or str(stage_dir(self.run, "precache") / "cache.sqlite")

    @property
    def registry_path(self) -> Path:
        return Path(self.items_registry) if self.items_registry else stage_dir(self.run, "precache") / "items_registry.json"


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps in one process never clash)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "alignrec_http_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "alignrec_http_request_duration_seconds",
            "Time to answer, by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.lookups = Counter(
            "alignrec_cache_lookups", "Recommendation lookups by outcome (hit, miss, fallback)", ["outcome"], registry=self.registry
        )
        self.items_registered = Counter("alignrec_items_registered", "New items registered", registry=self.registry)
        self.answers = Counter(
            "alignrec_answers", "Recommendation lists served, by source (cached, live, stale: cached while the live path "
            "was saturated, popularity)", ["source"], registry=self.registry)
        self.live_latency = Histogram(
            "alignrec_live_duration_seconds", "Time from a live request's arrival in the queue to its list (queue + search)",
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5), registry=self.registry)
        self.batch_size = Histogram(
            "alignrec_live_batch_size", "Live requests per beam search", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=self.registry)
        self.batch_seconds = Histogram(
            "alignrec_live_batch_duration_seconds", "Time of one live beam search",
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0), registry=self.registry)
        self.rejected = Counter("alignrec_live_rejected", "Live requests refused with 503 (queue full)", registry=self.registry)
        self.events = Counter("alignrec_events", "Items appended to user histories", registry=self.registry)
        self.queue_depth = Gauge("alignrec_live_queue_depth", "Live requests waiting for a batch", registry=self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request (plain ASGI: no per-request task or body copy)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            # Label by route template (bounded cardinality), never by raw path.
            label = scope.get("alignrec.route") or getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(label, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)


class FastLookupMiddleware:
    """Answers well-formed ``GET /v1/users/{id}/recommendations[?k=N]`` requests directly.

    The FastAPI route does the same through dependency solving and pydantic validation, which
    costs more than the lookup itself. Here the id and ``k`` are checked with the same rules
    (the id pattern, ``1 <= k <= max_k``) by a regex; any request that is not plainly valid —
    other query parameters, an encoded or out-of-range ``k``, a bad id — goes on to the FastAPI
    route, which answers it (errors included) exactly as without this middleware.
    """

    def __init__(self, app: Any, lookup: Callable[[str, int], Awaitable[Answer]], default_k: int, max_k: int):
        self.app = app
        self.lookup = lookup
        self.default_k = default_k
        self.max_k = max_k

    def _k(self, query: bytes) -> int | None:
        if not query:
            return self.default_k
        match = _PLAIN_K.fullmatch(query)
        if match is None:
            return None
        k = int(match.group(1))
        return k if k <= self.max_k else None

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _RECOMMENDATIONS_PATH.fullmatch(scope["path"])
            if match is not None:
                user_id = match.group(1)
                k = self._k(scope.get("query_string", b""))
                if k is not None and _VALID_ID.fullmatch(user_id):
                    scope["alignrec.route"] = RECOMMENDATIONS_ROUTE
                    status, body, extra = await self.lookup(user_id, k)
                    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                    headers += [(name.encode(), value.encode()) for name, value in extra.items()]
                    await send({"type": "http.response.start", "status": status, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


def error_body(code: str, detail: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _meta_problem(key: str, value: Any) -> str | None:
    """What is wrong with the metadata value ``key`` as the server uses it (None: fine or absent)."""
    if value is None:
        return None
    if key == "top_k" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return "must be an integer >= 1"
    if key in ("model_version", "catalogue") and not isinstance(value, str):
        return "must be a string"
    if key == "updated" and not _is_number(value):
        return "must be a number"
    if key == "popular" and not (
        isinstance(value, list) and all(isinstance(item, dict) and isinstance(item.get("id"), str) for item in value)
    ):
        return "must be a list of items with string ids"
    return None


class _CacheView:
    """Cache metadata, re-read at most every ``META_TTL_S`` seconds (pre-cache runs and other
    server processes update it) and checked on every read: a value of the wrong shape is a
    :class:`CacheError` naming the store and the key — at start-up an error, later a 503."""

    def __init__(self, store: CacheStore):
        self.store = store
        self._read_at = -float("inf")
        self.values: dict[str, Any] = {}

    def meta(self, refresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if refresh or now - self._read_at > META_TTL_S:
            values = {key: self.store.get_meta(key) for key in META_KEYS}
            for key, value in values.items():
                problem = _meta_problem(key, value)
                if problem is not None:
                    raise CacheError(f"{self.store.describe()}: corrupt metadata {key!r}: {problem} (found {str(value)[:100]})")
            self.values = values
            self._read_at = now
        return self.values

    def update(self, values: dict[str, Any]) -> None:
        """What this process just wrote (a registration): seen at once, not after the TTL."""
        self.values = {**self.values, **values}


@dataclass
class _ServeState:
    """What the routes of one app share: the store and its metadata, the ``k`` bounds, the
    admin token, metrics, and registration (the registry and the cold start, or why not)."""

    config: ServeConfig
    store: CacheStore
    view: _CacheView
    max_k: int
    default_k: int
    token: str
    metrics: Metrics
    store_threads: ThreadPoolExecutor
    registry: "ItemRegistry | None" = None
    assigner: "CodeAssigner | None" = None
    load_error: Exception | None = None  # why the cold start could not be loaded (answered as 501)
    live: "LiveModel | None" = None  # with --live: the model, its catalogue and settings
    batcher: "MicroBatcher | None" = None  # with --live: the queue of live requests
    live_run_key: str = ""  # the run key of live lists written through to the cache


def _load_state(
    config: ServeConfig, store: CacheStore | None, assigner: "CodeAssigner | None", admin_token: str | None, load_cold_start: bool
) -> _ServeState:
    """Open the store, read the ``k`` bounds from its metadata and, with ``config.run``, open the
    items registry and load the cold start (see :func:`create_app`)."""
    store = store if store is not None else open_store(config.cache_url, create=False, timeout_s=config.store_timeout_s)
    view = _CacheView(store)
    cached_k = view.meta().get("top_k")
    if cached_k is None:
        raise CacheError(f"{store.describe()}: the cache has no entries yet (run `alignrec precache` first)")
    max_k = config.max_k or int(cached_k)
    token = admin_token if admin_token is not None else os.environ.get(config.admin_token_env, "")
    store_threads = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="alignrec-store")
    state = _ServeState(config, store, view, max_k, min(config.default_k, max_k), token, Metrics(), store_threads, assigner=assigner)
    if config.run:
        from alignrec.llm.finetuned import FinetunedRun
        from alignrec.serve import items as items_module
        from alignrec.serve.items import ItemRegistry

        paths = FinetunedRun.locate(config.run)
        base_codes = paths.codes()  # checked to be the model's pair: new items get codes beside them
        state.registry = ItemRegistry(config.registry_path, base_codes)
        state.registry.items()  # a corrupt registry is a start-up error, not a surprise on the first POST
        if assigner is None and token and load_cold_start:
            started = time.perf_counter()
            try:
                state.assigner = items_module.load_code_assigner(paths.run_dir / "tokenizer")
                log.info("cold start loaded in %.1f s", time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001 - a tokenizer problem must not stop the reads
                log.warning("item registration will answer 501: %s", error)
                state.load_error = error
        if config.live:
            _load_live(state, paths)
    return state


def _load_live(state: _ServeState, paths: Any) -> None:
    """The model, data set and settings of the live path (``--live``): the cache's ``top_k`` and
    ``beam_size``, so that a live list equals pre-cache's for the same history."""
    from alignrec.data.dataset import load_dataset
    from alignrec.serve.items import ItemRegistry
    from alignrec.serve.live import LiveModel, ProcessSearch, SearchProcessSpec, ThreadSearch
    from alignrec.serve.precache import run_key

    assert state.registry is not None
    config = state.config
    meta = state.view.meta()
    top_k = int(meta["top_k"])
    beam_size = int(state.store.get_meta("beam_size") or top_k)
    started = time.perf_counter()
    dataset = load_dataset(paths.dataset_dir)
    if config.live_process:
        spec = SearchProcessSpec(str(paths.run_dir), str(state.registry.path), config.live_device, top_k, beam_size,
                                 config.live_threads, config.live_nice, config.live_idle)
        searcher: Any = ProcessSearch(spec)
    else:
        from alignrec.llm.recommender import load_recommender

        recommender, _ = load_recommender(paths.run_dir, config.live_device, "float32")
        searcher = ThreadSearch(recommender, top_k, beam_size)
    own_registry = ItemRegistry(state.registry.path, state.registry.base)  # read by the live path's threads
    state.live = LiveModel(searcher, dataset, own_registry, config.exclude)
    version = state.live.version
    if meta.get("model_version") not in (None, version):
        log.warning("live: the model (%s) is not the one that computed the cache (%s); live lists come from the model",
                    version, meta.get("model_version"))
    state.live_run_key = run_key(version, beam_size, top_k, "history" if state.live.excludes_history else "off")
    log.info("live: model %s loaded in %.1f s (%s, %d items, top %d, beam %d, exclude %s)", version,
             time.perf_counter() - started, "own process" if config.live_process else "in the server process",
             state.live.state.catalogue.codes.num_items, top_k, beam_size, state.live.exclude)


def _json_response(payload: Any, status: int = 200) -> Any:
    from fastapi.responses import Response

    return Response(_dumps(payload), status_code=status, media_type="application/json")


def _add_error_handlers(app: Any) -> None:
    """Every error is JSON ``{"error", "detail"}``; store failures are 503, details in the log."""
    from fastapi import Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        details = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in error.errors()]
        return JSONResponse(jsonable_encoder(error_body("invalid_request", details)), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return JSONResponse(error_body(codes.get(error.status_code, "http_error"), error.detail), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(CacheError)
    async def cache_error(request: Request, error: CacheError) -> JSONResponse:
        log.error("cache error: %s", error)
        return JSONResponse(error_body("cache_error", STORE_UNAVAILABLE), status_code=503)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body("internal_error", "unexpected server error (see the server log)"), status_code=500)


def _miss(state: _ServeState, user_id: str, meta: dict[str, Any], k: int) -> Answer:
    """The answer for a user without a list: popular items (``fallback=popularity``) or 404."""
    if state.config.fallback == "popularity" and meta.get("popular"):
        state.metrics.lookups.labels("fallback").inc()
        state.metrics.answers.labels("popularity").inc()
        payload = {
            "user_id": user_id, "items": meta["popular"][:k], "fallback": "popularity",
            "model_version": meta.get("model_version"), "stale": None,
        }
        return 200, _dumps(payload), NO_HEADERS
    state.metrics.lookups.labels("miss").inc()
    return 404, _dumps(error_body("unknown_user", f"no recommendations cached for user {user_id!r}")), NO_HEADERS


def _cached(state: _ServeState, user_id: str, entry: dict[str, Any], meta: dict[str, Any], k: int,
            stale: bool | None = None) -> Answer:
    """The answer from a cached entry. ``stale``: computed against another catalogue than the
    current one (items registered since), or given (the live path was saturated); unknown (null)
    for a cache written before catalogue versions existed."""
    state.metrics.lookups.labels("hit").inc()
    state.metrics.answers.labels("stale" if stale else "cached").inc()
    current = meta.get("catalogue")
    if stale is None and current is not None:
        stale = entry.get("catalogue") != current
    payload = {
        "user_id": user_id, "items": entry["items"][:k], "fallback": None,
        "model_version": entry["model_version"], "created": entry["created"], "stale": stale,
    }
    return 200, _dumps(payload), NO_HEADERS


def _corrupt_entry(state: _ServeState, user_id: str) -> Answer:
    log.error("cache error: %s: corrupt cache entry for user %r", state.store.describe(), user_id)
    return 503, _dumps(error_body("cache_error", f"corrupt cache entry for user {user_id!r}")), NO_HEADERS


def _lookup(state: _ServeState, user_id: str, k: int) -> Answer:
    """(status, JSON body, headers) of a validated recommendations request; shared by the fast
    path and the FastAPI route, so both answer identically."""
    try:
        raw = state.store.get_json(user_id)
        meta = state.view.meta()
    except CacheError as error:
        log.error("cache error: %s", error)
        return 503, _dumps(error_body("cache_error", STORE_UNAVAILABLE)), NO_HEADERS
    if raw is None:
        return _miss(state, user_id, meta, k)
    try:
        return _cached(state, user_id, _loads(raw), meta, k)
    except (ValueError, KeyError, TypeError, AttributeError):
        return _corrupt_entry(state, user_id)


async def _store_call(state: _ServeState, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` — anything that calls the store — in the store threads, waiting at most
    ``store_timeout_s``: a hung store (a paused Redis) is a prompt :class:`CacheError`, and the
    event loop, with every route that does not touch the store, never waits for it."""
    timeout_s = state.config.store_timeout_s
    future = asyncio.get_running_loop().run_in_executor(state.store_threads, function, *args)
    try:
        return await asyncio.wait_for(future, timeout_s)
    except asyncio.TimeoutError:
        raise CacheError(f"{state.store.describe()}: no answer within {timeout_s} s") from None


async def _bounded_lookup(state: _ServeState, user_id: str, k: int) -> Answer:
    """:func:`_lookup` off the event loop, within ``store_timeout_s`` (else 503)."""
    try:
        return await _store_call(state, _lookup, state, user_id, k)
    except CacheError as error:
        log.error("cache error: %s", error)
        return 503, _dumps(error_body("cache_error", STORE_UNAVAILABLE)), NO_HEADERS


def _add_read_routes(app: Any, state: _ServeState) -> None:
    """``GET /v1/users/{user_id}/recommendations`` through FastAPI: requests the fast path
    (:class:`FastLookupMiddleware`) leaves to it, and their validation errors."""
    from fastapi import Path as PathParam, Query
    from fastapi.responses import Response

    # Plain requests never get here: the fast path in FastLookupMiddleware answers them.
    @app.get(RECOMMENDATIONS_ROUTE)
    async def recommendations(
        user_id: Annotated[str, PathParam(pattern=ID_PATTERN, max_length=128)],
        k: Annotated[int, Query(ge=1, le=state.max_k)] = state.default_k,
    ) -> Response:
        status, body, headers = await (_live_lookup if state.live is not None else _bounded_lookup)(state, user_id, k)
        return Response(body, status_code=status, media_type="application/json", headers=headers)


def _new_item_body_model() -> Any:
    """The pydantic model of a ``POST /v1/items`` body (pydantic is imported only when serving)."""
    from pydantic import BaseModel, ConfigDict, Field

    class NewItemBody(BaseModel):
        model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

        item_id: str = Field(pattern=ID_PATTERN, max_length=128)
        title: str = Field(min_length=1, max_length=1000)
        description: str = Field(default="", max_length=20000)
        brand: str = Field(default="", max_length=200)
        categories: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=50)
        embedding: list[Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]] | None = Field(
            default=None, min_length=1, max_length=8192
        )

    return NewItemBody


class DuplicateKeyError(ValueError):
    """A JSON object names a key twice (the parser would silently keep the last value)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for request bodies: a repeated key is an error, not "last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def _register(state: _ServeState, body_model: Any, body: bytes) -> tuple[int, Any]:
    """Parse, validate and register one item: (status, JSON payload). Runs in the
    registration thread — JSON parsing, the registry's file lock and I/O and the cold start
    all may take a while, and none of it may hold up the event loop."""
    from alignrec.serve.items import NewItem, RegistrationError, catalogue_version

    item = _parse_body(body, body_model)
    if isinstance(item, tuple):
        return item
    if state.assigner is None:
        log.warning("item registration refused: %s", state.load_error)
        detail = "item registration is not available: the run's tokenizer has no usable cold start (details in the server log)"
        return 501, error_body("not_implemented", detail)
    assert state.registry is not None
    published: dict[str, Any] = {}

    def publish(catalogue: Any) -> None:  # under the registry lock, before the registry is replaced
        published.update(catalogue=catalogue_version(catalogue), catalogue_items=catalogue.num_items)
        state.store.set_meta(published)

    try:
        record = state.registry.register(NewItem(**item.model_dump()), state.assigner, before_commit=publish)
    except RegistrationError as error:
        code = {409: "conflict", 422: "invalid_item", 501: "not_implemented"}.get(error.status, "registration_failed")
        return error.status, error_body(code, str(error))
    except CacheError as error:
        log.error("item registration: cache error: %s", error)
        return 503, error_body("cache_error", STORE_UNAVAILABLE)
    except InputError as error:  # a damaged registry (another process wrote it), or a disk error: the store is unusable
        log.error("items registry: %s", error)
        return 503, error_body("registry_error", "the items registry cannot be read or written (details in the server log)")
    state.view.update({"catalogue": published["catalogue"]})
    state.metrics.items_registered.inc()
    code_string = "".join(f"<{chr(ord('a') + level)}_{code}>" for level, code in enumerate(record.codes))
    item_index = published["catalogue_items"] - 1
    return 201, {"id": record.item_id, "item_index": item_index, "codes": record.codes, "code_string": code_string}


async def _read_body(request: Any, config: ServeConfig) -> Any:
    """A JSON request body as bytes — or the error answer: 413 over ``max_body_bytes`` (declared
    or sent), 415 when not JSON, 499 (counted, nobody to answer) when the client went away."""
    from fastapi.responses import Response
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > config.max_body_bytes):
        return _json_response(error_body("body_too_large", f"at most {config.max_body_bytes} bytes"), 413)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return _json_response(error_body("unsupported_media_type", "send application/json"), 415)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > config.max_body_bytes:
                return _json_response(error_body("body_too_large", f"at most {config.max_body_bytes} bytes"), 413)
    except ClientDisconnect:
        # The client went away mid-body: no one to answer. Not a server error: counted as 499
        # (the client closed the request), logged at debug.
        log.debug("%s %s: the client disconnected before sending the whole body", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return bytes(body)


def _parse_body(body: bytes, body_model: Any) -> Any:
    """A validated body model, or ``(status, error payload)``: 400 for bad JSON (a repeated key
    included), 422 naming each invalid field."""
    from fastapi.encoders import jsonable_encoder
    from pydantic import ValidationError

    try:
        parsed = json.loads(body, object_pairs_hook=_unique_keys)
    except RecursionError:
        return 400, error_body("invalid_json", "the JSON body is nested too deeply")
    except (ValueError, UnicodeDecodeError) as error:
        return 400, error_body("invalid_json", str(error))
    try:
        return body_model.model_validate(parsed)
    except ValidationError as error:
        details = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in error.errors()]
        return 422, jsonable_encoder(error_body("invalid_request", details))


def _body_schema(body_model: Any) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body by hand (size limit first,
    :func:`_request_model`), so that the docs still show the model."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body_model.model_json_schema()}}}}


async def _request_model(request: Any, config: ServeConfig, body_model: Any) -> Any:
    """:func:`_read_body` then :func:`_parse_body`: the validated body model, or the error
    ``Response`` to return as it is."""
    body = await _read_body(request, config)
    if not isinstance(body, bytes):
        return body
    parsed = _parse_body(body, body_model)
    return _json_response(parsed[1], parsed[0]) if isinstance(parsed, tuple) else parsed


def _add_item_routes(app: Any, state: _ServeState, registration_thread: ThreadPoolExecutor) -> None:
    """``POST /v1/items``: the admin token, body size and type checked here, the rest
    (:func:`_register`) in ``registration_thread``."""
    from fastapi import Request
    from fastapi.responses import Response

    config = state.config
    body_model = _new_item_body_model()
    @app.post("/v1/items", status_code=201, openapi_extra=_body_schema(body_model))
    async def register_item(request: Request) -> Response:
        if not state.token:
            return _json_response(error_body("forbidden", "item registration is disabled (no admin token configured)"), 403)
        offered = request.headers.get("authorization", "")
        scheme, _, credential = offered.partition(" ")
        # Constant-time comparison, so response timing does not leak the token.
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), state.token.encode()):
            return _json_response(error_body("unauthorized", "a valid admin token is required (Authorization: Bearer ...)"), 401)
        if state.registry is None:
            return _json_response(error_body("not_configured", "start the server with --run RUN to register items"), 503)
        body = await _read_body(request, config)
        if not isinstance(body, bytes):
            return body  # an error answer
        status, payload = await asyncio.get_running_loop().run_in_executor(registration_thread, _register, state, body_model, body)
        return _json_response(payload, status)


# ----------------------------------------------------------------------------- live


def _live_body_models(default_k: int, max_k: int) -> tuple[Any, Any]:
    """The pydantic models of ``POST /v1/recommendations`` and ``POST /v1/users/{id}/events``
    bodies. Item ids are strings of the id pattern, or non-negative integers (read as strings)."""
    from pydantic import BaseModel, ConfigDict, Field

    ItemId = Annotated[str, Field(pattern=ID_PATTERN, max_length=128)] | Annotated[int, Field(strict=True, ge=0)]

    class LiveRequestBody(BaseModel):
        model_config = ConfigDict(extra="forbid")

        history: list[ItemId] = Field(max_length=MAX_LIVE_ITEMS)
        k: Annotated[int, Field(strict=True, ge=1, le=max_k)] = default_k
        exclude: list[ItemId] = Field(default_factory=list, max_length=MAX_LIVE_ITEMS)

    class EventsBody(BaseModel):
        model_config = ConfigDict(extra="forbid")

        items: list[ItemId] = Field(min_length=1, max_length=MAX_LIVE_ITEMS)

    return LiveRequestBody, EventsBody


def _known_items(state: _ServeState, field_name: str, ids: list[str]) -> tuple[list[int], list[str]] | Answer:
    """Item ids -> (indices, dropped ids); unknown ids are a 422 naming them (``unknown_items=reject``)
    or dropped. Items registered since start-up are known (the catalogue follows the registry)."""
    assert state.live is not None
    index_of = state.live.catalogue_state().index_of
    indices, unknown = [], []
    for item in ids:
        index = index_of.get(item)
        if index is None:
            unknown.append(item)
        else:
            indices.append(index)
    if unknown and state.config.unknown_items == "reject":
        detail = {"field": field_name, "unknown": unknown[:100], "count": len(unknown)}
        return 422, _dumps(error_body("unknown_items", detail)), NO_HEADERS
    return indices, unknown


def _retry_after(error: Any) -> Answer:
    payload = error_body("overloaded", f"the live queue is full; retry after {error.retry_after_s} s")
    return 503, _dumps(payload), {"retry-after": str(error.retry_after_s)}


def _live_items(result: Any, k: int) -> list[CachedItem]:
    """The first ``k`` items of a live result as precache stores them (:meth:`Catalogue.item`)."""
    return [result.catalogue.item(i, round(score, 6)) for i, score in zip(result.items[:k], result.scores[:k], strict=True)]


async def _run_live(state: _ServeState, history: list[int], exclude: frozenset[int]) -> Any:
    """Queue a live search and wait for it (:class:`~alignrec.serve.live.QueueFull` when full)."""
    from alignrec.serve.live import LiveJob

    assert state.batcher is not None
    job = LiveJob(history, exclude)
    future = state.batcher.submit(job)
    result = await asyncio.wrap_future(future)
    state.metrics.live_latency.observe(time.perf_counter() - job.enqueued)
    state.metrics.answers.labels("live").inc()
    return result


def _read_user(state: _ServeState, user_id: str) -> tuple[str | None, list[str] | None, dict[str, Any]]:
    raw, stored = state.store.get_with_history(user_id)
    return raw, stored, state.view.meta()


def _write_through(state: _ServeState, entry: Any) -> None:
    """Store a live list as the user's cached one (in a store thread; the answer does not wait)."""
    def write() -> None:
        try:
            state.store.put_many([entry])
        except CacheError as error:
            log.error("live: cannot write the list of user %r through to the cache: %s", entry.user_id, error)

    state.store_threads.submit(write)


async def _live_lookup(state: _ServeState, user_id: str, k: int) -> Answer:
    """``GET /v1/users/{id}/recommendations`` with ``--live``: the cached list while it is current;
    computed live (and written through to the cache) when the user's history changed since it
    was computed (events), the catalogue grew (registered items), or a known user has none. While
    the live path is saturated a cached list is served as it is, with ``"stale": true``."""
    from alignrec.serve.live import QueueFull
    from alignrec.serve.precache import history_fingerprint

    live = state.live
    assert live is not None and state.batcher is not None
    try:
        raw, stored, meta = await _store_call(state, _read_user, state, user_id)
    except CacheError as error:
        log.error("cache error: %s", error)
        return 503, _dumps(error_body("cache_error", STORE_UNAVAILABLE)), NO_HEADERS
    try:
        entry = None if raw is None else _loads(raw)
        # Current: computed against the catalogue of the cache metadata, or the one the live path
        # searches (it follows the registry; a metadata version it cannot reach must not make every
        # read a search).
        current = meta.get("catalogue")
        catalogue_ok = entry is not None and (current is None or entry.get("catalogue") in (current, live.state.version))
        if catalogue_ok and stored is None:
            return _cached(state, user_id, entry, meta, k)  # no events since pre-cache: the common case
        history = stored if stored is not None else live.base_history(user_id)
        if not history:
            return _cached(state, user_id, entry, meta, k) if entry is not None else _miss(state, user_id, meta, k)
        fingerprint = history_fingerprint(live.fingerprint_history(history))
        if catalogue_ok and entry["fingerprint"] == fingerprint:
            return _cached(state, user_id, entry, meta, k)
    except (ValueError, KeyError, TypeError, AttributeError):
        return _corrupt_entry(state, user_id)
    if entry is not None and state.batcher.saturated():
        return _cached(state, user_id, entry, meta, k, stale=True)
    index_of = live.catalogue_state().index_of
    indices = [index_of[item] for item in history if item in index_of]  # ids were checked when stored
    try:
        result = await _run_live(state, indices, frozenset(indices) if live.excludes_history else frozenset())
    except QueueFull as error:
        state.metrics.rejected.inc()
        if entry is not None:
            return _cached(state, user_id, entry, meta, k, stale=True)
        return _retry_after(error)
    except Exception:  # noqa: BLE001 - the search failed (logged by the batcher): the cached list, or a JSON 500
        if entry is not None:
            return _cached(state, user_id, entry, meta, k, stale=True)
        return 500, _dumps(error_body("internal_error", "the live search failed (see the server log)")), NO_HEADERS
    items = _live_items(result, len(result.items))
    created = time.time()
    _write_through(state, CacheEntry(user_id, items, live.version, state.live_run_key, fingerprint, created,
                                     catalogue=result.catalogue_version))
    payload = {
        "user_id": user_id, "items": [vars(item) for item in items[:k]], "fallback": None,
        "model_version": live.version, "created": created, "stale": False, "live": True,
    }
    return 200, _dumps(payload), NO_HEADERS


def _add_live_routes(app: Any, state: _ServeState) -> None:
    """``POST /v1/recommendations`` (a list for any history, computed live) and
    ``POST /v1/users/{user_id}/events`` (append to a user's stored history)."""
    from fastapi import Path as PathParam, Request
    from fastapi.responses import Response

    from alignrec.serve.live import QueueFull

    live, config = state.live, state.config
    assert live is not None
    request_model, events_model = _live_body_models(state.default_k, state.max_k)

    def answer(result: Answer) -> Response:
        status, body, headers = result
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    @app.post("/v1/recommendations", openapi_extra=_body_schema(request_model))
    async def live_recommendations(request: Request) -> Response:
        parsed = await _request_model(request, config, request_model)
        if isinstance(parsed, Response):
            return parsed
        known = _known_items(state, "history", [str(item) for item in parsed.history])
        if len(known) == 3:
            return answer(known)
        history, dropped = known
        if parsed.exclude and live.exclude != "history+request":
            detail = f"this server does not take an exclude list (its exclusion setting is {live.exclude!r})"
            return _json_response(error_body("exclude_disabled", {"field": "exclude", "msg": detail}), 422)
        index_of = live.state.index_of
        excluded = {index_of[str(item)] for item in parsed.exclude if str(item) in index_of}  # unknown ones can never come up
        if live.excludes_history:
            excluded.update(history)
        meta = state.view.meta()
        if not history:  # nothing to go on: the popular items
            state.metrics.answers.labels("popularity").inc()
            ids = live.state.catalogue.ids
            banned = {ids[i] for i in excluded}
            popular = [item for item in (meta.get("popular") or []) if item["id"] not in banned][: parsed.k]
            payload = {"user_id": None, "items": popular, "fallback": "popularity", "model_version": meta.get("model_version"),
                       "stale": None, "live": False, "dropped": dropped}
            return _json_response(payload)
        try:
            result = await _run_live(state, history, frozenset(excluded))
        except QueueFull as error:
            state.metrics.rejected.inc()
            return answer(_retry_after(error))
        payload = {"user_id": None, "items": [vars(item) for item in _live_items(result, parsed.k)], "fallback": None,
                   "model_version": live.version, "created": time.time(), "stale": False, "live": True,
                   "dropped": dropped}
        return _json_response(payload)

    @app.post("/v1/users/{user_id}/events", openapi_extra=_body_schema(events_model))
    async def user_events(user_id: Annotated[str, PathParam(pattern=ID_PATTERN, max_length=128)], request: Request) -> Response:
        parsed = await _request_model(request, config, events_model)
        if isinstance(parsed, Response):
            return parsed
        ids = [str(item) for item in parsed.items]
        known = _known_items(state, "items", ids)
        if len(known) == 3:
            return answer(known)
        _, dropped = known
        dropped_set = set(dropped)
        kept = [item for item in ids if item not in dropped_set]
        if kept:
            try:
                history = await _store_call(state, state.store.append_history, user_id, kept, live.base_history(user_id))
            except CacheError as error:
                log.error("events: cache error: %s", error)
                return _json_response(error_body("cache_error", STORE_UNAVAILABLE), 503)
            state.metrics.events.inc(len(kept))
        else:
            history = None
        payload = {"user_id": user_id, "appended": len(kept), "dropped": dropped,
                   "history_length": None if history is None else len(history)}
        return _json_response(payload)


def _add_health_routes(app: Any, state: _ServeState) -> None:
    """``GET /healthz`` (the store reachable, its metadata) and ``GET /metrics`` (Prometheus)."""
    from fastapi.responses import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    store = state.store

    def read_health() -> dict[str, Any]:
        store.check_source()  # a deleted or replaced cache file is noticed here at once
        return {key: state.view.meta(refresh=True)[key] for key in ("model_version", "updated", "top_k")}

    @app.get("/healthz")
    async def healthz() -> Response:
        try:
            meta = await _store_call(state, read_health)
        except CacheError as error:
            log.error("health check: cache error: %s", error)
            return _json_response({"status": "unavailable", "store": store.scheme, "detail": STORE_UNAVAILABLE}, 503)
        if state.live is not None:
            if not state.live.searcher.alive():
                log.error("health check: the live search process exited")
                return _json_response({"status": "unavailable", "store": store.scheme,
                                       "detail": "the live search process exited (details in the server log)"}, 503)
            meta = {**meta, "live": {"queue": state.batcher.depth() if state.batcher is not None else 0}}
        return _json_response({"status": "ok", "store": store.scheme, **meta})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    config: ServeConfig,
    store: CacheStore | None = None,
    assigner: "CodeAssigner | None" = None,
    admin_token: str | None = None,
    load_cold_start: bool = True,
) -> Any:
    """Build the FastAPI app. ``store`` / ``assigner`` / ``admin_token`` default to what
    ``config`` names (cache URL, the tokenizer's cold start, the token environment variable).

    When registration is enabled (``config.run`` and an admin token) and no ``assigner`` is
    given, the tokenizer's cold start is loaded here, before the server accepts connections —
    not by the first ``POST /v1/items`` (``load_cold_start=False`` skips it: a start-up check).
    """
    from fastapi import FastAPI

    state = _load_state(config, store, assigner, admin_token, load_cold_start)
    # One thread for registrations: the cold start is stateful (it reserves the codes it hands
    # out), and the registry file lock orders registrations between processes anyway.
    registration_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alignrec-register")

    if state.live is not None:
        _start_batcher(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        registration_thread.shutdown(wait=False, cancel_futures=True)
        state.store_threads.shutdown(wait=False, cancel_futures=True)
        if state.batcher is not None:
            state.batcher.close()
        if state.live is not None:
            state.live.close()

    # redirect_slashes=False: a trailing-slash redirect would echo the request's Host header.
    app = FastAPI(title="alignrec", version="1", docs_url="/docs", redoc_url=None, redirect_slashes=False, lifespan=lifespan)
    _add_error_handlers(app)
    _add_read_routes(app, state)
    _add_item_routes(app, state, registration_thread)
    if state.live is not None:
        _add_live_routes(app, state)
    _add_health_routes(app, state)
    # Added last = outermost: metrics see every request, the fast path answers plain lookups.
    lookup = functools.partial(_live_lookup if state.live is not None else _bounded_lookup, state)
    app.add_middleware(FastLookupMiddleware, lookup=lookup, default_k=state.default_k, max_k=state.max_k)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.state.store = state.store
    app.state.metrics = state.metrics
    app.state.serve = state
    return app


LIVE_SWITCH_INTERVAL_S = 0.0005  # how long the search thread may hold the GIL while the event loop waits for it


def _start_batcher(state: _ServeState) -> None:
    import sys

    from alignrec.serve.live import MicroBatcher

    assert state.live is not None
    config, metrics = state.config, state.metrics
    if not config.live_process:
        # A search thread runs Python between torch's kernels (which release the GIL); by default
        # the event loop could wait 5 ms for the GIL each time: a cached read's latency.
        sys.setswitchinterval(min(sys.getswitchinterval(), LIVE_SWITCH_INTERVAL_S))

    def on_batch(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.batch_seconds.observe(seconds)

    state.batcher = MicroBatcher(state.live.search, config.live_max_batch, config.live_max_wait_ms / 1000, config.live_queue,
                                 on_batch=on_batch,
                                 # in-process search: the worker thread is the search (its threads, niced);
                                 # a search process sets both itself, and the thread only waits on a pipe
                                 threads=0 if config.live_process else config.live_threads,
                                 # (niced, never idle-class: a starved thread holding the GIL would stall the event loop)
                                 niceness=0 if config.live_process else config.live_nice)
    batcher = state.batcher
    metrics.queue_depth.set_function(batcher.depth)


def app_from_environment() -> Any:
    """App factory for uvicorn worker processes: the config comes from ``ALIGNREC_SERVE_CONFIG``."""
    from alignrec.config import from_mapping

    raw = os.environ.get(CONFIG_ENVIRONMENT)
    if not raw:
        raise InputError(f"{CONFIG_ENVIRONMENT} is not set (start the server with `alignrec serve`)")
    return create_app(from_mapping(ServeConfig, json.loads(raw), source=CONFIG_ENVIRONMENT))


def uvicorn_options(config: ServeConfig, implementation: str = "auto") -> dict[str, Any]:
    """How ``alignrec serve`` runs uvicorn: unparseable requests get a JSON 400, incomplete
    requests and idle keep-alive connections are closed after their timeouts, and no WebSocket
    upgrades (the API has none; an upgrade request is served as plain HTTP). ``implementation``:
    uvicorn's HTTP parser, "auto" (httptools when installed), "h11" or "httptools"."""
    from alignrec.serve.protocol import http_protocol

    return {
        "host": config.host, "port": config.port, "log_level": "warning", "access_log": False, "ws": "none",
        "http": http_protocol(config.request_timeout_s, implementation), "timeout_keep_alive": config.keep_alive_timeout_s,
    }


def run_server(config: ServeConfig) -> None:
    """Serve until interrupted (uvicorn; several worker processes with ``workers > 1``)."""
    import uvicorn

    from alignrec.config import to_dict

    if config.workers == 1:
        app = create_app(config)  # the cold start loads here, before the port is opened
        uvicorn.run(app, **uvicorn_options(config))
        return
    # Fail here, once, on a missing or corrupt cache; each worker loads its own cold start.
    create_app(config, load_cold_start=False).state.store.close()
    os.environ[CONFIG_ENVIRONMENT] = json.dumps(to_dict(config))
    uvicorn.run("alignrec.serve.app:app_from_environment", factory=True, workers=config.workers, **uvicorn_options(config))
