"""Live recommendations: the LLM in the request path (``alignrec serve --live``).

The model has a few layers, so one constrained beam search costs tens of milliseconds on a CPU
core: lists can be computed when they are asked for, not only by ``alignrec precache``. This
module holds what the API needs for that:

- :class:`ThreadSearch` / :class:`ProcessSearch`: the model, searching in the batcher's worker
  thread, or in a child process of its own (``alignrec serve``'s default: a search's Python
  then never holds the server's GIL, which otherwise delays the event loop by milliseconds);
- :class:`LiveModel`: the search and the catalogue it may return — the data
  set's items followed by the items registered since fine-tuning, followed as the registry
  grows (a registered item reaches live lists at the next batch, without a restart) — plus the
  data set's user histories (the base that events are appended to) and the exclusion setting;
- :class:`MicroBatcher`: concurrent requests are queued and run together, up to ``max_batch``
  per beam search, waiting at most ``max_wait_s`` for a batch to fill. The search runs in one
  worker thread, never on the event loop, so cached reads never wait for it. The queue is
  bounded: a request that finds it full is refused at once (the API answers 503 with
  Retry-After), never queued without limit.

A live list equals ``alignrec precache``'s list for the same history, model and settings: both
call :meth:`GenerativeRecommender.recommend` with the cache's ``top_k`` and ``beam_size`` and the
same exclusion, and the live path writes its entries with precache's fingerprint and run key
(:func:`alignrec.serve.precache.history_fingerprint`, :func:`~alignrec.serve.precache.run_key`),
so a later pre-cache run counts them as up to date.

Exclusion (``exclude``): ``off``; ``history`` (the user's known history: items already consumed
are never recommended); ``history+request`` (also the request's ``exclude`` list); ``auto`` =
``history+request`` when the data set's items are not repeat-consumed (no user's sequence holds
an item twice), else ``off``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from alignrec.utils.log import get_logger

if TYPE_CHECKING:
    from alignrec.llm.recommender import GenerativeRecommender
    from alignrec.serve.items import ItemRegistry
    from alignrec.serve.precache import Catalogue

log = get_logger(__name__)

EXCLUDE_MODES = ("auto", "off", "history", "history+request")


def repeat_consumed(sequences: Sequence[np.ndarray]) -> bool:
    """Whether any user's sequence holds an item twice (items are consumed again)."""
    return any(len(np.unique(sequence)) < len(sequence) for sequence in sequences)


