"""The ablation table of one data set from finished sweeps: ``ablations_<dataset>.{json,md}``.

Reads the cells of one or more finished ``alignrec sweep`` folders (``SWEEP/cells/<cell>.json``,
:mod:`alignrec.pipeline.sweep`); trains and searches nothing itself. Each folder is one replicate
of the whole sweep, run with other seeds (``--set finetune.seed=1 --set tasks.seed=1 ...`` and
``--out`` a folder of its own); a cell's seeds are read from its stages' ``config.json``
(behaviour model, tokenizer, tasks, fine-tune). Per cell the table gives the mean ± the sample
standard deviation over its replicates, or the single value with its 95% bootstrap interval
over users marked "1 seed"; and each cell's change from the reference cell (``full``) beside
the change the paper reports for the same ablation (Table 3, Games, HR@5).

Two replicates of a cell with the same seeds are refused (they are one result twice), and so are
cells scored on other test users (the evaluation's user hash and counts must agree) or on a
sample of them (unless ``--allow-sampled``; the table then says so).

    .venv/bin/alignrec sweep configs/paper/ablations.yaml --base configs/industrial.yaml \\
        --out runs/sweeps/ablations_industrial_seed0 --results runs/sweeps/ablations_industrial_seed0
    .venv/bin/python benchmarks/ablations.py --dataset industrial --sweep runs/sweeps/ablations_industrial_seed0
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO_ROOT, RESULTS_DIR, BenchmarkRun, markdown_table, read_input_json, script_error

from alignrec.utils.io import read_json

METRICS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")
SEED_STAGES = ("behaviour", "tokenizer", "tasks", "finetune")  # the stages whose seed makes a replicate
# Semantic Convergence (arXiv 2412.13771), Table 3: ablations on Games, Llama-7B, HR@5 (as quoted in SPEC.md).
PAPER_SOURCE = "Semantic Convergence (arXiv 2412.13771) Table 3, Games, Llama-7B, HR@5, as quoted in ../shared/SPEC.md"
PAPER_HR5 = {"full": 0.0858, "ED": 0.0817, "w/o LA": 0.0836, "w/o NS": 0.0791}


def fail(message: str) -> SystemExit:
    return script_error("ablations", message)


def read_record(path: Path, what: str) -> dict[str, Any]:
    return read_input_json(path, what, "ablations")


def stage_folder(recorded: str, summary: Path) -> Path:
    """A stage folder a cell summary names (relative to where the sweep ran: here or the repository)."""
    path = Path(recorded)
    for candidate in (path, REPO_ROOT / path):
        if candidate.is_dir():
            return candidate
    raise fail(f"{summary}: stage folder {recorded} not found (was the sweep moved?)")


@dataclass
class Replicate:
    """One cell of one sweep folder."""

    cell: str
    summary: Path  # SWEEP/cells/<cell>.json
    row: dict[str, Any]  # the sweep's row: metrics, ci95, users, steps, seconds, ...
    seeds: dict[str, int | None]  # stage -> seed
    users: dict[str, Any]  # what identifies the evaluated users
    sampled: bool


def load_replicate(summary_path: Path) -> Replicate:
    summary = read_record(summary_path, "a cell summary written by `alignrec sweep`")
    row, stages = summary.get("row"), summary.get("stages")
    if not isinstance(row, dict) or not isinstance(stages, dict) or "cell" not in summary:
        raise fail(f"{summary_path}: expected the keys cell, row and stages of a sweep's cell summary")
    missing = [m for m in METRICS if not isinstance(row.get(m), (int, float))]
    if missing or "evaluate" not in stages:
        raise fail(f"{summary_path}: row: expected the metrics {list(METRICS)} and an evaluate stage; missing "
                   f"{missing or ['stages.evaluate']}")
    seeds = {name: read_record(stage_folder(stages[name], summary_path) / "config.json", f"the {name} stage's run record")
             .get("seed") for name in SEED_STAGES if name in stages}
    evaluation_dir = stage_folder(stages["evaluate"], summary_path)
    evaluation = read_record(evaluation_dir / "metrics.json", "the metrics of the evaluate stage")
    manifest = evaluation_dir / "shards" / "manifest.json"
    users = {"users": evaluation.get("users"), "users_in_split": evaluation.get("users_in_split"),
             "rows_sha256": (read_json(manifest).get("settings") or {}).get("rows_sha256") if manifest.is_file() else None}
    return Replicate(str(summary["cell"]), summary_path, row, seeds, users, bool(evaluation.get("sampled")))


def load_sweeps(folders: Sequence[Path]) -> dict[str, list[Replicate]]:
    """Cell name -> its replicates (one per sweep folder that has the cell)."""
    cells: dict[str, list[Replicate]] = {}
    for folder in folders:
        summaries = sorted((folder / "cells").glob("*.json"))
        if not summaries:
            raise fail(f"{folder}/cells: no cell summaries; expected a folder written by `alignrec sweep`")
        for path in summaries:
            replicate = load_replicate(path)
            cells.setdefault(replicate.cell, []).append(replicate)
    return cells


def check_replicates(cells: dict[str, list[Replicate]], allow_sampled: bool) -> None:
    """Distinct seeds within a cell; the same test users everywhere; no sample without the flag."""
    reference = next(iter(cells.values()))[0]
    for name, replicates in cells.items():
        for i, replicate in enumerate(replicates):
            twin = next((other for other in replicates[:i] if other.seeds == replicate.seeds), None)
            if twin is not None:
                raise fail(f"cell {name!r}: {twin.summary} and {replicate.summary} ran the same seeds "
                           f"({seeds_text(replicate.seeds)}); they are one result, not two replicates")
            if replicate.users != reference.users:
                raise fail(f"{replicate.summary} scored other test users than {reference.summary} "
                           f"({replicate.users} vs {reference.users}); the table compares cells on the same users")
            if replicate.sampled and not allow_sampled:
                raise fail(f"{replicate.summary}: the evaluation scored a sample of {replicate.users['users']} of "
                           f"{replicate.users['users_in_split']} test users; evaluate every user (or pass --allow-sampled)")


def seeds_text(seeds: dict[str, int | None]) -> str:
    return ", ".join(f"{stage} {seed}" for stage, seed in seeds.items())


def cell_row(name: str, replicates: list[Replicate]) -> dict[str, Any]:
    """Mean and sample standard deviation over a cell's replicates (sd None for one seed)."""
    values = {m: [float(r.row[m]) for r in replicates] for m in METRICS}
    row: dict[str, Any] = {
        "cell": name, "seeds": len(replicates), "seed_values": [r.seeds for r in replicates],
        "users": replicates[0].users["users"],
        "mean": {m: float(np.mean(v)) for m, v in values.items()},
        "sd": {m: float(np.std(v, ddof=1)) if len(v) > 1 else None for m, v in values.items()},
        "values": values,
        "ci95": replicates[0].row.get("ci95") if len(replicates) == 1 else None,
    }
    for key in ("tokenizer", "levels", "raw collision", "steps", "seconds"):
        shown = [r.row.get(key) for r in replicates]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in shown)
        row[key] = float(np.mean(shown)) if numbers and len(set(shown)) > 1 else shown[0]
    return row


