"""``alignrec evaluate``: beam search for the users of a split, scored with :mod:`alignrec.eval`.

Writes, under ``OUT`` (default ``RUN/eval``):

- ``predictions.jsonl``: ``{"user_id", "items": [item ids], "scores": [log-probs]}`` per user,
  the format ``alignrec evaluate-predictions`` reads (so a file can be re-scored later);
- ``metrics.json``: HR@K / NDCG@K over the evaluated users, the evaluator's counts, timing;
- ``config.json``: the resolved config, seed, input hashes, model version.

With ``--users N`` a seeded sample of N users is evaluated (for quick runs); metrics.json says
so. Re-scoring that file with ``evaluate-predictions`` counts the unsampled users as misses.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from alignrec.config import write_run_record
from alignrec.errors import InputError
from alignrec.eval import evaluate_rankings

if TYPE_CHECKING:  # the model code (torch, transformers) loads only when a command runs
    from alignrec.infer.recommender import GenerativeRecommender
    from alignrec.tokenizer.codes import ItemCodes

SearchMethod = Literal["fast", "reference"]  # keys of alignrec.infer.recommender.SEARCH_METHODS
from alignrec.utils.io import atomic_write_json, atomic_write_text
from alignrec.utils.log import get_logger

log = get_logger(__name__)


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

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if not 1 <= self.top_k <= self.beam_size:
            raise ValueError(f"top_k must be between 1 and beam_size ({self.beam_size}), got {self.top_k}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.llm_layers < 0:
            raise ValueError(f"llm_layers must be >= 0, got {self.llm_layers}")
        if self.users is not None and self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive cut-offs, got {self.ks}")
        if max(self.ks) > self.top_k:
            raise ValueError(f"the largest K ({max(self.ks)}) exceeds top_k ({self.top_k}): lists would be too short")


def check_catalogue(codes: ItemCodes, dataset: Any, where: str) -> None:
    """The model's item codes must describe exactly the data set's items, in the same order."""
    if codes.num_items != dataset.num_items:
        raise InputError(
            f"{where}: the model has codes for {codes.num_items} items but the data set {dataset.path} has "
            f"{dataset.num_items}; was the model trained on this data set?"
        )
    ids = codes.item_ids
    if ids is not None and list(ids) != list(dataset.item_ids):
        first = next(i for i, (a, b) in enumerate(zip(ids, dataset.item_ids, strict=True)) if a != b)
        raise InputError(
            f"{where}: item {first} is {ids[first]!r} in the model's item codes but {dataset.item_ids[first]!r} "
            f"in {dataset.path}; the codes belong to another data set"
        )


def evaluate(
    config: EvaluateConfig,
    model: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    recommender: GenerativeRecommender | None = None,
) -> dict[str, Any]:
    """Run the evaluation; returns the metrics report (also written to ``OUT/metrics.json``)."""
    from alignrec.data.dataset import load_dataset
    from alignrec.infer.recommender import load_recommender, resolve_finetune

    from alignrec.tokenizer.codes import ItemCodes

    paths = resolve_finetune(model)
    dataset = load_dataset(data if data is not None else paths.dataset_dir)
    # Check the codes against the data set before loading the model (seconds to minutes).
    check_catalogue(ItemCodes.load(paths.finetune_dir), dataset, str(paths.finetune_dir))
    if recommender is None:
        recommender, paths = load_recommender(model, config.device, config.dtype, llm_layers=config.llm_layers or None)
    check_catalogue(recommender.codes, dataset, str(paths.finetune_dir))
    out_dir = Path(out) if out is not None else paths.run_dir / "eval"

    split = dataset.split(config.split)
    rows = np.arange(len(split))
    if config.users is not None and config.users < len(split):
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(len(split), size=config.users, replace=False))
    if len(rows) == 0:
        raise InputError(f"{dataset.path}: the {config.split} split has no users")
    histories = [split.history(int(r)).tolist() for r in rows]
    log.info("beam search (%s) for %d %s users, beam %d, top %d", config.method, len(rows), config.split, config.beam_size, config.top_k)
    started = time.perf_counter()
    output = recommender.recommend(histories, config.top_k, config.beam_size, config.batch_size, config.method)
    elapsed = time.perf_counter() - started

    item_ids = dataset.item_ids
    user_ids = dataset.user_ids
    lists: list[list[int]] = []
    lines = []
    for position, row in enumerate(rows):
        items = [int(i) for i in output.items[position].tolist() if i >= 0]
        scores = [round(float(s), 6) for s in output.scores[position, : len(items)].tolist()]
        lists.append(items)
        record = {"user_id": user_ids[int(split.user_index[row])], "items": [item_ids[i] for i in items], "scores": scores}
        lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(out_dir / "predictions.jsonl", "\n".join(lines) + "\n")

    result = evaluate_rankings(lists, split.targets[rows], dataset.num_items, config.ks)
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
            "predictions": str(out_dir / "predictions.jsonl"),
        }
    )
    atomic_write_json(out_dir / "metrics.json", report)
    write_run_record(
        out_dir,
        config,
        stage="evaluate",
        seed=config.seed,
        inputs={"item_codes": paths.finetune_dir / "item_codes.parquet", "model_config": paths.model_dir / "config.json", "test_split": dataset.path / "splits" / f"{config.split}.parquet"},
        extra={"model_version": recommender.version, "model": str(paths.model_dir)},
    )
    return report
