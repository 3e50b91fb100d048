"""``alignrec precache``: every user's top-K by constrained beam search, into a cache store.

Resumable and incremental by the same mechanism: each entry records a fingerprint of the history
it was computed from and a *run key* (model version + search settings). A run computes only the
users whose stored fingerprint or run key differs from the current one (or who have no entry),
and commits them to the store in transactions of ``commit_every`` users. So:

- killed midway (even ``kill -9``), a second run skips what was committed and finishes the
  rest; a user is one key, so there are no duplicates, and nothing committed is lost;
- after new interactions (a re-prepared data set or a ``--histories`` file), only users whose
  history changed, and new users, are computed;
- a new model (another version) recomputes everyone.

Several processes (GPUs, machines): launch the same command with ``torchrun --nproc-per-node N
-m alignrec.cli precache ...`` (or ``accelerate launch``). Rank 0 alone opens the store: it
reads what is there, decides which users to compute and sends the list to every rank; the list
is cut into shards of ``commit_every`` users, split among the ranks as
:mod:`alignrec.distributed` splits every inference job (shard i to rank i % world_size). The
ranks search one shard each at a time, and rank 0 gathers their entries and commits them
together; so the store never has two writers, and a kill loses at most the shards in flight.

Items registered through ``POST /v1/items`` (the registry file) are part of the catalogue the
beam search may return. Each entry also records the version of the catalogue it was computed
against (:func:`alignrec.serve.items.catalogue_version`): after a registration every list
computed before is *stale* (beam search over the grown trie may now return the new item, or
keep other beams), the API flags it, and the next run recomputes it — resumably, like any other
change. ``--full`` recomputes every user.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from alignrec.config import to_dict
from alignrec.distributed import Ranks, process_group, shard_bounds
from alignrec.errors import InputError
from alignrec.layout import stage_dir
from alignrec.serve.store import CacheEntry, CachedItem, SQLiteStore, open_store

if TYPE_CHECKING:  # the model code (torch, transformers) loads only when a command runs
    from alignrec.llm.recommender import GenerativeRecommender
    from alignrec.serve.items import ItemRegistry
    from alignrec.tokenizer.codes import ItemCodes
from alignrec.utils.io import atomic_write_json, iter_jsonl
from alignrec.utils.log import get_logger, progress_bar

log = get_logger(__name__)

POPULAR_LIST_LENGTH = 100  # items kept for the popularity fallback


@dataclass
class PrecacheConfig:
    """Settings of ``alignrec precache``."""

    top_k: int = field(default=20, metadata={"help": "items cached per user (the largest k the API serves)"})
    beam_size: int = field(default=20, metadata={"help": "beams per user (>= top_k)"})
    batch_size: int = field(default=16, metadata={"help": "users per beam-search batch"})
    commit_every: int = field(default=256, metadata={"help": "users per store transaction (work lost to a crash is at most this)"})
    full: bool = field(default=False, metadata={"help": "recompute every user, changed or not"})
    max_users: int | None = field(default=None, metadata={"help": "consider only the first this many users (quick runs)"})
    method: Literal["fast", "reference"] = field(default="fast", metadata={"help": "beam search: fast (batched, KV cache) or reference (HF generate)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N (under torchrun, auto and cuda: each rank's GPU)"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={"help": "model weights dtype"})
    exclude: Literal["off", "history"] = field(
        default="off", metadata={"help": "history: a user's known items are never in their list (excluded inside the beam "
                                 "search, as `alignrec serve --live --exclude history` does)"})

    def __post_init__(self) -> None:
        if self.beam_size < 1 or not 1 <= self.top_k <= self.beam_size:
            raise ValueError(f"need 1 <= top_k <= beam_size, got top_k={self.top_k}, beam_size={self.beam_size}")
        if self.batch_size < 1 or self.commit_every < 1:
            raise ValueError("batch_size and commit_every must be >= 1")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {self.max_users}")


def history_fingerprint(item_ids: list[str]) -> str:
    """Identifies a history: changes whenever an item is added, removed or reordered."""
    return hashlib.blake2b("\x1f".join(item_ids).encode("utf-8"), digest_size=12).hexdigest()


def run_key(version: str, beam_size: int, top_k: int, exclude: str = "off") -> str:
    """What else an entry depends on: the model and the search settings (pre-cache and the live
    path of ``alignrec serve`` write the same key for the same settings)."""
    return f"{version}:b{beam_size}:k{top_k}" + ("" if exclude == "off" else f":x{exclude}")


def fingerprinted_history(history: list[int], max_history: int, exclude: str) -> list[int]:
    """The part of a history an entry's fingerprint covers: the prompt's window (the newest
    ``max_history`` items) — all of it when the history is excluded (then every item counts)."""
    return list(history) if exclude != "off" else list(history)[-max_history:]


def read_histories_file(path: str | os.PathLike[str], item_index_of: dict[str, int]) -> dict[str, list[int]]:
    """``{"user_id": ..., "items": [item ids, oldest first]}`` per line -> {user id: item indices}."""
    from alignrec.data.sources.common import check_unicode  # the ingestion check: a user id must be UTF-8-writable

    path = Path(path)
    out: dict[str, list[int]] = {}
    for number, record in iter_jsonl(path, missing="histories file not found"):
        if not isinstance(record, dict) or not isinstance(record.get("user_id"), (str, int)) or not isinstance(record.get("items"), list):
            raise InputError(f'{path}: line {number}: expected {{"user_id": "...", "items": ["item id", ...]}}')
        indices = []
        for item in record["items"]:
            index = item_index_of.get(str(item))
            if index is None:
                raise InputError(f"{path}: line {number}, field items: unknown item id {item!r}")
            indices.append(index)
        if not indices:
            raise InputError(f"{path}: line {number}, field items: a history needs at least one item")
        out[check_unicode(str(record["user_id"]), path, f"line {number}, field user_id")] = indices
    return out


@dataclass
class Catalogue:
    """What a cached item shows: id, title and code string of every item index."""

    ids: list[str]
    titles: list[str]
    codes: ItemCodes

    def item(self, index: int, score: float | None) -> CachedItem:
        return CachedItem(id=self.ids[index], title=self.titles[index], codes=self.codes.item_string(index), score=score)


def build_catalogue(dataset: Any, registry: ItemRegistry) -> Catalogue:
    """The fine-tuned items (from the data set) followed by the registered new items."""
    codes, registered = registry.extended_codes()
    titles = [item.title for item in dataset.items] + [item.title for item in registered]
    ids = list(dataset.item_ids) + [item.item_id for item in registered]
    return Catalogue(ids, titles, codes)


def popular_items(dataset: Any, catalogue: Catalogue, count: int = POPULAR_LIST_LENGTH) -> list[dict[str, Any]]:
    """The most interacted-with items of the training sequences (the fallback list)."""
    popularity = dataset.item_popularity()
    order = np.argsort(-popularity, kind="stable")[:count]
    return [asdict(catalogue.item(int(i), None)) for i in order]


def precache(
    config: PrecacheConfig,
    model: str | os.PathLike[str],
    cache: str | None = None,
    data: str | os.PathLike[str] | None = None,
    items_registry: str | os.PathLike[str] | None = None,
    histories: str | os.PathLike[str] | None = None,
    recommender: GenerativeRecommender | None = None,
) -> dict[str, Any]:
    """Fill the cache; returns a report, also written to ``precache.json`` beside a SQLite cache
    (``RUN/cache/precache.json`` by default; for a Redis cache, in ``RUN/cache``). Under a
    launcher (``WORLD_SIZE`` > 1) every rank calls this (module docstring) and returns the report."""
    with process_group(config.device) as ranks:
        return _precache(ranks, config, model, cache, data, items_registry, histories, recommender)


@dataclass
class _Plan:
    """What rank 0 found in the store: the users to compute, in order, and the counts."""

    pending: list[tuple[str, str]]  # (user id, history fingerprint)
    users: int
    unchanged: int
    stale: int


def _precache(ranks: Ranks, config: PrecacheConfig, model: str | os.PathLike[str], cache: str | None,
              data: str | os.PathLike[str] | None, items_registry: str | os.PathLike[str] | None,
              histories: str | os.PathLike[str] | None, recommender: GenerativeRecommender | None) -> dict[str, Any]:
    from alignrec.data.dataset import load_dataset
    from alignrec.llm.finetuned import FinetunedRun
    from alignrec.llm.recommender import load_recommender
    from alignrec.serve.items import ItemRegistry, catalogue_version

    started = time.perf_counter()
    paths = FinetunedRun.locate(model)
    cache_dir = stage_dir(paths.run_dir, "precache")
    cache_url = cache or str(cache_dir / "cache.sqlite")
    dataset = load_dataset(data if data is not None else paths.dataset_dir)
    base_codes = paths.codes()
    # The fine-tuned part of the catalogue must be the data set's items, in order.
    paths.check_catalogue(base_codes, dataset)
    registry = ItemRegistry(items_registry or cache_dir / "items_registry.json", base_codes)
    # Rank 0 reads the registry; every rank searches the same catalogue, even if an item is registered meanwhile.
    catalogue = ranks.from_main(lambda: build_catalogue(dataset, registry))
    version = catalogue_version(catalogue.codes)
    if recommender is None:
        recommender, _ = load_recommender(model, ranks.device(config.device), config.dtype, codes=catalogue.codes)
    elif recommender.num_items != catalogue.codes.num_items:
        raise InputError(f"the recommender knows {recommender.num_items} items, the catalogue {catalogue.codes.num_items}")

    # Every user's whole known history (train + valid + test items); the prompt holds its newest
    # items, the fingerprint those (or all of it, when the history is excluded).
    def cut(items: Any) -> list[int]:
        return fingerprinted_history([int(i) for i in items], recommender.format.max_history, config.exclude)

    user_histories: dict[str, list[int]] = {
        user_id: cut(sequence) for user_id, sequence in zip(dataset.user_ids, dataset.sequences, strict=True)
    }
    if histories is not None:
        for user_id, items in read_histories_file(histories, {i: n for n, i in enumerate(catalogue.ids)}).items():
            user_histories[user_id] = cut(items)

    key = run_key(recommender.version, config.beam_size, config.top_k, config.exclude)
    store = None  # rank 0's: the only process that opens the store

    def plan() -> _Plan:
        nonlocal store
        store = open_store(cache_url, create=True)
        stored = store.fingerprints()
        stored_catalogues = store.catalogue_versions()
        pending: list[tuple[str, str]] = []
        users = skipped = stale = 0
        for user_id, history in user_histories.items():
            if config.max_users is not None and users == config.max_users:
                break
            users += 1
            fingerprint = history_fingerprint([catalogue.ids[i] for i in history])
            if not config.full and stored.get(user_id) == (fingerprint, key):
                if stored_catalogues.get(user_id, "") == version:
                    skipped += 1
                    continue
                stale += 1  # same history and model, but items were registered since
            pending.append((user_id, fingerprint))
        # The current catalogue version goes into the metadata under the registry's lock, read
        # from the registry as it is now: an item registered since this run loaded the catalogue
        # keeps its newer version there (and this run's lists count as stale, as they are).
        with registry.locked():
            current, _ = registry.extended_codes()
            store.set_meta(
                {
                    "model_version": recommender.version,
                    "run_key": key,
                    "top_k": config.top_k,
                    "beam_size": config.beam_size,
                    "catalogue": catalogue_version(current),
                    "catalogue_items": current.num_items,
                    "popular": popular_items(dataset, catalogue),
                }
            )
        log.info("precache: %d users, %d unchanged, %d to compute (%d of them stale: items registered since) into %s%s",
                 users, skipped, len(pending), stale, store.describe(),
                 f", {ranks.world_size} processes" if ranks.distributed else "")
        return _Plan(pending, users, skipped, stale)

    try:
        planned = ranks.from_main(plan)
        pending = planned.pending
        bounds = shard_bounds(len(pending), config.commit_every)
        bar = progress_bar(len(pending), "precache", unit="user") if ranks.is_main else None
        search_seconds = 0.0
        # Round r: rank k searches shard r * world_size + k (shard i is rank i % world_size's), then
        # rank 0 commits the round's entries, in shard order.
        for first in range(0, len(bounds), ranks.world_size):
            entries: list[CacheEntry] = []
            index = first + ranks.rank
            if index < len(bounds):
                chunk = pending[slice(*bounds[index])]
                search_started = time.perf_counter()
                chunk_histories = [user_histories[u] for u, _ in chunk]
                output = recommender.recommend(
                    chunk_histories, config.top_k, config.beam_size, config.batch_size, config.method, show_progress=False,
                    exclude=[set(h) for h in chunk_histories] if config.exclude == "history" else None,
                )
                search_seconds += time.perf_counter() - search_started
                now = time.time()
                for row, (user_id, fingerprint) in enumerate(chunk):
                    items = [
                        catalogue.item(int(i), round(float(s), 6))
                        for i, s in zip(output.items[row].tolist(), output.scores[row].tolist(), strict=True)
                        if i >= 0
                    ]
                    entries.append(CacheEntry(user_id, items, recommender.version, key, fingerprint, now, catalogue=version))
            gathered = ranks.gather(entries)
            if store is not None:
                round_entries = [entry for part in gathered for entry in part]
                store.put_many(round_entries)
                bar.update(len(round_entries))
        search_seconds = sum(ranks.gather(search_seconds))  # one process's rate, whatever the world size
        if store is not None:
            bar.close()
            store.set_meta({"updated": time.time()})
            total_entries, describe = store.count(), store.describe()
            # The report goes beside the cache it describes: a --cache elsewhere leaves RUN alone.
            report_dir = store.path.parent if isinstance(store, SQLiteStore) else cache_dir
    finally:
        if store is not None:
            store.close()
    report = None
    if ranks.is_main:
        report = {
            "store": describe,
            "users": planned.users,
            "computed": len(pending),
            "unchanged": planned.unchanged,
            "stale": planned.stale,
            "entries_in_store": total_entries,
            "model_version": recommender.version,
            "run_key": key,
            "catalogue_items": catalogue.codes.num_items,
            "catalogue": version,
            "registered_items": catalogue.codes.num_items - base_codes.num_items,
            "search_s": round(search_seconds, 3),
            "elapsed_s": round(time.perf_counter() - started, 3),
            "users_per_s": round(len(pending) / search_seconds, 3) if search_seconds > 0 else None,
            "world_size": ranks.world_size,
            "config": to_dict(config),
        }
        atomic_write_json(report_dir / "precache.json", report)
    return ranks.broadcast(report)