def resolve_exclude(mode: str, sequences: Sequence[np.ndarray]) -> str:
    """The exclusion a server applies: ``mode``, with ``auto`` decided by the data set."""
    if mode not in EXCLUDE_MODES:
        raise ValueError(f"exclude must be one of {EXCLUDE_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    return "off" if repeat_consumed(sequences) else "history+request"


@dataclass
class LiveJob:
    """One list to compute: a history (item indices, oldest first), the items it must not get,
    and where the answer goes (``future``: a :class:`LiveResult`)."""

    history: list[int]
    exclude: frozenset[int]
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class LiveResult:
    """The top-``top_k`` item indices and scores of a job (best first, no padding) and the
    catalogue they index."""

    items: list[int]
    scores: list[float]
    catalogue: Catalogue
    catalogue_version: str
    queued_s: float
    batch_size: int


@dataclass
class CatalogueState:
    """The catalogue a live request is answered from: items and their ids, swapped as one."""

    catalogue: Catalogue
    version: str
    index_of: dict[str, int]


def _search_lists(recommender: GenerativeRecommender, histories: Sequence[Sequence[int]], exclude: Sequence[frozenset[int]] | None,
                  top_k: int, beam_size: int) -> tuple[list[list[int]], list[list[float]]]:
    """One batched beam search: per history, item indices and scores (best first, no padding)."""
    output = recommender.recommend(histories, top_k, beam_size, batch_size=len(histories), show_progress=False, exclude=exclude)
    items, scores = [], []
    for row in range(len(histories)):
        found = [int(i) for i in output.items[row].tolist() if i >= 0]
        items.append(found)
        scores.append(output.scores[row, : len(found)].tolist())
    return items, scores


class ThreadSearch:
    """The search in the calling thread (the batcher's worker thread) of this process."""

    def __init__(self, recommender: GenerativeRecommender, top_k: int, beam_size: int):
        self.recommender = recommender
        self.top_k = top_k
        self.beam_size = beam_size
        self.version = recommender.version
        self.max_history = recommender.format.max_history

    def __call__(self, histories: Sequence[Sequence[int]], exclude: Sequence[frozenset[int]] | None,
                 codes: Any) -> tuple[list[list[int]], list[list[float]]]:
        if self.recommender.num_items != codes.num_items:
            self.recommender.use_codes(codes)  # the catalogue grew: between two searches, never during one
        return _search_lists(self.recommender, histories, exclude, self.top_k, self.beam_size)

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class SearchProcessSpec:
    """What a search process loads: the run's model, its catalogue (the registry) and settings."""

    run: str
    registry: str
    device: str
    top_k: int
    beam_size: int
    threads: int = 0
    niceness: int = 0
    idle: bool = False


def yield_cpu(niceness: int, idle: bool, thread_id: int = 0) -> None:
    """Lower the calling process's (``thread_id`` 0) or one thread's CPU priority, so that on a
    busy machine the server's event loop — every cached read — runs first. ``idle`` puts it in
    Linux's SCHED_IDLE class: it runs only when nothing else wants the core, and a waking request
    handler preempts it at once (a niced task keeps the core for the rest of its time slice, which
    on 2 cores put milliseconds on the cached reads' p99). Threads it starts later inherit it.
    Where the platform refuses, a warning is logged and the search runs at normal priority. Not for a
    thread of the server: starved while holding the GIL, it would stall the event loop."""
    try:
        if idle and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(thread_id, os.SCHED_IDLE, os.sched_param(0))
        elif niceness and hasattr(os, "setpriority"):  # on Linux a thread id is a "process" to setpriority
            os.setpriority(os.PRIO_PROCESS, thread_id, os.getpriority(os.PRIO_PROCESS, thread_id) + niceness)
    except OSError as error:
        log.warning("live: cannot lower the search's CPU priority (%s)", error)


def _search_process_main(connection: Any, spec: SearchProcessSpec) -> None:
    """The search process: load the model, say ready, then answer batches until told to stop.
    A batch is ``(histories, exclude, catalogue size)``: the search runs over the first
    ``catalogue size`` items of the catalogue (the base and the registry), as the server knows it."""
    try:
        yield_cpu(spec.niceness, spec.idle)  # before torch starts its threads, which inherit it
        import torch

        from alignrec.llm.finetuned import FinetunedRun
        from alignrec.llm.recommender import load_recommender
        from alignrec.serve.items import ItemRegistry
        from alignrec.tokenizer.codes import ItemCodes

        if spec.threads:
            torch.set_num_threads(spec.threads)
        recommender, _ = load_recommender(spec.run, spec.device, "float32")
        registry = ItemRegistry(spec.registry, FinetunedRun.locate(spec.run).codes())
    except Exception as error:  # noqa: BLE001 - reported to the server, which refuses to start
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready", {"version": recommender.version, "max_history": recommender.format.max_history}))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return  # the server went away
        if message is None:
            return
        histories, exclude, size = message
        try:
            if recommender.num_items != size:
                codes, _ = registry.extended_codes()
                if codes.num_items < size:
                    raise RuntimeError(f"the server's catalogue has {size} items, the registry {codes.num_items}")
                ids = list(codes.item_ids or [])[:size]
                recommender.use_codes(ItemCodes(codes.codes[:size], list(codes.codebook_sizes), ids))
            connection.send(("ok", _search_lists(recommender, histories, exclude, spec.top_k, spec.beam_size)))
        except Exception as error:  # noqa: BLE001 - this batch fails, the process serves the next
            connection.send(("error", f"{type(error).__name__}: {error}"))


class ProcessSearch:
    """The search in a child process of its own (spawned): its Python never holds the server's
    GIL, so the event loop — every cached read — does not wait for it. Used by the batcher's
    worker thread, which waits on a pipe (without the GIL) while the child searches."""

    def __init__(self, spec: SearchProcessSpec, start_timeout_s: float = 600.0):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads and torch state
        self._connection, child = context.Pipe()
        self.process = context.Process(target=_search_process_main, args=(child, spec), name="alignrec-live-search", daemon=True)
        self.process.start()
        child.close()
        if not self._connection.poll(start_timeout_s):
            self.close()
            raise RuntimeError(f"the live search process did not start within {start_timeout_s} s")
        status, payload = self._connection.recv()
        if status != "ready":
            self.close()
            raise RuntimeError(f"the live search process could not load the model: {payload}")
        self.version = payload["version"]
        self.max_history = payload["max_history"]
        self._lock = threading.Lock()

    def __call__(self, histories: Sequence[Sequence[int]], exclude: Sequence[frozenset[int]] | None,
                 codes: Any) -> tuple[list[list[int]], list[list[float]]]:
        with self._lock:
            try:
                self._connection.send(([list(h) for h in histories], exclude, codes.num_items))
                status, payload = self._connection.recv()
            except (EOFError, OSError) as error:
                raise RuntimeError(f"the live search process is gone (exit code {self.process.exitcode}): {error}") from None
        if status != "ok":
            raise RuntimeError(f"live search failed: {payload}")
        return payload

    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self) -> None:
        try:
            self._connection.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self._connection.close()


