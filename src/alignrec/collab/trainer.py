"""The one training loop every collaborative model shares.

Seeded per epoch (batch order, negatives, masks and dropout all derive from ``(seed,
epoch)``), early stopping on a validation metric with patience, a checkpoint after every
epoch (``OUT/checkpoint``: weights, optimizer state, best weights, log) that ``resume=True``
continues from bit-identically, best-model restore, full-ranking evaluation through
:mod:`alignrec.metrics`, and the stage's output files.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignrec.collab.config import CollabConfig, model_config_from_dict
from alignrec.collab.data import TrainingData
from alignrec.collab.export import WEIGHTS_FILE, save_item_embeddings, save_weights
from alignrec.collab.models.base import CollabModel
from alignrec.collab.registry import build_model
from alignrec.config import to_dict, write_run_record
from alignrec.data.dataset import PreparedDataset, Split, load_dataset
from alignrec.errors import InputError
from alignrec.metrics import metrics_from_ranks, ranks_from_scores
from alignrec.utils.io import atomic_directory, atomic_write_json, read_json
from alignrec.utils.log import get_logger, progress_bar

log = get_logger(__name__)

CHECKPOINT_DIR = "checkpoint"
EVAL_KS = (1, 5, 10)
# Settings that may change between a run and its resumption (they do not alter the weights
# produced by the epochs already done).
RESUMABLE_CHANGES = {"epochs", "patience", "max_train_minutes", "eval_batch_size", "threads", "checkpoint_every"}


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    metrics: dict[str, Any]
    log: list[dict[str, Any]]
    model: CollabModel


def default_out_dir(data_dir: str | os.PathLike[str], model: str) -> Path:
    """``RUN/collab/<model>`` for a run folder ``RUN`` (or its ``dataset/`` folder)."""
    run = Path(data_dir)
    if run.name == "dataset" and (run / "manifest.json").exists():
        run = run.parent
    return run / "collab" / model


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (seed, epoch): independent streams per epoch, stable across resumes."""
    high, low = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return (int(high) << 31) ^ int(low)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ----------------------------------------------------------------------------- evaluation


def history_mask(histories: torch.Tensor, targets: torch.Tensor, num_items: int) -> torch.Tensor:
    """(B, I) bool marking the items of each history (padding -1 ignored), never the target."""
    mask = torch.zeros(histories.shape[0], num_items, dtype=torch.bool)
    rows, cols = torch.nonzero(histories >= 0, as_tuple=True)
    mask[rows, histories[rows, cols]] = True
    mask[torch.arange(targets.shape[0]), targets] = False
    return mask


def seen_mask(data: TrainingData, users: np.ndarray, extra_items: np.ndarray | None, targets: torch.Tensor,
              num_items: int) -> torch.Tensor:
    """(B, I) bool marking every training item of each user, plus ``extra_items`` (B,) (-1 = none),
    never the target: the "seen items excluded" ranking of the NGCF/LightGCN/DCCF code family."""
    mask = torch.zeros(users.shape[0], num_items, dtype=torch.bool)
    rows, items = data.user_items(users)
    mask[torch.from_numpy(rows), torch.from_numpy(items)] = True
    if extra_items is not None:
        has = np.nonzero(extra_items >= 0)[0]
        mask[torch.from_numpy(has), torch.from_numpy(extra_items[has])] = True
    mask[torch.arange(targets.shape[0]), targets] = False
    return mask


