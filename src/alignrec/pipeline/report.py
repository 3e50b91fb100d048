"""The final report of an experiment: markdown + PNG figures + summary.json.

The LLM is compared with the behaviour model and the baselines on the *same* users: every
collab model is re-scored (full ranking, no retraining) under the protocol its own trainer
used (:func:`alignrec.collab.trainer.rank_test_split`), and when the evaluation scored a sample
of test users (CPU budgets) its per-user ranks are restricted to exactly those users. The LLM's
per-user ranks come from the evaluation's predictions.jsonl. When the evaluation also ran the
seen-items-excluded protocol (``evaluate.exclude: both``), every model is shown under both
protocols: the classic models re-scored with their trainer's seen-excluded ranking, the LLM from
predictions_seen_excluded.jsonl (excluded inside its beam search). Every figure of NDCG@10 and HR@10
carries a 95% bootstrap interval over users, and the LLM's gap to each classic model a paired
bootstrap interval over the same users (:mod:`alignrec.metrics.bootstrap`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alignrec.utils.io import atomic_path, atomic_write_json, atomic_write_text, read_json
from alignrec.utils.log import get_logger
from alignrec.utils.tables import markdown_table

if TYPE_CHECKING:
    from alignrec.pipeline.experiment import ExperimentResult

log = get_logger(__name__)

METRICS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")
INTERVAL_METRICS = ("hr@10", "ndcg@10")  # the figures every comparison table gives an interval for
KS = (1, 5, 10)


def sample_rows(dataset: Any, predictions: Path, split: str = "test") -> np.ndarray:
    """Rows of ``split`` whose users appear in an evaluate predictions file (in split order)."""
    users = set()
    with open(predictions, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                users.add(json.loads(line)["user_id"])
    data = dataset.split(split)
    user_ids = dataset.user_ids
    return np.array([row for row in range(len(data)) if user_ids[int(data.user_index[row])] in users], dtype=np.int64)


def collab_test_ranks(collab_dir: Path, dataset: Any, rows: np.ndarray | None = None,
                      seen_excluded: bool = False) -> np.ndarray:
    """Per-user test ranks of a trained collab model, scored exactly as its trainer scored them
    (its recorded settings; ``rows`` = a subset of the test split's rows; ``seen_excluded``: the
    trainer's secondary protocol, every item seen before the target kept out)."""
    from alignrec.collab.export import load_trained_model
    from alignrec.collab.trainer import configs_from_record, rank_test_split

    train_config, _ = configs_from_record(collab_dir)
    model = load_trained_model(collab_dir, dataset.path)
    return rank_test_split(model, dataset, train_config, rows, seen_excluded=seen_excluded,
                           desc=f"score {collab_dir.name}" + (" (seen excluded)" if seen_excluded else ""))


def prediction_ranks(dataset: Any, predictions: Path, rows: np.ndarray, split: str = "test") -> np.ndarray:
    """Per-user ranks of the split's targets in an evaluate predictions file (rows of ``split``;
    a user without a list is a miss, as in the evaluation)."""
    from alignrec.metrics import ranks_in_lists
    from alignrec.metrics.predictions import read_predictions

    rankings, _ = read_predictions(predictions, dataset)
    data = dataset.split(split)
    return ranks_in_lists([rankings.get(int(data.user_index[row]), []) for row in rows], data.targets[rows])


def comparison_row(model: str, ranks: np.ndarray) -> dict[str, Any]:
    """A table row: the metrics of ``ranks`` and the 95% bootstrap interval of HR@10 and NDCG@10."""
    from alignrec.metrics import bootstrap_interval, per_user_metrics

    values = per_user_metrics(ranks, KS)
    row: dict[str, Any] = {"model": model, "users": int(len(ranks)), **{m: float(values[m].mean()) for m in METRICS}}
    row["ci95"] = {m: list(bootstrap_interval(values[m])) for m in INTERVAL_METRICS}
    return row


def paired_difference(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """Mean difference first - second of HR@10 and NDCG@10 on the same users, with the paired
    bootstrap 95% interval: ``{metric: {"difference": d, "ci95": [low, high]}}``."""
    from alignrec.metrics import paired_bootstrap_interval, per_user_metrics

    a, b = per_user_metrics(first, KS), per_user_metrics(second, KS)
    return {m: {"difference": float(a[m].mean() - b[m].mean()), "ci95": list(paired_bootstrap_interval(a[m], b[m]))}
            for m in INTERVAL_METRICS}


def _interval(values: list[float] | None) -> str:
    return "" if not values else f"[{values[0]:.4f}, {values[1]:.4f}]"


def with_interval_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for markdown: each row's ``ci95`` intervals as text columns beside their metric."""
    return [{**row, **{f"{m} 95% CI": _interval((row.get("ci95") or {}).get(m)) for m in INTERVAL_METRICS}} for row in rows]


# the metric columns of every comparison table: each interval right after its metric
METRIC_COLUMNS = [c for m in METRICS for c in ([m, f"{m} 95% CI"] if m in INTERVAL_METRICS else [m])]
TABLE_COLUMNS = ["model", "users", *METRIC_COLUMNS]


def _test_metrics(metrics_file: Path) -> dict[str, float]:
    record = read_json(metrics_file)
    test = record.get("test", record)
    return {m: float(test[m]) for m in METRICS if m in test}


def _check_rescored(label: str, rescored: dict[str, Any], recorded: dict[str, float]) -> bool:
    """Whether a re-scoring reproduces the figures a stage recorded (it must: same protocol)."""
    differing = [m for m in METRICS if m in recorded and abs(rescored[m] - recorded[m]) > 1e-9]
    if differing:
        log.warning("%s: re-scored %s differ from the recorded ones (%s vs %s)", label, differing,
                    [rescored[m] for m in differing], [recorded[m] for m in differing])
    return not differing


PROTOCOL_COLUMNS = ["model", "users", "hr@10", "hr@10 seen excluded", "ndcg@10", "ndcg@10 seen excluded",
                    "ndcg@10 seen excluded 95% CI"]


def protocol_rows(eval_report: dict[str, Any], dataset: Any, rows_used: np.ndarray, split: str, llm_name: str,
                  classic_dirs: dict[str, Path], comparison: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every model under both protocols on the same users (empty when the evaluation ran only the
    main one): HR@10 and NDCG@10 main / seen excluded, and the seen-excluded NDCG@10 interval."""
    seen = eval_report.get("seen_excluded")
    if not seen:
        return []
    ranks = {llm_name: prediction_ranks(dataset, Path(seen["predictions"]), rows_used, split)}
    for label, folder in classic_dirs.items():
        ranks[label] = collab_test_ranks(folder, dataset, seen_excluded=True)[rows_used]
    rows = []
    for main in comparison:
        excluded = comparison_row(main["model"], ranks[main["model"]])
        rows.append({"model": main["model"], "users": main["users"], "hr@10": main["hr@10"],
                     "hr@10 seen excluded": excluded["hr@10"], "ndcg@10": main["ndcg@10"],
                     "ndcg@10 seen excluded": excluded["ndcg@10"],
                     "ndcg@10 seen excluded 95% CI": _interval(excluded["ci95"]["ndcg@10"]),
                     "ci95_seen_excluded": excluded["ci95"]})
    return rows


def metrics_figure(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["model"] for row in rows]
    shown = ["hr@5", "hr@10", "ndcg@5", "ndcg@10"]
    x = np.arange(len(shown))
    width = 0.8 / max(len(rows), 1)
    figure, axis = plt.subplots(figsize=(8, 4))
    for i, row in enumerate(rows):
        axis.bar(x + i * width, [row.get(m) or 0.0 for m in shown], width, label=names[i])
    axis.set_xticks(x + width * (len(rows) - 1) / 2, [m.upper() for m in shown])
    axis.set_ylabel("test metric")
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)


def write_report(result: ExperimentResult, out: Path) -> Path:
    """Write ``out/report.md``, ``out/summary.json`` and the figures; return the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    config = result.config
    stages = result.stages
    dataset_dir = stages["prepare"].out
    stats = read_json(dataset_dir / "stats.json")
    eval_report = read_json(stages["evaluate"].out / "metrics.json")
    from alignrec.data import load_dataset

    dataset = load_dataset(dataset_dir)
    split = eval_report.get("split", "test")
    rows_used = sample_rows(dataset, Path(eval_report["predictions"]), split)
    sampled = len(rows_used) < len(dataset.split(split))

    llm_name = f"LLM ({config.tokenizer.get('method', 'alignment')} codes)"
    llm_ranks = prediction_ranks(dataset, Path(eval_report["predictions"]), rows_used, split)
    comparison = [comparison_row(llm_name, llm_ranks)]
    consistent = {llm_name: _check_rescored(llm_name, comparison[0], eval_report["metrics"])}
    all_users = []
    classic: dict[str, np.ndarray] = {}
    classic_dirs: dict[str, Path] = {}
    for name, stage in stages.items():
        if not (name == "behaviour" or name.startswith("baseline/")):
            continue
        model = read_json(stage.out / "config.json")["config"]["train"]["model"]
        label = f"{model} (behaviour model)" if name == "behaviour" else model
        classic_dirs[label] = stage.out
        full = collab_test_ranks(stage.out, dataset)  # every test user, the trainer's protocol
        all_users.append(comparison_row(label, full))
        consistent[label] = _check_rescored(label, all_users[-1], _test_metrics(stage.out / "metrics.json"))
        classic[label] = full[rows_used]  # the same users as the LLM, same ranks as the full run
        comparison.append(comparison_row(label, classic[label]))
    # the LLM against every classic model on the same users (paired), and which one is best
    versus = [{"model": label, **paired_difference(llm_ranks, ranks)} for label, ranks in classic.items()]
    best = max(comparison[1:], key=lambda row: row["ndcg@10"], default=None)
    protocols = protocol_rows(eval_report, dataset, rows_used, split, llm_name, classic_dirs, comparison)

    tokenizer_report = read_json(stages["tokenizer"].out / "report.json")
    tasks_stats = read_json(stages["tasks"].out / "stats.json")
    finetune_metrics = read_json(stages["finetune"].out / "metrics.json")
    precache_stage = stages.get("precache")

    metrics_figure(comparison, out / "metrics.png", f"{config.name}: test metrics on the same {len(rows_used)} users")
    copied = {}
    for label, source in (("loss_curve.png", stages["finetune"].out / "loss_curve.png"),
                          ("codes.png", stages["tokenizer"].out / "report.png")):
        if source.is_file():
            shutil.copyfile(source, out / label)
            copied[label] = True

    timings = [{"stage": s.name, "seconds": s.seconds, "reused": s.skipped} for s in stages.values()]
    summary = {
        "experiment": config.name,
        "run_dir": str(result.root),
        "dataset": {k: stats[k] for k in ("users", "items", "interactions", "avg_seq_len")},
        "comparison_same_users": comparison,
        "collab_all_test_users": all_users,
        "llm_vs_classic": versus,
        "protocols": protocols,
        "best_classic": None if best is None else best["model"],
        "intervals": "95% percentile bootstrap over users (1,000 resamples, seed 0); LLM vs classic: paired over the same users",
        "rescored_match_recorded": consistent,
        "evaluation": {k: eval_report.get(k) for k in ("users", "users_in_split", "sampled", "beam_size", "elapsed_s", "users_per_s", "counts")},
        "tokenizer": {
            "method": tokenizer_report.get("method"),
            "levels": tokenizer_report.get("levels"),
            "codebook_size": tokenizer_report.get("codebook_size"),
            "collisions": tokenizer_report.get("collisions"),
            "text": tokenizer_report.get("text", {}).get("summary"),
            "level_utilisation": [lvl.get("utilisation") for lvl in tokenizer_report.get("levels_raw", [])],
        },
        "tasks": tasks_stats.get("counts", tasks_stats),
        "finetune": {k: finetune_metrics.get(k) for k in (
            "steps", "epochs", "train_loss", "eval_loss", "train_seconds", "train_tokens_per_second",
            "code_tokens_per_second", "padding_share", "train_examples", "settings", "validation_ranking")},
        "stages": timings,
        "total_seconds": result.seconds,
        "stage_seconds_sum": round(sum(t["seconds"] for t in timings), 2),
    }
    prefer_metrics = read_json(stages["prefer"].out / "metrics.json") if "prefer" in stages else None
    if prefer_metrics is not None:
        summary["prefer"] = prefer_metrics
    atomic_write_json(out / "summary.json", summary)

    cache = result.root / "cache" / "cache.sqlite"
    lines = [
        f"# {config.name}",
        "",
        f"Data set: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions "
        f"(average sequence length {stats['avg_seq_len']:.2f}); leave-one-out, full ranking over all items.",
        "",
        "## Recommendation quality (test split)",
        "",
        f"Same {len(rows_used):,} test users for every model"
        + (" (a seeded sample: the CPU budget of this run)" if sampled else " (all test users)") + ".",
        "",
        markdown_table(with_interval_columns(comparison), TABLE_COLUMNS),
        "Intervals: 95% bootstrap over users (1,000 resamples). Classic models are re-scored with the protocol "
        "of their own training run (for graph models: the validation interactions in the graph).",
        "",
    ]
    if versus:
        lines += [
            f"LLM minus each classic model on the same users (paired bootstrap 95% interval; best classic model on "
            f"NDCG@10: {best['model'] if best else 'none'}):",
            "",
            markdown_table([{"model": row["model"],
                             **{f"Δ {m}": row[m]["difference"] for m in INTERVAL_METRICS},
                             **{f"Δ {m} 95% CI": _interval(row[m]["ci95"]) for m in INTERVAL_METRICS}} for row in versus],
                           ["model", "Δ hr@10", "Δ hr@10 95% CI", "Δ ndcg@10", "Δ ndcg@10 95% CI"]),
        ]
    if protocols:
        lines += [
            "Both protocols, same users: *main* (every item competes, the table above) and *seen excluded* "
            "(no item the user interacted with before the target can be recommended: the classic models' "
            "secondary ranking, and for the LLM an exclusion inside the beam search):",
            "",
            markdown_table(protocols, PROTOCOL_COLUMNS),
        ]
    if sampled:
        lines += ["Collab models on all test users:", "", markdown_table(with_interval_columns(all_users), TABLE_COLUMNS)]
    lines += [
        "![metrics](metrics.png)",
        "",
        "## Item codes",
        "",
        f"Method `{tokenizer_report.get('method')}`, {tokenizer_report.get('levels')} levels x "
        f"{tokenizer_report.get('codebook_size')} codes; raw collision rate "
        f"{tokenizer_report['collisions']['raw']:.4%}, after resolution {tokenizer_report['collisions']['final']:.4%}. "
        f"{tokenizer_report.get('text', {}).get('summary', '')}",
        "",
    ]
    if copied.get("codes.png"):
        lines += ["![code utilisation](codes.png)", ""]
    lines += [
        "## Fine-tuning",
        "",
        f"{finetune_metrics.get('steps')} steps on {finetune_metrics.get('train_examples')} examples, "
        f"final training loss {finetune_metrics.get('train_loss')}, validation loss {finetune_metrics.get('eval_loss')}, "
        f"{finetune_metrics.get('train_tokens_per_second')} tokens/s ({finetune_metrics.get('code_tokens_per_second')} "
        f"supervised code tokens/s).",
        "",
    ]
    settings = finetune_metrics.get("settings") or {}
    if settings:
        lines += [f"Format {settings.get('sequential_format')}, {settings.get('head')} head, "
                  f"{settings.get('llm_layers')} decoder layers.", ""]
    ranking = finetune_metrics.get("validation_ranking") or {}
    if ranking:
        history = ", ".join(f"{e['step']}: {e['ndcg@10']:.4f}" for e in ranking.get("history", []))
        lines += [f"Validation NDCG@10 by step ({ranking.get('users')} users, constrained beam search): {history}; "
                  f"the saved model is the checkpoint of step {ranking.get('best_step')}.", ""]
    if copied.get("loss_curve.png"):
        lines += ["![loss curve](loss_curve.png)", ""]
    if prefer_metrics is not None:
        lines += prefer_section(prefer_metrics)
    lines += ["## Stages", "", markdown_table(timings, ["stage", "seconds", "reused"]), "",
              "Reused stages show the seconds they took when they ran. "
              f"This invocation: {result.seconds:.0f} s; every stage once: {summary['stage_seconds_sum']:.0f} s.", ""]
    if precache_stage is not None:
        lines += [
            "## Serve it",
            "",
            "```bash",
            f".venv/bin/alignrec serve --run {result.root} --fallback popularity",
            f"curl 'http://127.0.0.1:8000/v1/users/{dataset.user_ids[0]}/recommendations?k=10'",
            "```",
            "",
            f"(cache: `{cache}`)",
            "",
        ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    log.info("report written to %s", path)
    return path


def prefer_section(metrics: dict[str, Any]) -> list[str]:
    """The report's lines on the preference stage (``alignrec prefer``'s metrics.json)."""
    history = ", ".join(f"{e['step']}: {e['ndcg@10']:.4f}" for e in metrics.get("validation", []))
    timing = metrics.get("timing", {})
    selected = metrics.get("selected_step")
    return [
        "## Preference alignment",
        "",
        f"Objective `{metrics.get('objective')}`, {metrics.get('steps')} updates "
        f"({metrics.get('prompts_per_epoch')} prompts an epoch), {metrics.get('prompts_per_s')} prompts/s "
        f"(rollout {timing.get('rollout_s')} s, scoring {timing.get('scoring_s')} s, update {timing.get('update_s')} s).",
        "",
        f"Validation NDCG@10 by step (step 0 = the fine-tuned model): {history}; selected step {selected}"
        + (" (the fine-tuned model: no step beat it)." if selected == 0 else
           f" (validation gain {metrics.get('validation_gain'):+.4f}); evaluate and precache use it."),
        "",
    ]


def publish_report(run_dir: Path, prefix: Path, command: str) -> tuple[Path, Path]:
    """Copy a run's report to ``prefix.json`` / ``prefix.md`` (+ figures ``prefix_*.png``) with the
    command, machine, date and commit — the benchmark-results convention."""
    import datetime as dt

    from alignrec.config import git_commit, machine_info

    report_dir = run_dir / "report"
    summary = read_json(report_dir / "summary.json")
    record = {
        "name": prefix.name,
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        **summary,
    }
    prefix.parent.mkdir(parents=True, exist_ok=True)
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    for figure in ("metrics.png", "loss_curve.png", "codes.png"):
        if (report_dir / figure).is_file():
            target = prefix.parent / f"{prefix.name}_{figure}"
            shutil.copyfile(report_dir / figure, target)
            markdown = markdown.replace(f"({figure})", f"({target.name})")
    header = (f"Command: `{command}`  \nCommit: `{record['git_commit']}`, {record['date']}, "
              f"{record['machine'].get('processor')}, {record['machine'].get('cpu_count')} CPUs, "
              f"load average {record['load_average']}.\n\n")
    json_path = atomic_write_json(prefix.with_suffix(".json"), record)
    title, _, rest = markdown.partition("\n")
    md_path = atomic_write_text(prefix.with_suffix(".md"), f"{title}\n\n{header}{rest}")
    return json_path, md_path