class LiveModel:
    """The search (:class:`ThreadSearch` or :class:`ProcessSearch`), the growing catalogue, the
    data set's histories and the search settings."""

    def __init__(self, searcher: Any, dataset: Any, registry: ItemRegistry, exclude: str):
        """``registry``: an :class:`ItemRegistry` of this object's own (it is read from any thread
        under this object's lock; the API's registrations use another instance)."""
        from alignrec.serve.precache import build_catalogue

        self.searcher = searcher
        self.version: str = searcher.version
        self.max_history: int = searcher.max_history
        self.dataset = dataset
        self.registry = registry
        self.exclude = resolve_exclude(exclude, dataset.sequences)
        self._base_index = dataset.user_index_of
        self._sequences = dataset.sequences
        self._item_ids_of_base = dataset.item_ids
        self._lock = threading.Lock()  # one catalogue refresh at a time
        self.state = self._state(build_catalogue(dataset, registry))

    @staticmethod
    def _state(catalogue: Catalogue) -> CatalogueState:
        from alignrec.serve.items import catalogue_version

        return CatalogueState(catalogue, catalogue_version(catalogue.codes), {item: n for n, item in enumerate(catalogue.ids)})

    def catalogue_state(self) -> CatalogueState:
        """The current catalogue: items registered since (by any server process) are followed
        here — a ``stat`` of the registry when nothing changed. Any thread; the search switches
        to it before its next batch (:meth:`search`), never during one."""
        from alignrec.serve.precache import build_catalogue

        with self._lock:
            registered = len(self.registry.items())
            if self.state.catalogue.codes.num_items != self.registry.base.num_items + registered:
                self.state = self._state(build_catalogue(self.dataset, self.registry))
                log.info("live: catalogue now %d items (%s)", self.state.catalogue.codes.num_items, self.state.version)
            return self.state

    @property
    def excludes_history(self) -> bool:
        return self.exclude in ("history", "history+request")

    def base_history(self, user_id: str) -> list[str]:
        """The data set's history of a user (item ids, oldest first; empty for a new user)."""
        index = self._base_index.get(user_id)
        if index is None:
            return []
        ids = self._item_ids_of_base
        return [ids[int(i)] for i in self._sequences[index]]

    def knows(self, user_id: str) -> bool:
        return user_id in self._base_index

    def fingerprint_history(self, history: Sequence[str]) -> list[str]:
        """The part of a history an entry's fingerprint covers, as pre-cache computes it: the
        prompt's window — the whole history when it is excluded (it then changes the list)."""
        return list(history) if self.excludes_history else list(history)[-self.max_history :]

    def search(self, jobs: Sequence[LiveJob]) -> list[LiveResult]:
        """One beam search for ``jobs`` (the batcher's worker thread)."""
        state = self.catalogue_state()
        started = time.perf_counter()
        exclude = [job.exclude for job in jobs] if any(job.exclude for job in jobs) else None
        items, scores = self.searcher([job.history for job in jobs], exclude, state.catalogue.codes)
        return [LiveResult(items[row], scores[row], state.catalogue, state.version, started - job.enqueued, len(jobs))
                for row, job in enumerate(jobs)]

    def close(self) -> None:
        self.searcher.close()