@torch.no_grad()
def rank_split(
    model: CollabModel,
    split: Split,
    batch_size: int = 1024,
    exclude_history: bool = False,
    desc: str = "evaluate",
    exclude_seen: tuple[TrainingData, np.ndarray | None] | None = None,
) -> np.ndarray:
    """Full-ranking 0-based rank of every sample's target among all items (S,).

    ``exclude_history`` keeps the items of the sample's history window out of the competition;
    ``exclude_seen = (training data, extra item per user (U,) or None)`` keeps out every training
    item of the user plus that extra item (the validation item when ranking the test split).
    """
    was_training = model.training
    model.eval()
    model.prepare_scoring()
    ranks = np.empty(len(split), dtype=np.int64)
    bar = progress_bar(len(split), desc=desc, unit="user")
    for start in range(0, len(split), batch_size):
        stop = min(start + batch_size, len(split))
        users = torch.from_numpy(split.user_index[start:stop])
        histories = torch.from_numpy(split.histories[start:stop])
        targets = torch.from_numpy(split.targets[start:stop])
        scores = model.score(users, histories)  # (B, I)
        exclude = history_mask(histories, targets, scores.shape[1]) if exclude_history else None
        if exclude_seen is not None:
            data, extra = exclude_seen
            chunk_users = split.user_index[start:stop]
            seen = seen_mask(data, chunk_users, None if extra is None else extra[chunk_users], targets, scores.shape[1])
            exclude = seen if exclude is None else exclude | seen
        ranks[start:stop] = ranks_from_scores(scores, targets, exclude)
        bar.update(stop - start)
    bar.close()
    model.train(was_training)
    return ranks


def evaluate(
    model: CollabModel,
    split: Split,
    batch_size: int = 1024,
    exclude_history: bool = False,
    ks=EVAL_KS,
    desc: str = "evaluate",
    exclude_seen: tuple[TrainingData, np.ndarray | None] | None = None,
) -> dict[str, float]:
    """HR@K / NDCG@K of ``model`` on ``split`` (full ranking over all items; see :func:`rank_split`)."""
    return metrics_from_ranks(rank_split(model, split, batch_size, exclude_history, desc, exclude_seen), ks)


def rank_test_split(
    model: CollabModel,
    dataset: PreparedDataset,
    train_config: CollabConfig,
    rows: np.ndarray | None = None,
    seen_excluded: bool = False,
    desc: str = "test",
    data: TrainingData | None = None,
) -> np.ndarray:
    """The test protocol of a run, in one place: full-ranking 0-based rank of each test target (S,).

    Training and every later re-scoring (the report's same-user comparison) call this, so a
    model is scored the same way wherever its figures appear: graph models see the validation
    interactions of *all* users (``test_with_valid_interactions``; the test items never), history
    items compete unless ``exclude_history``. ``rows`` (sorted indices into the test split)
    scores a subset of the users; the ranks are those of the full run restricted to them.
    ``seen_excluded``: the secondary protocol that keeps every training item and the validation
    item of the user out of the competition (the NGCF/LightGCN/DCCF code family); ``data`` is the
    run's training data when the caller has it at hand (built from ``dataset`` otherwise).
    """
    valid, test = dataset.split("valid"), dataset.split("test")
    if rows is not None:
        test = Split(test.user_index[rows], test.histories[rows], test.targets[rows])
    if train_config.test_with_valid_interactions:
        model.set_scoring_interactions(valid.user_index, valid.targets)
    try:
        if not seen_excluded:
            return rank_split(model, test, train_config.eval_batch_size, train_config.exclude_history, desc=desc)
        valid_item_of_user = np.full(dataset.num_users, -1, dtype=np.int64)
        valid_item_of_user[valid.user_index] = valid.targets
        return rank_split(model, test, train_config.eval_batch_size, desc=desc,
                          exclude_seen=(data or TrainingData.from_dataset(dataset), valid_item_of_user))
    finally:
        model.set_scoring_interactions(None, None)


# ----------------------------------------------------------------------------- checkpoints


