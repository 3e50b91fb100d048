"""``alignrec evaluate``: beam search for the users of a split, scored with :mod:`alignrec.metrics`.

Writes, under ``OUT`` (default ``RUN/evaluate``):

- ``predictions.jsonl``: ``{"user_id", "items": [item ids], "scores": [log-probs]}`` per user,
  the format ``alignrec evaluate-predictions`` reads (so a file can be re-scored later);
- ``metrics.json``: HR@K / NDCG@K over the evaluated users, the evaluator's counts, timing;
- ``config.json``: the resolved config, seed, input hashes, model version.

With ``--users N`` a seeded sample of N users is evaluated (for quick runs); metrics.json says
so. Re-scoring that file with ``evaluate-predictions`` counts the unsampled users as misses.

Sharded and resumable (hours of beam search on a CPU): the users are searched in shards of
``shard_users`` (0 = one shard). Each finished shard is written atomically to
``OUT/shards/NNNNN.jsonl`` — a header line (shard number, its users, a hash of their rows, a
hash of its prediction lines, the seconds its search took) and then its prediction lines —
after ``OUT/shards/manifest.json`` has recorded what the shards depend on (model version,
search settings, dtype and device, shard size, a hash of every evaluated user's id, history and
target). Run again on the same OUT, the evaluation keeps every shard whose file checks out
against the manifest and its header and searches only the others (a truncated or altered shard
file is logged and searched again). When the recorded settings differ from this run's, an
*unfinished* evaluation is refused with the differences named (``on_mismatch="refuse"``, the
command's default; ``alignrec evaluate --restart`` discards the shards) or discarded and
started over (``on_mismatch="restart"``: the pipeline, whose stage keys already decided that
these settings are the current ones); a *finished* one is simply replaced. ``predictions.jsonl`` and ``metrics.json`` are assembled from the shards
at the end, in user order, so they are the same whether or not the run was interrupted (the
shards stay, so a rerun re-scores without searching).

Timing across a resume: ``elapsed_s`` in metrics.json is the sum of the shards' recorded search
seconds (each measured when that shard was searched, in whichever run), and ``users_per_s`` is
the evaluated users over that sum: the search rate, as an uninterrupted run would report it.
``shards`` says how many shards there were and how many this invocation reused.

Several processes (``workers``, or ``alignrec evaluate --join`` from another shell): a worker
claims a shard before searching it by writing ``OUT/shards/NNNNN.claim`` (its pid, process start
time and host), deciding under an exclusive lock on ``OUT/shards/claims.lock``; it takes the first
shard that is neither finished nor claimed by a live worker, and removes the claim once the shard
file is written. A claim whose process has exited (killed, crashed; the pid gone or reused) is
taken over; one from another host counts as live while its file keeps being touched (every
``HEARTBEAT_S`` during a search, abandoned after ``STALE_AFTER_S``). With ``workers`` N > 1 the
evaluation starts N - 1 helper processes (``spawn``), each loading the model itself and using
``torch threads // N`` threads, as does the evaluation's own process; that process waits for
the shards others are still searching and assembles the files, so they are the same whatever
searched which shard. Each shard header names the process that searched it (``searched_by``).
``elapsed_s`` stays the sum of the shards' search seconds, so ``users_per_s`` is the rate of one
worker; ``wall_s`` is this invocation's time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from alignrec.config import write_run_record
from alignrec.errors import InputError
from alignrec.layout import stage_dir
from alignrec.metrics import evaluate_rankings

if TYPE_CHECKING:  # the model code (torch, transformers) loads only when a command runs
    from alignrec.llm.beam_search import BeamSearchOutput
    from alignrec.llm.recommender import GenerativeRecommender

SearchMethod = Literal["fast", "reference"]  # keys of alignrec.llm.recommender.SEARCH_METHODS
from alignrec.utils.io import atomic_write_json, atomic_write_text, owner_alive, process_owner, read_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

MANIFEST = "manifest.json"  # in OUT/shards: the settings the shards were searched with
CLAIMS_LOCK = "claims.lock"  # in OUT/shards: held while a worker picks its next shard
HEARTBEAT_S = 60.0  # a worker touches its claim this often while it searches the shard
STALE_AFTER_S = 600.0  # another host's claim untouched for this long is taken over
WAIT_S = 2.0  # how often a worker with nothing left to claim looks again


@dataclass
class EvaluateConfig:
    """Settings of ``alignrec evaluate``."""

    beam_size: int = field(default=20, metadata={"help": "beams per user (also the most items a list can hold)"})
    top_k: int = field(default=10, metadata={"help": "items per user in the predictions (<= beam size)"})
    batch_size: int = field(default=16, metadata={"help": "users per beam-search batch"})
    split: Literal["valid", "test"] = field(default="test", metadata={"help": "which split's users to evaluate"})
    users: int | None = field(default=None, metadata={"help": "evaluate a seeded sample of this many users (default: all)"})
    seed: int = field(default=0, metadata={"help": "seed of the --users sample"})
    ks: list[int] = field(default_factory=lambda: [1, 5, 10], metadata={"help": "cut-offs K of HR@K / NDCG@K"})
    method: SearchMethod = field(default="fast", metadata={"help": "beam search: fast (batched, KV cache) or reference (HF generate)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "model weights dtype (auto: bfloat16 on a GPU that supports it, else float32)"}
    )
    llm_layers: int = field(
        default=0, metadata={"help": "expected decoder depth of the fine-tuned model (0 = as saved; a mismatch is an error)"}
    )
    shard_users: int = field(
        default=2000,
        metadata={"help": "users per shard; each finished shard is saved under OUT/shards, so a killed evaluation "
                  "resumes after the last one (0 = one shard)"},
    )
    workers: int = field(
        default=1,
        metadata={"help": "processes searching shards at once on this machine, each with torch threads // workers "
                  "threads (more can join from another shell: alignrec evaluate --join); the lists do not depend on it"},
    )

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if not 1 <= self.top_k <= self.beam_size:
            raise ValueError(f"top_k must be between 1 and beam_size ({self.beam_size}), got {self.top_k}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.llm_layers < 0:
            raise ValueError(f"llm_layers must be >= 0, got {self.llm_layers}")
        if self.shard_users < 0:
            raise ValueError(f"shard_users must be >= 0 (0 = one shard), got {self.shard_users}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.users is not None and self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive cut-offs, got {self.ks}")
        if max(self.ks) > self.top_k:
            raise ValueError(f"the largest K ({max(self.ks)}) exceeds top_k ({self.top_k}): lists would be too short")


def evaluation_rows(config: EvaluateConfig, split_size: int) -> np.ndarray:
    """Rows of the split to evaluate: all of them, or the seeded sample of ``config.users``."""
    rows = np.arange(split_size)
    if config.users is not None and config.users < split_size:
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(split_size, size=config.users, replace=False))
    return rows


def shard_bounds(num_rows: int, shard_users: int) -> list[tuple[int, int]]:
    """``(start, stop)`` positions of each shard in the evaluated rows (``shard_users`` 0 = one shard)."""
    size = shard_users or max(num_rows, 1)
    return [(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]


def rows_digest(user_ids: Sequence[str], histories: Sequence[Sequence[int]], targets: Sequence[int]) -> str:
    """sha256 of what the search and the scoring read for these users: ids, histories, targets."""
    digest = hashlib.sha256()
    for user, history, target in zip(user_ids, histories, targets, strict=True):
        digest.update(json.dumps([user, list(history), int(target)]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class EvaluationUsers:
    """The users an evaluation covers, in output order."""

    rows: np.ndarray  # (U,) rows of the split
    user_ids: list[str]  # (U,)
    histories: list[list[int]]  # U histories of item indices, oldest first
    targets: np.ndarray  # (U,) item indices

    def digest(self, start: int = 0, stop: int | None = None) -> str:
        stop = len(self.rows) if stop is None else stop
        return rows_digest(self.user_ids[start:stop], self.histories[start:stop], self.targets[start:stop])


def search_settings(config: EvaluateConfig, recommender: GenerativeRecommender, users: EvaluationUsers,
                    users_in_split: int) -> dict[str, Any]:
    """What the shards' contents depend on; a resumed evaluation must match it exactly."""
    dtype = next(recommender.model.parameters()).dtype
    return {
        "model_version": recommender.version,
        "split": config.split,
        "users": len(users.rows),
        "users_in_split": users_in_split,
        "rows_sha256": users.digest(),
        "method": config.method,
        "beam_size": config.beam_size,
        "top_k": config.top_k,
        "batch_size": config.batch_size,  # batches are formed within a shard; padding can move the last bits
        "shard_users": config.shard_users,
        "dtype": str(dtype).removeprefix("torch."),
        "device": recommender.device.type,
    }