def with_changes(rows: list[dict[str, Any]], reference: str) -> None:
    """Each row's relative change from the reference cell (ours and, where it has the cell, the paper's)."""
    base = next((row for row in rows if row["cell"] == reference), None)
    for row in rows:
        row["vs_reference"] = None if base is None else {
            m: (row["mean"][m] / base["mean"][m] - 1.0) if base["mean"][m] else None for m in ("hr@5", "ndcg@10")}
        paper = PAPER_HR5.get(row["cell"])
        row["paper_hr@5"] = paper
        row["paper_hr@5_vs_full"] = None if paper is None else paper / PAPER_HR5["full"] - 1.0


def replicate_ranks(replicate: Replicate) -> Any:
    """Rank of each evaluated test user's item in the cell's list (10 = not in it), in split order."""
    from alignrec.data import load_dataset
    from alignrec.pipeline.report import prediction_ranks, sample_rows

    stages = read_json(replicate.summary)["stages"]
    if "prepare" not in stages:
        raise fail(f"{replicate.summary}: stages.prepare: missing; the paired difference needs the data set")
    dataset = load_dataset(stage_folder(stages["prepare"], replicate.summary))
    predictions = stage_folder(stages["evaluate"], replicate.summary) / "predictions.jsonl"
    return prediction_ranks(dataset, predictions, sample_rows(dataset, predictions))


def with_paired(rows: list[dict[str, Any]], cells: dict[str, list[Replicate]], reference: str) -> None:
    """Each cell minus the reference cell of the same sweep folder (the first that has both), per user.

    A paired bootstrap over users: the interval says whether a change is larger than the noise of
    the test users (not of the training seed)."""
    from alignrec.pipeline.report import paired_difference

    base = {replicate.summary.parent: replicate for replicate in cells[reference]}
    base_ranks: dict[Path, Any] = {}
    for row in rows:
        row["paired_vs_reference"] = None
        if row["cell"] == reference:
            continue
        replicate = next((r for r in cells[row["cell"]] if r.summary.parent in base), None)
        if replicate is None:
            continue
        folder = replicate.summary.parent
        if folder not in base_ranks:
            base_ranks[folder] = replicate_ranks(base[folder])
        difference = paired_difference(replicate_ranks(replicate), base_ranks[folder])
        row["paired_vs_reference"] = {"folder": str(folder.parent),
                                      **{m: difference[m] for m in ("hr@10", "ndcg@10")}}


