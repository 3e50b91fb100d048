"""``alignrec evaluate``: beam search for the users of a split, scored with :mod:`alignrec.metrics`.

Writes, under ``OUT`` (default ``RUN/evaluate``):

- ``predictions.jsonl``: ``{"user_id", "items": [item ids], "scores": [log-probs]}`` per user,
  the format ``alignrec evaluate-predictions`` reads (so a file can be re-scored later);
- ``metrics.json``: HR@K / NDCG@K over the evaluated users, the evaluator's counts, timing;
- ``config.json``: the resolved config, seed, input hashes, model version.

Two protocols (``exclude``): ``none`` (the main one: every item competes, as the papers'
tables), ``history`` ("seen items excluded", the classic models' secondary protocol: no item the
user interacted with before the target — training items and, for the test split, the
validation item — can be recommended; excluded *inside* the beam search, so the beams go to
other items), or ``both``: the main protocol's files exactly as with ``none``, plus
``predictions_seen_excluded.jsonl`` and a ``seen_excluded`` section in metrics.json (its shards
under ``OUT/shards_seen_excluded``).

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

Several processes (``torchrun --nproc-per-node N -m alignrec.cli evaluate ...``, or ``accelerate
launch``; one machine or several): the shards are split among the ranks by
:mod:`alignrec.distributed` (shard ``i`` is searched by rank ``i % world_size``). Rank 0 checks
the manifest (or writes a new one) before the others look at any shard; each rank searches those
of its shards that have no trusted file yet and writes their files; after a barrier rank 0
assembles ``predictions.jsonl`` and ``metrics.json`` from every shard file. A killed job is
resumed by running it again, with any number of processes: the shards do not depend on who
searched them. ``elapsed_s`` stays the sum of the shards' search seconds, so ``users_per_s`` is
the rate of one process; ``wall_s`` is this invocation's time and ``world_size`` its processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from alignrec.config import write_run_record
from alignrec.distributed import Ranks, process_group, shard_bounds
from alignrec.errors import InputError
from alignrec.layout import stage_dir
from alignrec.metrics import evaluate_rankings

if TYPE_CHECKING:  # the model code (torch, transformers) loads only when a command runs
    from alignrec.llm.beam_search import BeamSearchOutput
    from alignrec.llm.recommender import GenerativeRecommender

SearchMethod = Literal["fast", "reference"]  # keys of alignrec.llm.recommender.SEARCH_METHODS
from alignrec.utils.io import atomic_write_json, atomic_write_text, read_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

MANIFEST = "manifest.json"  # in OUT/shards: the settings the shards were searched with
SEEN_EXCLUDED = "seen_excluded"  # the name of the second protocol's files and metrics section


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
    ranker: Literal["model", "beam", "item", "fused"] = field(
        default="model",
        metadata={"help": "how to rank: model (what the fine-tuned model records: beam unless it was trained with the item "
                  "head and validation chose item or fused), beam (constrained beam search), item (the item head over "
                  "every item), fused (beam + item head, the model's fusion weight)"},
    )
    exclude: Literal["none", "history", "both"] = field(
        default="none",
        metadata={"help": "protocol: none (every item competes), history (items the user interacted with before the "
                  "target are excluded inside the beam search: 'seen items excluded'), or both (the main files as with "
                  "none, plus predictions_seen_excluded.jsonl and metrics.json's seen_excluded section)"},
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
    seen: list[set[int]] | None = None  # U sets: every item before the target (the seen-excluded protocol)

    def digest(self, start: int = 0, stop: int | None = None) -> str:
        stop = len(self.rows) if stop is None else stop
        return rows_digest(self.user_ids[start:stop], self.histories[start:stop], self.targets[start:stop])


def seen_items(dataset: Any, split: str, user_indices: Sequence[int]) -> list[set[int]]:
    """Per user, every item of the sequence before the split's target (leave-one-out: the test
    target is the last item, the validation target the one before): the training items, plus the
    validation item for the test split, less the target itself where it repeats an earlier item —
    exactly what the classic models' seen-excluded ranking removes (``collab.trainer.seen_mask``)."""
    drop = 1 if split == "test" else 2
    sequences = dataset.sequences
    return [set(int(i) for i in sequences[int(u)][:-drop]) - {int(sequences[int(u)][-drop])} for u in user_indices]