def _differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [f"{key} {recorded.get(key)!r} (shards) vs {current.get(key)!r} (now)"
            for key in current if recorded.get(key) != current[key]]


def open_shards(shard_dir: Path, settings: dict[str, Any], resume: bool, on_mismatch: str) -> None:
    """Make ``shard_dir`` hold shards of exactly ``settings``: keep matching ones (when resuming),
    discard others, or refuse to discard an unfinished evaluation (see the module docstring)."""
    manifest_path = shard_dir / MANIFEST
    if shard_dir.exists() and resume:
        if not manifest_path.is_file():
            log.warning("%s: shard files without a manifest (killed before its first write?); starting over", shard_dir)
        else:
            recorded = read_json(manifest_path)
            differences = _differences(recorded.get("settings") or {}, settings)
            if not differences:
                return
            if not recorded.get("complete") and on_mismatch == "refuse":
                raise InputError(
                    f"{shard_dir}: an unfinished evaluation with other settings is here: {'; '.join(differences)}. "
                    "Run with the same settings and model to continue it, or pass --restart to discard its shards "
                    "(or choose another --out)"
                )
            log.warning("%s: discarding the %s evaluation's shards (%s)", shard_dir,
                        "finished" if recorded.get("complete") else "unfinished", "; ".join(differences))
    if shard_dir.exists():
        shutil.rmtree(shard_dir)
    atomic_write_json(manifest_path, {"settings": settings, "complete": False})