# ----------------------------------------------------------------------------- markdown


def _spread(row: dict[str, Any], metric: str) -> str:
    mean, sd = row["mean"][metric], row["sd"][metric]
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.1f}%"


def _paired(difference: dict[str, Any] | None) -> str:
    if not difference:
        return ""
    low, high = difference["ci95"]
    return f"{difference['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"


def table_markdown(rows: list[dict[str, Any]], reference: str) -> str:
    shown = []
    for row in rows:
        interval = (row.get("ci95") or {}).get("ndcg@10")
        shown.append({
            "cell": row["cell"], "seeds": "1 seed" if row["seeds"] == 1 else f"{row['seeds']} seeds", "users": row["users"],
            **{m.upper(): _spread(row, m) for m in METRICS},
            "NDCG@10 95% CI (1 seed)": "" if not interval else f"[{interval[0]:.4f}, {interval[1]:.4f}]",
            f"HR@5 vs {reference}": _percent((row["vs_reference"] or {}).get("hr@5")),
            f"NDCG@10 vs {reference}": _percent((row["vs_reference"] or {}).get("ndcg@10")),
            f"NDCG@10 - {reference}, paired [95% CI]": _paired((row.get("paired_vs_reference") or {}).get("ndcg@10")),
            "paper HR@5 vs full (Games)": _percent(row["paper_hr@5_vs_full"]),
            "raw collision": row.get("raw collision"), "steps": row.get("steps"), "seconds": row.get("seconds"),
        })
    return "\n" + markdown_table(shown)


def table_notes(rows: list[dict[str, Any]], folders: Sequence[Path], sampled: bool) -> list[str]:
    notes = [
        f"Cells of {len(folders)} sweep folder(s): {', '.join(str(folder) for folder in folders)}; one replicate per "
        "folder. Several seeds: mean ± sample standard deviation over the seeds; 1 seed: the value, with its 95% "
        "bootstrap interval over users. The paired column: the cell minus the reference cell of the same sweep "
        "folder (the first seed folder that has both), per user, with a paired 95% bootstrap interval over users.",
        f"paper: {PAPER_SOURCE} (full {PAPER_HR5['full']}, ED {PAPER_HR5['ED']}, w/o LA {PAPER_HR5['w/o LA']}, "
        f"w/o NS {PAPER_HR5['w/o NS']}); other data, backbone and budget: compare the direction of the changes.",
    ]
    uneven = sorted({row["seeds"] for row in rows})
    if len(uneven) > 1:
        notes.append(f"Cells have different numbers of seeds ({', '.join(map(str, uneven))}): a sweep folder lacks "
                     "some cells.")
    if sampled:
        notes.append("SAMPLED: the evaluations scored a seeded sample of the test users (--allow-sampled).")
    return notes


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="data set name (names the results file ablations_<dataset>)")
    parser.add_argument("--sweep", action="append", required=True, metavar="SWEEP",
                        help="a finished sweep folder (SWEEP/cells/*.json); repeat it for each seed's folder")
    parser.add_argument("--reference", default="full", help="the cell the changes are measured from (default: full)")
    parser.add_argument("--allow-sampled", action="store_true", help="accept evaluations of a sample of the test users")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where ablations_<dataset>.json/.md go")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> tuple[Path, Path]:
    args = parse_args(argv)
    folders = [Path(folder) for folder in args.sweep]
    cells = load_sweeps(folders)
    check_replicates(cells, args.allow_sampled)
    if args.reference not in cells:
        raise fail(f"--reference {args.reference!r}: no such cell; cells are {sorted(cells)}")
    order = [args.reference, *sorted(name for name in cells if name != args.reference)]
    rows = [cell_row(name, cells[name]) for name in order]
    with_changes(rows, args.reference)
    with_paired(rows, cells, args.reference)
    sampled = any(r.sampled for replicates in cells.values() for r in replicates)
    bench = BenchmarkRun(f"ablations_{args.dataset}", results_dir=Path(args.results_dir), description=(
        f"Ablations on {args.dataset} ({rows[0]['users']:,} test users{', SAMPLED' if sampled else ''}): each cell of "
        f"the sweep against the {args.reference!r} cell; leave-one-out, full ranking over all items."))
    for row in rows:
        bench.add_row(row)
    bench.extra.update(dataset=args.dataset, sampled=sampled, reference=args.reference,
                       sweeps=[str(folder) for folder in folders], paper_source=PAPER_SOURCE, paper_hr5=PAPER_HR5)
    return bench.finish(notes=table_notes(rows, folders, sampled), body=table_markdown(rows, args.reference))


if __name__ == "__main__":
    os.environ.setdefault("ALIGNREC_PROGRESS", "0")
    print(*main())