def search_settings(config: EvaluateConfig, recommender: GenerativeRecommender, users: EvaluationUsers,
                    users_in_split: int, seen_excluded: bool = False) -> dict[str, Any]:
    """What the shards' contents depend on; a resumed evaluation must match it exactly."""
    dtype = next(recommender.model.parameters()).dtype
    # (only the seen-excluded shards record the protocol: the main shards' manifests are as before)
    return ({"exclude": "history"} if seen_excluded else {}) | {
        "model_version": recommender.version,
        "split": config.split,
        "users": len(users.rows),
        "users_in_split": users_in_split,
        "rows_sha256": users.digest(),
        "method": config.method,
        "beam_size": config.beam_size,
        "top_k": config.top_k,
        "batch_size": config.batch_size,  # batches are formed within a shard; padding can move the last bits
        **ranking(config, recommender),
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


def ranker_of(config: EvaluateConfig, recommender: GenerativeRecommender) -> str:
    """The ranker this evaluation uses: the configured one, or the model's."""
    return recommender.settings.ranker if config.ranker == "model" else config.ranker


def ranking(config: EvaluateConfig, recommender: GenerativeRecommender) -> dict[str, Any]:
    """How the lists are ranked, for the shard manifests and metrics.json; empty for beam search (as
    before the item head existed, so older shards stay valid)."""
    ranker = ranker_of(config, recommender)
    if ranker == "beam":
        return {}
    return {"ranker": ranker} | ({"fusion_weight": recommender.settings.fusion_weight} if ranker == "fused" else {})


def ranker_name(config: EvaluateConfig, recommender: GenerativeRecommender) -> str:
    ranker = ranker_of(config, recommender)
    return {"beam": "beam search", "item": "item head ranking",
            "fused": f"beam search fused with the item head (weight {recommender.settings.fusion_weight:g})"}[ranker]


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def search_shards(config: EvaluateConfig, recommender: GenerativeRecommender, users: EvaluationUsers,
                  shard_dir: Path, item_ids: Sequence[str], ranks: Ranks,
                  seen_excluded: bool = False) -> tuple[list[int], list[int]]:
    """Search this rank's shards (shard i is rank i % world_size's) that have no trusted file yet,
    writing each one's file when it is done; returns (reused, searched) shard numbers."""
    bounds = shard_bounds(len(users.rows), config.shard_users)
    mine = list(ranks.shards(len(bounds)))
    reused, todo = [], []
    for index in mine:
        start, stop = bounds[index]
        shard = read_shard(shard_path(shard_dir, index), index, users.user_ids[start:stop], users.digest(start, stop))
        (todo if shard is None else reused).append(index)
    where = f"rank {ranks.rank}/{ranks.world_size}: " if ranks.distributed else ""
    total = sum(bounds[i][1] - bounds[i][0] for i in mine)
    done = total - sum(bounds[i][1] - bounds[i][0] for i in todo)
    if reused:
        log.info("%sresuming: %d of %d shards finished earlier, %d users left", where, len(reused), len(mine), total - done)
    searched_by = {"host": socket.gethostname(), "pid": os.getpid(), "rank": ranks.rank, "world_size": ranks.world_size}
    started, done_at_start = time.perf_counter(), done
    for index in todo:
        start, stop = bounds[index]
        began = time.perf_counter()
        exclude = users.seen[start:stop] if seen_excluded and users.seen is not None else None
        output = recommender.recommend(users.histories[start:stop], config.top_k, config.beam_size, config.batch_size,
                                       config.method, exclude=exclude, ranker=ranker_of(config, recommender))
        seconds = time.perf_counter() - began
        lines = prediction_lines(output, users.user_ids[start:stop], item_ids)
        write_shard(shard_path(shard_dir, index), index, lines, users.digest(start, stop), seconds, searched_by)
        done += stop - start
        rate = (done - done_at_start) / (time.perf_counter() - started)
        log.info("%sshard %d/%d: %d/%d users done, %.2f users/s, ETA %s", where, index + 1, len(bounds), done, total, rate,
                 _duration((total - done) / rate))
    return reused, todo


def evaluate(
    config: EvaluateConfig,
    model: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    recommender: GenerativeRecommender | None = None,
    resume: bool = True,
    on_mismatch: Literal["refuse", "restart"] = "refuse",
) -> dict[str, Any]:
    """Run the evaluation; returns the metrics report (also written to ``OUT/metrics.json``).

    ``resume``: keep the finished shards under ``OUT/shards`` that match this run (False: discard
    them); ``on_mismatch``: what to do with an unfinished evaluation of other settings there
    (see the module docstring). Under a launcher (``WORLD_SIZE`` > 1) every rank calls this, and
    every rank returns the report rank 0 wrote.
    """
    with process_group(config.device) as ranks:
        return _evaluate(ranks, config, model, data, out, recommender, resume, on_mismatch)


def _evaluate(ranks: Ranks, config: EvaluateConfig, model: str | Path, data: str | Path | None, out: str | Path | None,
              recommender: GenerativeRecommender | None, resume: bool, on_mismatch: str) -> dict[str, Any]:
    from alignrec.data.dataset import load_dataset
    from alignrec.llm.finetuned import FinetunedRun
    from alignrec.llm.recommender import load_recommender

    paths = FinetunedRun.locate(model)
    dataset = load_dataset(data if data is not None else paths.dataset_dir)
    # Check the codes against the data set before loading the model (seconds to minutes).
    paths.check_catalogue(paths.codes(), dataset)
    if recommender is None:
        recommender, paths = load_recommender(model, ranks.device(config.device), config.dtype,
                                              llm_layers=config.llm_layers or None)
    paths.check_catalogue(recommender.codes, dataset)
    out_dir = Path(out) if out is not None else stage_dir(paths.run_dir, "evaluate")

    split = dataset.split(config.split)
    rows = evaluation_rows(config, len(split))
    if len(rows) == 0:
        raise InputError(f"{dataset.path}: the {config.split} split has no users")
    user_ids = dataset.user_ids
    users = EvaluationUsers(rows, [user_ids[int(split.user_index[r])] for r in rows],
                            [split.history(int(r)).tolist() for r in rows], split.targets[rows])
    if config.exclude != "none":
        users.seen = seen_items(dataset, config.split, [int(split.user_index[r]) for r in rows])
    # (shard folder, seen items excluded) of each protocol; the first one's files are the main ones
    protocols = {"none": [("shards", False)], "history": [("shards", True)],
                 "both": [("shards", False), (f"shards_{SEEN_EXCLUDED}", True)]}[config.exclude]
    began = time.perf_counter()
    bounds = shard_bounds(len(rows), config.shard_users)
    reused_total = []
    for folder, seen_excluded in protocols:
        settings = search_settings(config, recommender, users, len(split), seen_excluded)
        shard_dir = out_dir / folder
        # Rank 0 keeps, replaces or refuses the shards there before any rank looks at one.
        ranks.from_main(lambda: open_shards(shard_dir, settings, resume, on_mismatch))  # noqa: B023 - called at once
        if ranks.is_main:
            log.info("%s (%s) for %d %s users in %d shard(s), beam %d, top %d%s%s", ranker_name(config, recommender),
                     config.method, len(rows), config.split, len(bounds), config.beam_size, config.top_k,
                     ", seen items excluded" if seen_excluded else "",
                     f", {ranks.world_size} processes" if ranks.distributed else "")
        reused, _ = search_shards(config, recommender, users, shard_dir, dataset.item_ids, ranks, seen_excluded)
        reused_total.append(sum(ranks.gather(len(reused))))  # also the barrier: every rank's shard files are written
    report = ranks.from_main(lambda: _write_results(config, recommender, dataset, users, len(split), protocols, bounds,
                                                    out_dir, paths, reused_total, ranks, began))
    return report


def _assemble(config: EvaluateConfig, dataset: Any, users: EvaluationUsers, bounds: list[tuple[int, int]],
              shard_dir: Path, predictions: Path) -> tuple[dict[str, Any], float]:
    """One protocol's predictions file from its shard files; (metrics, summed search seconds)."""
    shards = []
    for index, (start, stop) in enumerate(bounds):
        shard = read_shard(shard_path(shard_dir, index), index, users.user_ids[start:stop], users.digest(start, stop))
        if shard is None:
            raise RuntimeError(f"{shard_path(shard_dir, index)}: missing or untrusted after its search")
        shards.append(shard)
    lines = [line for shard in shards for line in shard.lines]
    atomic_write_text(predictions, "\n".join(lines) + "\n")
    index_of = dataset.item_index_of
    lists = [[index_of[item] for item in json.loads(line)["items"]] for line in lines]
    return evaluate_rankings(lists, users.targets, dataset.num_items, config.ks).to_dict(), sum(s.elapsed_s for s in shards)


def _write_results(config: EvaluateConfig, recommender: GenerativeRecommender, dataset: Any, users: EvaluationUsers,
                   users_in_split: int, protocols: list[tuple[str, bool]], bounds: list[tuple[int, int]],
                   out_dir: Path, paths: Any, reused: list[int], ranks: Ranks, began: float) -> dict[str, Any]:
    """Rank 0, once every shard is written: predictions.jsonl and metrics.json from the shard files
    (and, with ``exclude=both``, predictions_seen_excluded.jsonl and metrics.json's seen_excluded)."""
    report, elapsed = _assemble(config, dataset, users, bounds, out_dir / protocols[0][0], out_dir / "predictions.jsonl")
    report.update(
        {
            "split": config.split,
            "users_in_split": users_in_split,
            "sampled": bool(len(users.rows) < users_in_split),
            "method": config.method,
            "beam_size": config.beam_size,
            "top_k": config.top_k,
            "ranker": ranker_of(config, recommender),
            "fusion_weight": recommender.settings.fusion_weight if ranker_of(config, recommender) == "fused" else None,
            "model_version": recommender.version,
            "elapsed_s": round(elapsed, 3),
            "users_per_s": round(len(users.rows) / elapsed, 3) if elapsed > 0 else None,
            "wall_s": round(time.perf_counter() - began, 3),
            "world_size": ranks.world_size,
            "shards": {"users_per_shard": config.shard_users or len(users.rows), "count": len(bounds), "reused": reused[0]},
            "predictions": str(out_dir / "predictions.jsonl"),
        }
    )
    if config.exclude != "none":
        report["exclude"] = config.exclude  # (absent with none: the main protocol's report is as before)
    if len(protocols) > 1:
        predictions = out_dir / f"predictions_{SEEN_EXCLUDED}.jsonl"
        seen, seen_elapsed = _assemble(config, dataset, users, bounds, out_dir / protocols[1][0], predictions)
        report[SEEN_EXCLUDED] = {"metrics": seen["metrics"], "counts": seen["counts"], "elapsed_s": round(seen_elapsed, 3),
                                 "shards_reused": reused[1], "predictions": str(predictions)}
    atomic_write_json(out_dir / "metrics.json", report)
    for folder, seen_excluded in protocols:
        settings = search_settings(config, recommender, users, users_in_split, seen_excluded)
        atomic_write_json(out_dir / folder / MANIFEST, {"settings": settings, "complete": True})
    write_run_record(
        out_dir,
        config,
        stage="evaluate",
        seed=config.seed,
        inputs={"item_codes": paths.finetune_dir / "item_codes.parquet", "model_config": paths.model_dir / "config.json", "test_split": dataset.path / "splits" / f"{config.split}.parquet"},
        extra={"model_version": recommender.version, "model": str(paths.model_dir)},
    )
    return report