class QueueFull(Exception):
    """The live queue is full; ``retry_after_s`` estimates when it will have room."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the live queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class MicroBatcher:
    """A bounded queue of :class:`LiveJob` and one worker thread that runs them in batches.

    The worker takes the oldest job and waits until ``max_batch`` jobs are queued or the oldest
    has waited ``max_wait_s`` (no wait at all when it already has: the worker was busy), then runs
    them as one search. ``submit`` never blocks: with ``max_queue`` jobs waiting it raises
    :class:`QueueFull`. ``threads``: torch's intra-op threads for the searches (0 = as set);
    ``niceness``: added to the worker thread's nice value (:func:`yield_cpu`; Linux schedules
    threads one by one), so that on a busy machine the event loop — every cached read — goes first.
    """

    def __init__(self, search: Callable[[Sequence[LiveJob]], list[Any]], max_batch: int, max_wait_s: float, max_queue: int,
                 threads: int = 0, on_batch: Callable[[int, float], None] | None = None, niceness: int = 0):
        if max_batch < 1 or max_queue < max_batch or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1, max_queue >= max_batch and max_wait_s >= 0 "
                             f"(got {max_batch}, {max_queue}, {max_wait_s})")
        self.search = search
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.threads = threads
        self.on_batch = on_batch
        self.niceness = niceness
        self._jobs: deque[LiveJob] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._batch_seconds = 0.05  # a running estimate of one batch's time (for Retry-After)
        self._thread = threading.Thread(target=self._run, name="alignrec-live", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        """Jobs waiting (not counting the batch being searched)."""
        return len(self._jobs)

    def saturated(self) -> bool:
        """A new job would wait for at least one more whole batch."""
        return len(self._jobs) >= self.max_batch

    def submit(self, job: LiveJob) -> Future:
        with self._condition:
            if self._closed:
                raise RuntimeError("the live batcher is closed")
            if len(self._jobs) >= self.max_queue:
                batches_ahead = math.ceil(len(self._jobs) / self.max_batch) + 1
                raise QueueFull(max(1, math.ceil(batches_ahead * self._batch_seconds)))
            self._jobs.append(job)
            self._condition.notify()
        return job.future

    def close(self) -> None:
        """Stop the worker after the batch in hand; jobs still queued are cancelled."""
        with self._condition:
            self._closed = True
            pending = list(self._jobs)
            self._jobs.clear()
            self._condition.notify_all()
        for job in pending:
            job.future.cancel()

    def _take(self) -> list[LiveJob] | None:
        with self._condition:
            while not self._jobs and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            deadline = self._jobs[0].enqueued + self.max_wait_s
            while len(self._jobs) < self.max_batch and not self._closed:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            if self._closed:
                return None
            return [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]

    def _run(self) -> None:
        if self.niceness:
            yield_cpu(self.niceness, False, threading.get_native_id())  # this thread only
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        while True:
            batch = self._take()
            if batch is None:
                return
            # A job whose client went away (its future cancelled) is not searched.
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = self.search(batch)
            except Exception as error:  # noqa: BLE001 - every waiting request gets the error, the worker lives on
                log.exception("live search failed for a batch of %d", len(batch))
                for job in batch:
                    job.future.set_exception(error)
                continue
            seconds = time.perf_counter() - started
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
            for job, result in zip(batch, results, strict=True):
                job.future.set_result(result)
            if self.on_batch is not None:
                self.on_batch(len(batch), seconds)