def shard_path(shard_dir: Path, index: int) -> Path:
    return shard_dir / f"{index:05d}.jsonl"


def write_shard(path: Path, index: int, lines: list[str], digest: str, seconds: float,
                searched_by: dict[str, Any] | None = None) -> None:
    header = {"shard": index, "users": len(lines), "rows_sha256": digest,
              "predictions_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(), "elapsed_s": round(seconds, 3),
              "searched_by": searched_by}
    atomic_write_text(path, "\n".join([json.dumps(header), *lines]) + "\n")


@dataclass
class Shard:
    lines: list[str]  # the shard's predictions.jsonl lines, in user order
    elapsed_s: float  # seconds its search took, when it was searched


def read_shard(path: Path, index: int, user_ids: Sequence[str], digest: str) -> Shard | None:
    """A finished shard, or None (logged) when its file is missing or does not check out: torn,
    truncated, edited, or written for other users."""
    if not path.is_file():
        return None
    try:
        return parse_shard(path, index, user_ids, digest)
    except ValueError as error:
        log.warning("%s: not trusted (%s); searching this shard again", path, error)
        return None


def parse_shard(path: Path, index: int, user_ids: Sequence[str], digest: str) -> Shard:
    """Read a shard file written by :func:`write_shard`; ValueError says why it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"unreadable: {error.strerror}") from None
    if not text.endswith("\n"):
        raise ValueError("the last line is incomplete")
    header_line, *lines = text.rstrip("\n").split("\n")
    try:
        header = json.loads(header_line)
        users = [json.loads(line)["user_id"] for line in lines]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"a line is not a prediction record ({error})") from None
    if not isinstance(header, dict) or not isinstance(header.get("elapsed_s"), (int, float)):
        raise ValueError("the first line is not a shard header")
    if len(users) != len(user_ids):
        raise ValueError(f"{len(users)} prediction lines for {len(user_ids)} users")
    if users != list(user_ids):
        raise ValueError("the prediction lines are for other users than this shard's")
    expected = {"shard": index, "users": len(user_ids), "rows_sha256": digest,
                "predictions_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}
    wrong = [key for key, value in expected.items() if header.get(key) != value]
    if wrong:
        raise ValueError(f"the header's {', '.join(wrong)} do not match the shard's users or lines")
    return Shard(lines, float(header["elapsed_s"]))


def prediction_lines(output: BeamSearchOutput, user_ids: Sequence[str], item_ids: Sequence[str]) -> list[str]:
    """predictions.jsonl lines of a search's output, one per user in order."""
    lines = []
    for position, user in enumerate(user_ids):
        items = [int(i) for i in output.items[position].tolist() if i >= 0]
        scores = [round(float(s), 6) for s in output.scores[position, : len(items)].tolist()]
        record = {"user_id": user, "items": [item_ids[i] for i in items], "scores": scores}
        lines.append(json.dumps(record, ensure_ascii=False))
    return lines


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def claim_path(shard_dir: Path, index: int) -> Path:
    return shard_dir / f"{index:05d}.claim"