def _optimizer(model: CollabModel, model_config: Any) -> torch.optim.Optimizer | None:
    if not model.trainable:
        return None
    cls = torch.optim.AdamW if model_config.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=model_config.lr, weight_decay=model_config.weight_decay)


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def save_checkpoint(directory: Path, state: dict[str, Any], model: CollabModel,
                    optimizer: torch.optim.Optimizer | None, best: dict[str, torch.Tensor]) -> None:
    """Write ``directory`` (weights + optimizer + best weights as safetensors, the rest as JSON) atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.contiguous() for k, v in best.items()})
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        saved = optimizer.state_dict()
        for index, values in saved["state"].items():
            for key, value in values.items():
                tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).contiguous()
        groups = saved["param_groups"]
    with atomic_directory(directory) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        atomic_write_json(tmp / "state.json", {**state, "optimizer_param_groups": groups})


def load_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """(JSON state, tensors grouped as {"model": ..., "best": ..., "optimizer": {"<index>.<key>": ...}})."""
    from safetensors.torch import load_file

    state = read_json(directory / "state.json")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "best": {}, "optimizer": {}}
    for name, tensor in load_file(str(directory / "state.safetensors")).items():
        group, _, key = name.partition(".")
        groups[group][key] = tensor
    return state, groups


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _check_resumable(saved: dict[str, Any], train_config: CollabConfig, model_config: Any, where: Path) -> None:
    now = {"train": to_dict(train_config), "model": to_dict(model_config)}
    differences = []
    for section in ("train", "model"):
        for key in sorted(set(now[section]) | set(saved[section])):
            if section == "train" and key in RESUMABLE_CHANGES:
                continue
            if now[section].get(key) != saved[section].get(key):
                differences.append(f"{key}: checkpoint {saved[section].get(key)!r}, now {now[section].get(key)!r}")
    if differences:
        raise InputError(
            f"{where}: cannot resume with different settings ({'; '.join(differences)}); "
            "resume with the original settings or train into a new --out folder"
        )


# ----------------------------------------------------------------------------- training


def train(
    train_config: CollabConfig,
    model_config: Any,
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    dataset: PreparedDataset | None = None,
) -> TrainResult:
    """Train ``train_config.model`` on the run folder ``data_dir`` and write its outputs.

    Outputs in ``out_dir`` (default ``RUN/collab/<model>``): ``metrics.json`` (written last),
    ``item_embeddings.safetensors`` + ``item_ids.json`` (models with item embeddings),
    ``model.safetensors``, ``train_log.json``, ``config.json`` and ``checkpoint/``.
    """
    dataset = dataset if dataset is not None else load_dataset(data_dir)
    out = Path(out_dir) if out_dir is not None else default_out_dir(data_dir, train_config.model)
    out.mkdir(parents=True, exist_ok=True)
    # metrics.json marks a complete run: a stale one must not vouch for the run now starting
    (out / "metrics.json").unlink(missing_ok=True)
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    checkpoint_dir = out / CHECKPOINT_DIR

    started = time.time()
    data = TrainingData.from_dataset(dataset)
    valid = dataset.split("valid")
    torch.manual_seed(train_config.seed)  # initial weights
    model = build_model(train_config.model, model_config, data)
    optimizer = _optimizer(model, model_config)

    history: list[dict[str, Any]] = []
    start_epoch = 0
    best_metric = -1.0
    best_epoch = 0
    bad_evals = 0
    stop_reason = "max_epochs"
    finished_early = False
    train_seconds = 0.0
    train_cpu_seconds = 0.0
    best_state = _clone_state(model)

    if resume and (checkpoint_dir / "state.json").exists():
        saved, tensors = load_checkpoint(checkpoint_dir)
        if saved.get("model") != train_config.model:
            raise InputError(f"{checkpoint_dir}: checkpoint is of model {saved.get('model')!r}, not {train_config.model!r}")
        _check_resumable(saved["config"], train_config, model_config, checkpoint_dir)
        model.load_state_dict(tensors["model"])
        if optimizer is not None:
            _restore_optimizer(optimizer, tensors["optimizer"], saved["optimizer_param_groups"])
        best_state = tensors["best"] or _clone_state(model)
        start_epoch = int(saved["epoch"])
        best_metric, best_epoch = float(saved["best_metric"]), int(saved["best_epoch"])
        bad_evals = int(saved["bad_evals"])
        history = list(saved["log"])
        train_seconds = float(saved["train_seconds"])
        train_cpu_seconds = float(saved.get("train_cpu_seconds", 0.0))
        finished_early = saved.get("stop_reason") == "early_stopping"
        stop_reason = saved.get("stop_reason") or stop_reason
        log.info("resuming %s from epoch %d (best %s %.4f at epoch %d)", train_config.model, start_epoch,
                 train_config.early_stop_metric, best_metric, best_epoch)
    elif resume:
        log.info("no checkpoint in %s; training from scratch", checkpoint_dir)

    metric_name = train_config.early_stop_metric
    config_record = {"train": to_dict(train_config), "model": to_dict(model_config)}
    epochs_to_run = range(start_epoch + 1, train_config.epochs + 1) if model.trainable and not finished_early else range(0)
    budget_seconds = None if train_config.max_train_minutes is None else 60 * train_config.max_train_minutes
    for epoch in epochs_to_run:
        if budget_seconds is not None and train_seconds >= budget_seconds:
            stop_reason = "time_budget"
            break
        seed = epoch_seed(train_config.seed, epoch)
        torch.manual_seed(seed)  # dropout, negatives, masks, InfoNCE subsets of this epoch
        rng = np.random.default_rng(seed)
        model.train()
        assert optimizer is not None
        epoch_start, epoch_cpu_start = time.time(), time.process_time()
        sums: dict[str, float] = {}
        batches = 0
        bar = progress_bar(model.num_batches(), desc=f"{train_config.model} epoch {epoch}", unit="batch")
        for batch in model.batches(rng):
            optimizer.zero_grad(set_to_none=True)
            loss, parts = model.loss(batch)
            loss_value = float(loss.detach())
            if not np.isfinite(loss_value):
                raise FloatingPointError(f"{train_config.model}: loss became {loss_value} at epoch {epoch}; lower --lr")
            loss.backward()
            if model_config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), model_config.grad_clip)
            optimizer.step()
            sums["loss"] = sums.get("loss", 0.0) + loss_value
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            batches += 1
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / batches:.4f}")
        bar.close()
        epoch_seconds = time.time() - epoch_start
        epoch_cpu_seconds = time.process_time() - epoch_cpu_start
        train_seconds += epoch_seconds
        train_cpu_seconds += epoch_cpu_seconds
        # CPU seconds (all threads of this process) next to wall seconds: on a shared machine the
        # wall time includes waiting for other jobs, the CPU time does not
        record: dict[str, Any] = {"epoch": epoch, **{k: v / max(batches, 1) for k, v in sums.items()},
                                  "train_seconds": round(epoch_seconds, 3),
                                  "train_cpu_seconds": round(epoch_cpu_seconds, 3)}
        time_up = budget_seconds is not None and train_seconds >= budget_seconds
        # the last epoch before any stop is always evaluated, so the best model is never stale
        if epoch % train_config.eval_every == 0 or epoch == train_config.epochs or time_up:
            eval_start = time.time()
            metrics = evaluate(model, valid, train_config.eval_batch_size, train_config.exclude_history, desc="valid")
            record["valid"] = metrics
            record["eval_seconds"] = round(time.time() - eval_start, 3)
            if metrics[metric_name] > best_metric:
                best_metric, best_epoch, bad_evals = metrics[metric_name], epoch, 0
                best_state = _clone_state(model)
            else:
                bad_evals += 1
            log.info("%s epoch %d: loss %.4f, valid %s %.4f (best %.4f @ %d), %.1fs", train_config.model, epoch,
                     record["loss"], metric_name, metrics[metric_name], best_metric, best_epoch, epoch_seconds)
        history.append(record)
        stop = bool(train_config.patience) and bad_evals >= train_config.patience
        if stop:
            stop_reason = "early_stopping"
        elif time_up:
            stop_reason = "time_budget"
        if stop or time_up or epoch == train_config.epochs or epoch % train_config.checkpoint_every == 0:
            save_checkpoint(
                checkpoint_dir,
                {"model": train_config.model, "epoch": epoch, "best_metric": best_metric, "best_epoch": best_epoch,
                 "bad_evals": bad_evals, "train_seconds": train_seconds,
                 "train_cpu_seconds": train_cpu_seconds, "stop_reason": stop_reason if stop else None,
                 "log": history, "config": config_record},
                model, optimizer, best_state,
            )
        if stop:
            log.info("early stopping after epoch %d (no better valid %s for %d evaluations)", epoch, metric_name, bad_evals)
            break
        if time_up:
            log.info("time budget of %.1f minutes used after epoch %d", train_config.max_train_minutes, epoch)
            break

    # best-validation weights for the final numbers and the exported files
    model.load_state_dict(best_state)
    valid_metrics = evaluate(model, valid, train_config.eval_batch_size, train_config.exclude_history, desc="valid")
    test_split = dataset.split("test")
    test_metrics = metrics_from_ranks(rank_test_split(model, dataset, train_config), EVAL_KS)
    # Secondary figures: the same test ranking with every item the user interacted with before
    # (training items + the validation item) kept out — how the NGCF/LightGCN/DCCF code family
    # evaluates, reported beside (never instead of) the main protocol.
    test_seen_excluded = metrics_from_ranks(
        rank_test_split(model, dataset, train_config, seen_excluded=True, desc="test (seen excluded)", data=data), EVAL_KS)
    trained_epochs = [r for r in history if "train_seconds" in r]
    metrics: dict[str, Any] = {
        "model": train_config.model,
        "valid": valid_metrics,
        "test": test_metrics,
        **{f"valid.{k}": v for k, v in valid_metrics.items()},
        **{f"test.{k}": v for k, v in test_metrics.items()},
        "test_seen_excluded": test_seen_excluded,
        "best_epoch": best_epoch,
        "epochs_run": len(trained_epochs),
        "stop_reason": stop_reason if model.trainable else "not_trainable",
        "train_seconds": round(train_seconds, 2),
        "seconds_per_epoch": round(train_seconds / len(trained_epochs), 3) if trained_epochs else 0.0,
        "train_cpu_seconds": round(train_cpu_seconds, 2),
        "cpu_seconds_per_epoch": round(train_cpu_seconds / len(trained_epochs), 3) if trained_epochs else 0.0,
        "torch_threads": torch.get_num_threads(),
        "total_seconds": round(time.time() - started, 2),
        "peak_rss_mb": peak_rss_mb(),
        "users": {"valid": len(valid), "test": len(test_split)},
        "protocol": "leave-one-out, full ranking over all items"
        + (", history items excluded" if train_config.exclude_history else ", history items not excluded")
        + (", test scored with the validation interactions in the graph"
           if model.scores_from_graph and train_config.test_with_valid_interactions else ""),
    }
    _write_outputs(out, model, dataset, train_config, model_config, history, metrics)
    log.info("%s test: %s", train_config.model, ", ".join(f"{k} {v:.4f}" for k, v in test_metrics.items()))
    return TrainResult(out_dir=out, metrics=metrics, log=history, model=model)


def _write_outputs(out: Path, model: CollabModel, dataset: PreparedDataset, train_config: CollabConfig,
                   model_config: Any, history: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    model.eval()
    model.prepare_scoring()
    embeddings = model.item_embeddings()
    if embeddings is not None:
        save_item_embeddings(out, embeddings, dataset.item_ids)
    if model.trainable:
        save_weights(out / WEIGHTS_FILE, model, metadata={"model": train_config.model})
    atomic_write_json(out / "train_log.json", history)
    write_run_record(
        out,
        {"train": train_config, "model": model_config},
        stage="collab",
        seed=train_config.seed,
        inputs={"dataset": dataset.path},
        extra={"model": train_config.model},
    )
    atomic_write_json(out / "metrics.json", metrics)  # last: its presence marks a complete run


def configs_from_record(out_dir: str | os.PathLike[str]) -> tuple[CollabConfig, Any]:
    """The (training, model) configs a finished run recorded in its ``config.json``."""
    from alignrec.config import from_mapping

    path = Path(out_dir) / "config.json"
    record = read_json(path)
    train_config = from_mapping(CollabConfig, record["config"]["train"], source=str(path))
    return train_config, model_config_from_dict(train_config.model, record["config"]["model"], source=str(path))


__all__ = ["TrainResult", "configs_from_record", "default_out_dir", "evaluate", "rank_split", "rank_test_split", "train"]