@contextlib.contextmanager
def claims_lock(shard_dir: Path) -> Iterator[None]:
    """The exclusive lock under which a worker picks its next shard (every worker of OUT takes it)."""
    with open(shard_dir / CLAIMS_LOCK, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_held(path: Path, me: dict[str, Any]) -> bool:
    """Whether the claim at ``path`` belongs to another worker that may still be searching its shard."""
    try:
        claim = json.loads(path.read_text(encoding="utf-8"))
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False  # no claim, or one torn by a kill mid-write: nobody's
    owner = claim.get("owner") if isinstance(claim, dict) else None
    if not isinstance(owner, dict) or owner == me:
        return False  # this process holds no claim while it picks one: a leftover of its own is void
    if owner.get("host") != me["host"]:
        return age < STALE_AFTER_S  # another machine's worker: alive while it keeps touching the claim
    return owner_alive(owner)


class ShardFiles:
    """The shard files of one evaluation as a worker sees them: finished shards are read once, and
    a file found untrusted is read (and logged) again only after it has changed."""

    def __init__(self, shard_dir: Path, bounds: list[tuple[int, int]], users: EvaluationUsers):
        self.shard_dir, self.bounds, self.users = shard_dir, bounds, users
        self.shards: list[Shard | None] = [None] * len(bounds)
        self._untrusted: dict[int, tuple[int, int]] = {}  # shard -> (mtime_ns, size) of the file found untrusted

    def take(self, index: int) -> Shard | None:
        """The shard if its file is finished and checks out (kept in ``shards``)."""
        if self.shards[index] is None:
            path = shard_path(self.shard_dir, index)
            try:
                stat = path.stat()
            except OSError:
                return None
            if self._untrusted.get(index) == (stat.st_mtime_ns, stat.st_size):
                return None
            start, stop = self.bounds[index]
            self.shards[index] = read_shard(path, index, self.users.user_ids[start:stop], self.users.digest(start, stop))
            if self.shards[index] is None:
                self._untrusted[index] = (stat.st_mtime_ns, stat.st_size)
        return self.shards[index]

    def users_done(self) -> int:
        return sum(b - a for (a, b), shard in zip(self.bounds, self.shards, strict=True) if shard is not None)

    @property
    def complete(self) -> bool:
        return all(shard is not None for shard in self.shards)


def next_shard(files: ShardFiles, me: dict[str, Any]) -> int | None:
    """Under the claims lock: take in the shards other workers have finished, then claim the first
    shard that is neither finished nor claimed by a live worker; None when none is left."""
    shard_dir = files.shard_dir
    with claims_lock(shard_dir):
        for index in range(len(files.bounds)):
            if files.shards[index] is not None or claim_held(claim_path(shard_dir, index), me):
                continue
            if files.take(index) is not None:
                continue
            atomic_write_json(claim_path(shard_dir, index),
                              {"owner": me, "shard": index, "claimed": _dt.datetime.now(_dt.timezone.utc).isoformat()})
            return index
    return None


@contextlib.contextmanager
def holding(claim: Path) -> Iterator[None]:
    """Keep ``claim`` fresh (its modification time) while its shard is searched; remove it afterwards."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(claim)

    heartbeat = threading.Thread(target=beat, name="alignrec-claim-heartbeat", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        done.set()
        heartbeat.join()
        with contextlib.suppress(FileNotFoundError):
            claim.unlink()


@dataclass
class SearchedShards:
    shards: list[Shard | None]  # per shard, in user order (None: not finished when this worker stopped)
    reused: int  # shards finished before this worker started
    searched: list[int]  # the shards this worker searched
    complete: bool  # every shard finished (always, for a worker that waits for the others)


def search_shards(config: EvaluateConfig, recommender: GenerativeRecommender, users: EvaluationUsers,
                  shard_dir: Path, item_ids: Sequence[str], wait: bool = True) -> SearchedShards:
    """Search the shards nobody else has finished or is searching, one claim at a time (module
    docstring); ``wait``: then wait for the shards other workers are searching (the evaluation's
    own process) rather than stop (a joined worker)."""
    files = ShardFiles(shard_dir, shard_bounds(len(users.rows), config.shard_users), users)
    bounds = files.bounds
    reused = sum(files.take(index) is not None for index in range(len(bounds)))
    if reused:
        log.info("resuming: %d of %d shards finished earlier, %d users left", reused, len(bounds),
                 len(users.rows) - files.users_done())
    me = process_owner()
    searched: list[int] = []
    waiting = False
    started, done_at_start = time.perf_counter(), files.users_done()
    while True:
        index = next_shard(files, me)
        if index is None:
            if not wait or files.complete:
                break
            if not waiting:
                log.info("waiting for the shards other workers are searching (%d users left)",
                         len(users.rows) - files.users_done())
                waiting = True
            time.sleep(WAIT_S)
            continue
        waiting = False
        start, stop = bounds[index]
        with holding(claim_path(shard_dir, index)):
            began = time.perf_counter()
            output = recommender.recommend(users.histories[start:stop], config.top_k, config.beam_size,
                                           config.batch_size, config.method)
            seconds = time.perf_counter() - began
            lines = prediction_lines(output, users.user_ids[start:stop], item_ids)
            write_shard(shard_path(shard_dir, index), index, lines, users.digest(start, stop), seconds, searched_by=me)
        files.shards[index] = Shard(lines, round(seconds, 3))
        searched.append(index)
        done = files.users_done()
        rate = (done - done_at_start) / (time.perf_counter() - started)  # every worker's shards since this one began
        log.info("shard %d/%d: %d/%d users done, %.2f users/s, ETA %s", index + 1, len(bounds), done, len(users.rows),
                 rate, _duration((len(users.rows) - done) / rate))
    return SearchedShards(files.shards, reused, searched, files.complete)


def _helper(config: dict[str, Any], model: str, data: str, out: str, threads: int, deterministic: bool,
            log_level: int) -> None:
    """A helper process of ``workers`` > 1 (started with ``spawn``): join the evaluation at ``out``."""
    import torch

    from alignrec.utils.log import setup_logging

    setup_logging(log_level)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    evaluate(EvaluateConfig(**{**config, "workers": 1}), model, data, out, join=True)


@contextlib.contextmanager
def helper_workers(config: EvaluateConfig, model: str | Path, data: Path, out_dir: Path) -> Iterator[None]:
    """Start ``config.workers - 1`` helper processes on the evaluation at ``out_dir``, and this
    process's share of the torch threads; afterwards wait for them (or stop them on an error)."""
    if config.workers == 1:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    each = max(1, threads // config.workers)
    context = multiprocessing.get_context("spawn")
    helpers = [context.Process(target=_helper, name=f"alignrec-evaluate-{i + 1}", daemon=True,
                               args=(dataclasses.asdict(config), str(model), str(data), str(out_dir), each,
                                     torch.are_deterministic_algorithms_enabled(), log.getEffectiveLevel()))
               for i in range(config.workers - 1)]
    for helper in helpers:
        helper.start()
    log.info("%d workers search the shards, %d torch thread(s) each", config.workers, each)
    torch.set_num_threads(each)
    failed = True
    try:
        yield
        failed = False
    finally:
        torch.set_num_threads(threads)
        for helper in helpers:
            if failed:
                helper.terminate()
            helper.join()
            if not failed and helper.exitcode:
                log.warning("worker process %s exited with code %s; the other workers searched its shards", helper.name,
                            helper.exitcode)


def join_evaluation(config: EvaluateConfig, recommender: GenerativeRecommender, users: EvaluationUsers,
                    settings: dict[str, Any], shard_dir: Path, item_ids: Sequence[str]) -> dict[str, Any]:
    """Search shards of the evaluation in progress at ``shard_dir`` (same settings and model) until
    none is left to claim; the evaluation's own process assembles the files."""
    manifest = shard_dir / MANIFEST
    if not manifest.is_file():
        raise InputError(f"{shard_dir}: no evaluation to join ({MANIFEST} is missing); start it with `alignrec evaluate` "
                         "(without --join) first")
    recorded = read_json(manifest)
    differences = _differences(recorded.get("settings") or {}, settings)
    if differences:
        raise InputError(f"{shard_dir}: the evaluation there has other settings or another model: "
                         f"{'; '.join(differences)}. Join it with the same settings and model")
    report: dict[str, Any] = {"joined": str(shard_dir.parent), "shards_searched": 0, "users_searched": 0}
    if recorded.get("complete"):
        log.info("%s: this evaluation has finished; nothing to join", shard_dir.parent)
        return {**report, "complete": True}
    searched = search_shards(config, recommender, users, shard_dir, item_ids, wait=False)
    bounds = shard_bounds(len(users.rows), config.shard_users)
    report.update(shards_searched=len(searched.searched),
                  users_searched=sum(bounds[i][1] - bounds[i][0] for i in searched.searched), complete=searched.complete)
    log.info("joined %s: searched %d shard(s); nothing left to claim%s", shard_dir.parent, len(searched.searched),
             "" if searched.complete else
             " (other workers are finishing theirs; the evaluation's own process writes the files)")
    return report


def evaluate(
    config: EvaluateConfig,
    model: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    recommender: GenerativeRecommender | None = None,
    resume: bool = True,
    on_mismatch: Literal["refuse", "restart"] = "refuse",
    join: bool = False,
) -> dict[str, Any]:
    """Run the evaluation; returns the metrics report (also written to ``OUT/metrics.json``).

    ``resume``: keep the finished shards under ``OUT/shards`` that match this run (False: discard
    them); ``on_mismatch``: what to do with an unfinished evaluation of other settings there
    (see the module docstring). ``join``: help the evaluation in progress at OUT instead (same
    settings and model): search shards until none is left to claim, write no files but shards,
    and return what this process searched (:func:`join_evaluation`).
    """
    from alignrec.data.dataset import load_dataset
    from alignrec.llm.finetuned import FinetunedRun
    from alignrec.llm.recommender import load_recommender

    paths = FinetunedRun.locate(model)
    dataset = load_dataset(data if data is not None else paths.dataset_dir)
    # Check the codes against the data set before loading the model (seconds to minutes).
    paths.check_catalogue(paths.codes(), dataset)
    if recommender is None:
        recommender, paths = load_recommender(model, config.device, config.dtype, llm_layers=config.llm_layers or None)
    paths.check_catalogue(recommender.codes, dataset)
    out_dir = Path(out) if out is not None else stage_dir(paths.run_dir, "evaluate")

    split = dataset.split(config.split)
    rows = evaluation_rows(config, len(split))
    if len(rows) == 0:
        raise InputError(f"{dataset.path}: the {config.split} split has no users")
    user_ids = dataset.user_ids
    users = EvaluationUsers(rows, [user_ids[int(split.user_index[r])] for r in rows],
                            [split.history(int(r)).tolist() for r in rows], split.targets[rows])
    settings = search_settings(config, recommender, users, len(split))
    shard_dir = out_dir / "shards"
    if join:
        return join_evaluation(config, recommender, users, settings, shard_dir, dataset.item_ids)
    began = time.perf_counter()
    open_shards(shard_dir, settings, resume, on_mismatch)
    shards_total = len(shard_bounds(len(rows), config.shard_users))
    log.info("beam search (%s) for %d %s users in %d shard(s), beam %d, top %d", config.method, len(rows), config.split,
             shards_total, config.beam_size, config.top_k)
    with helper_workers(config, model, dataset.path, out_dir):
        searched = search_shards(config, recommender, users, shard_dir, dataset.item_ids)
    shards = [shard for shard in searched.shards if shard is not None]  # all of them: the search waited for the others
    lines = [line for shard in shards for line in shard.lines]
    elapsed = sum(shard.elapsed_s for shard in shards)
    atomic_write_text(out_dir / "predictions.jsonl", "\n".join(lines) + "\n")

    index_of = dataset.item_index_of
    lists = [[index_of[item] for item in json.loads(line)["items"]] for line in lines]
    result = evaluate_rankings(lists, users.targets, dataset.num_items, config.ks)
    report = result.to_dict()
    report.update(
        {
            "split": config.split,
            "users_in_split": len(split),
            "sampled": bool(len(rows) < len(split)),
            "method": config.method,
            "beam_size": config.beam_size,
            "top_k": config.top_k,
            "model_version": recommender.version,
            "elapsed_s": round(elapsed, 3),
            "users_per_s": round(len(rows) / elapsed, 3) if elapsed > 0 else None,
            "wall_s": round(time.perf_counter() - began, 3),
            "workers": config.workers,
            "shards": {"users_per_shard": config.shard_users or len(rows), "count": shards_total,
                       "reused": searched.reused},
            "predictions": str(out_dir / "predictions.jsonl"),
        }
    )
    atomic_write_json(out_dir / "metrics.json", report)
    atomic_write_json(shard_dir / MANIFEST, {"settings": settings, "complete": True})
    write_run_record(
        out_dir,
        config,
        stage="evaluate",
        seed=config.seed,
        inputs={"item_codes": paths.finetune_dir / "item_codes.parquet", "model_config": paths.model_dir / "config.json", "test_split": dataset.path / "splits" / f"{config.split}.parquet"},
        extra={"model_version": recommender.version, "model": str(paths.model_dir)},
    )
    return report
