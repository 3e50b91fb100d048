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

Sweep folders do not outlive the machine they ran on, and the seeds of one table are run in
different sessions. So every replicate read is also kept in ``per_user/ablations_<dataset>.json``
beside the results (:mod:`common`: its figures, seeds, users and the rank of each test user's item,
clipped at the top 10); ``--kept SWEEP`` puts a kept sweep folder's cells back in the table, paired
user by user as before. A folder of an ``ablations_<dataset>.json`` written before replicates were
kept comes back with its figures only (its paired column as it was; users checked by count).

    .venv/bin/alignrec sweep configs/paper/ablations.yaml --base configs/industrial.yaml \\
        --out runs/sweeps/ablations_industrial_seed0 --results runs/sweeps/ablations_industrial_seed0
    .venv/bin/python benchmarks/ablations.py --dataset industrial --sweep runs/sweeps/ablations_industrial_seed0
    # a later session, seed 1 beside the kept seed 0
    .venv/bin/python benchmarks/ablations.py --dataset industrial --kept runs/sweeps/ablations_industrial_seed0 \\
        --sweep runs/sweeps/ablations_industrial_seed1
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    RESULTS_DIR,
    BenchmarkRun,
    decode_ranks,
    encode_ranks,
    markdown_table,
    per_user_path,
    read_input_json,
    read_per_user,
    script_error,
    stage_folder,
    stage_seeds,
    write_per_user,
)

from alignrec.errors import InputError
from alignrec.utils.io import read_json

METRICS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")
# Semantic Convergence (arXiv 2412.13771), Table 3: ablations on Games, Llama-7B, HR@5 (as quoted in SPEC.md).
PAPER_SOURCE = "Semantic Convergence (arXiv 2412.13771) Table 3, Games, Llama-7B, HR@5, as quoted in ../shared/SPEC.md"
PAPER_HR5 = {"full": 0.0858, "ED": 0.0817, "w/o LA": 0.0836, "w/o NS": 0.0791}


def fail(message: str) -> SystemExit:
    return script_error("ablations", message)


def read_record(path: Path, what: str) -> dict[str, Any]:
    return read_input_json(path, what, "ablations")


@dataclass
class Replicate:
    """One cell of one sweep folder."""

    cell: str
    folder: str  # the sweep folder, as given: what pairs a cell with the reference cell of the same replicate
    where: str  # what messages name: SWEEP/cells/<cell>.json, or the kept entry
    row: dict[str, Any]  # the sweep's row: metrics, ci95, users, steps, seconds, ...
    seeds: dict[str, int | None]  # stage -> seed
    users: dict[str, Any]  # what identifies the evaluated users
    sampled: bool
    ranks: np.ndarray | None  # (U,) 0-based rank of each user's item (-1 = not in the top 10); None: figures only
    paired: dict[str, Any] | None = None  # figures only: the paired column as it was
    kept: str | None = None  # a kept replicate: the file (and commit) it came from


_datasets: dict[Path, Any] = {}  # prepared data sets by folder: the cells of a sweep share one


def load_replicate(summary_path: Path, folder: Path) -> Replicate:
    from alignrec.data import load_dataset
    from alignrec.pipeline.report import prediction_ranks, sample_rows

    summary = read_record(summary_path, "a cell summary written by `alignrec sweep`")
    row, stages = summary.get("row"), summary.get("stages")
    if not isinstance(row, dict) or not isinstance(stages, dict) or "cell" not in summary:
        raise fail(f"{summary_path}: expected the keys cell, row and stages of a sweep's cell summary")
    missing = [f"row.{m}" for m in METRICS if not isinstance(row.get(m), (int, float))]
    missing += [f"stages.{name}" for name in ("prepare", "evaluate") if name not in stages]
    if missing:
        raise fail(f"{summary_path}: expected the metrics {list(METRICS)} in row and the prepare and evaluate stages; "
                   f"missing {missing}")
    seeds = stage_seeds(stages, summary_path, "ablations")
    evaluation_dir = stage_folder(stages["evaluate"], summary_path, "ablations")
    evaluation = read_record(evaluation_dir / "metrics.json", "the metrics of the evaluate stage")
    manifest = evaluation_dir / "shards" / "manifest.json"
    users = {"users": evaluation.get("users"), "users_in_split": evaluation.get("users_in_split"),
             "rows_sha256": (read_json(manifest).get("settings") or {}).get("rows_sha256") if manifest.is_file() else None}
    prepared = stage_folder(stages["prepare"], summary_path, "ablations").resolve()
    if prepared not in _datasets:
        _datasets[prepared] = load_dataset(prepared)
    dataset, predictions = _datasets[prepared], evaluation_dir / "predictions.jsonl"
    ranks = prediction_ranks(dataset, predictions, sample_rows(dataset, predictions))
    return Replicate(str(summary["cell"]), str(folder), str(summary_path), row, seeds, users,
                     bool(evaluation.get("sampled")), ranks)


def load_sweeps(folders: Sequence[Path]) -> dict[str, list[Replicate]]:
    """Cell name -> its replicates (one per sweep folder that has the cell)."""
    cells: dict[str, list[Replicate]] = {}
    for folder in folders:
        summaries = sorted((folder / "cells").glob("*.json"))
        if not summaries:
            raise fail(f"{folder}/cells: no cell summaries; expected a folder written by `alignrec sweep`")
        for path in summaries:
            replicate = load_replicate(path, folder)
            cells.setdefault(replicate.cell, []).append(replicate)
    return cells


def load_kept(folder: str, dataset: str, results_dir: Path) -> list[Replicate]:
    """``--kept SWEEP``: the cells of a sweep folder kept in ``per_user/ablations_<dataset>.json``, else (written
    before replicates were kept) their figures in ``ablations_<dataset>.json``."""
    kept = read_per_user(results_dir, f"ablations_{dataset}", "ablations").get("entries") or {}
    where = per_user_path(results_dir, f"ablations_{dataset}")
    if folder in kept:
        entry = kept[folder]
        try:
            label = entry.get("kept") or f"per_user/{where.name}, commit {str(entry.get('git_commit'))[:12]}"
            return [Replicate(name, folder, f"{where}: entries.{folder}.cells.{name}", c["row"], c["seeds"], c["users"],
                              bool(c["sampled"]),
                              None if c["ranks"] is None else decode_ranks(c["ranks"], f"{where}: entries.{folder}.cells.{name}.ranks"),
                              c.get("paired"), label) for name, c in entry["cells"].items()]
        except (KeyError, TypeError, AttributeError, InputError) as error:
            raise fail(f"{where}: entries.{folder}: {error}; expected the cells this script keeps for a sweep folder "
                       "(row, seeds, users, sampled, ranks)") from None
    results = results_dir / f"ablations_{dataset}.json"
    record = read_record(results, "the results of an earlier run of benchmarks/ablations.py") if results.is_file() else {}
    sweeps = record.get("sweeps") or []
    if folder not in sweeps:
        raise fail(f"--kept {folder}: no such sweep folder in {where} or {results}; kept folders: "
                   f"{sorted(set(kept) | set(sweeps)) or 'none'}")
    index, replicates = sweeps.index(folder), []
    for row in record["rows"]:
        if row["seeds"] != len(sweeps):
            raise fail(f"{results}: cell {row['cell']!r} has {row['seeds']} of {len(sweeps)} sweep folders: which "
                       f"values are {folder}'s is not recorded")
        figures = {m: row["values"][m][index] for m in METRICS}
        if len(sweeps) == 1:  # one replicate: the row is its own figures
            figures.update({key: row.get(key) for key in ("ci95", "tokenizer", "levels", "raw collision", "steps", "seconds")})
        paired = row.get("paired_vs_reference")
        replicates.append(Replicate(row["cell"], folder, f"{results}: {row['cell']}", figures, row["seed_values"][index],
                                    {"users": row["users"]}, bool(record.get("sampled")), None,
                                    paired if paired and index == 0 else None,
                                    f"{results.name}, commit {str(record.get('git_commit'))[:12]}, figures only"))
    return replicates


def kept_entries(cells: dict[str, list[Replicate]], commit: str | None) -> dict[str, Any]:
    """What ``per_user/ablations_<dataset>.json`` keeps: sweep folder -> its cells."""
    entries: dict[str, Any] = {}
    for replicates in cells.values():
        for r in replicates:
            entry = entries.setdefault(r.folder, {"git_commit": commit if r.kept is None else None, "kept": r.kept,
                                                  "cells": {}})
            entry["cells"][r.cell] = {"row": r.row, "seeds": r.seeds, "users": r.users, "sampled": r.sampled,
                                      "ranks": None if r.ranks is None else encode_ranks(r.ranks),
                                      "paired": r.paired if r.ranks is None else None}
    return entries


def check_replicates(cells: dict[str, list[Replicate]], allow_sampled: bool) -> None:
    """Distinct seeds within a cell; the same test users everywhere; no sample without the flag."""
    reference = next(iter(cells.values()))[0]
    for name, replicates in cells.items():
        for i, replicate in enumerate(replicates):
            twin = next((other for other in replicates[:i] if other.seeds == replicate.seeds), None)
            if twin is not None:
                raise fail(f"cell {name!r}: {twin.where} and {replicate.where} ran the same seeds "
                           f"({seeds_text(replicate.seeds)}); they are one result, not two replicates")
            if not same_users(replicate.users, reference.users):
                raise fail(f"{replicate.where} scored other test users than {reference.where} "
                           f"({replicate.users} vs {reference.users}); the table compares cells on the same users")
            if replicate.sampled and not allow_sampled:
                raise fail(f"{replicate.where}: the evaluation scored a sample of {replicate.users['users']} of "
                           f"{replicate.users.get('users_in_split')} test users; evaluate every user (or pass --allow-sampled)")


def same_users(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two replicates scored the same users: every identifier both recorded agrees (a replicate kept with
    its figures only recorded just its number of users)."""
    return a["users"] == b["users"] and all(a[key] == b[key] for key in a.keys() & b.keys())


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


def with_changes(rows: list[dict[str, Any]], cells: dict[str, list[Replicate]], reference: str) -> None:
    """Each row's relative change from the reference cell (ours and, where it has the cell, the paper's).

    The reference's mean is taken over the sweep folders the row's cell has (the same seeds), so a
    cell run with fewer seeds than the reference is not measured against other seeds' figures; a
    cell with no folder in common is measured against every replicate of the reference (``main``
    has checked that the reference cell exists)."""
    for row in rows:
        folders = {r.folder for r in cells[row["cell"]]}
        base = [r for r in cells[reference] if r.folder in folders] or cells[reference]
        means = cell_row(reference, base)["mean"]
        row["vs_reference"] = {m: (row["mean"][m] / means[m] - 1.0) if means[m] else None for m in ("hr@5", "ndcg@10")}
        row["vs_reference_folders"] = sorted(r.folder for r in base)
        paper = PAPER_HR5.get(row["cell"])
        row["paper_hr@5"] = paper
        row["paper_hr@5_vs_full"] = None if paper is None else paper / PAPER_HR5["full"] - 1.0


def with_paired(rows: list[dict[str, Any]], cells: dict[str, list[Replicate]], reference: str) -> None:
    """Each cell minus the reference cell of the same sweep folder (the first that has both), per user.

    A paired bootstrap over users: the interval says whether a change is larger than the noise of
    the test users (not of the training seed). A replicate kept with its figures only brings its
    paired column as it was, when no folder with per-user ranks has both cells."""
    from alignrec.pipeline.report import paired_difference

    base = {r.folder: r for r in cells[reference]}
    for row in rows:
        row["paired_vs_reference"] = None
        if row["cell"] == reference:
            continue
        replicates = [r for r in cells[row["cell"]] if r.folder in base]
        scored = next((r for r in replicates if r.ranks is not None and base[r.folder].ranks is not None), None)
        if scored is not None:
            difference = paired_difference(scored.ranks, base[scored.folder].ranks)
            row["paired_vs_reference"] = {"folder": scored.folder, **{m: difference[m] for m in ("hr@10", "ndcg@10")}}
        else:
            row["paired_vs_reference"] = next((r.paired for r in replicates if r.paired), None)


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


def table_notes(rows: list[dict[str, Any]], folders: Sequence[str], kept: dict[str, str], sampled: bool) -> list[str]:
    notes = [
        f"Cells of {len(folders)} sweep folder(s): {', '.join(folders)}; one replicate per "
        "folder. Several seeds: mean ± sample standard deviation over the seeds; 1 seed: the value, with its 95% "
        "bootstrap interval over users. The 'vs' columns: the cell's mean against the reference cell's mean over "
        "the same seed folders. The paired column: the cell minus the reference cell of the same sweep "
        "folder (the first seed folder that has both with per-user ranks; a 'figures only' folder, as it was, "
        "when none has), per user, with a paired 95% bootstrap interval over users.",
        f"paper: {PAPER_SOURCE} (full {PAPER_HR5['full']}, ED {PAPER_HR5['ED']}, w/o LA {PAPER_HR5['w/o LA']}, "
        f"w/o NS {PAPER_HR5['w/o NS']}); other data, backbone and budget: compare the direction of the changes.",
    ]
    if kept:
        notes.append("Sweep folders kept from an earlier run of this script (the folders are gone; --kept): " + "; ".join(
            f"{folder} from {where}" for folder, where in kept.items()) + ". 'figures only' folders bring their figures "
            "and paired column as they were; their users are checked by count only.")
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
    parser.add_argument("--sweep", action="append", default=[], metavar="SWEEP",
                        help="a finished sweep folder (SWEEP/cells/*.json); repeat it for each seed's folder")
    parser.add_argument("--kept", action="append", default=[], metavar="SWEEP",
                        help="a sweep folder kept by an earlier run of this script (per_user/ablations_<dataset>.json in "
                        "--results-dir), as it was named then; repeatable")
    parser.add_argument("--reference", default="full", help="the cell the changes are measured from (default: full)")
    parser.add_argument("--allow-sampled", action="store_true", help="accept evaluations of a sample of the test users")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where ablations_<dataset>.json/.md go")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> tuple[Path, Path]:
    args = parse_args(argv)
    if not args.sweep and not args.kept:
        raise fail("give at least one --sweep SWEEP or --kept SWEEP")
    folders = [*args.kept, *args.sweep]
    if len(set(folders)) != len(folders):
        raise fail(f"--sweep/--kept: each sweep folder once, got {folders}")
    results_dir = Path(args.results_dir)
    cells: dict[str, list[Replicate]] = {}
    for folder in args.kept:  # kept folders first: the seeds as they were added
        for replicate in load_kept(folder, args.dataset, results_dir):
            cells.setdefault(replicate.cell, []).append(replicate)
    for name, replicates in load_sweeps([Path(folder) for folder in args.sweep]).items():
        cells.setdefault(name, []).extend(replicates)
    check_replicates(cells, args.allow_sampled)
    if args.reference not in cells:
        raise fail(f"--reference {args.reference!r}: no such cell; cells are {sorted(cells)}")
    order = [args.reference, *sorted(name for name in cells if name != args.reference)]
    rows = [cell_row(name, cells[name]) for name in order]
    with_changes(rows, cells, args.reference)
    with_paired(rows, cells, args.reference)
    sampled = any(r.sampled for replicates in cells.values() for r in replicates)
    kept = {r.folder: r.kept for replicates in cells.values() for r in replicates if r.kept}
    bench = BenchmarkRun(f"ablations_{args.dataset}", results_dir=results_dir, description=(
        f"Ablations on {args.dataset} ({rows[0]['users']:,} test users{', SAMPLED' if sampled else ''}): each cell of "
        f"the sweep against the {args.reference!r} cell; leave-one-out, full ranking over all items."))
    for row in rows:
        bench.add_row(row)
    bench.extra.update(dataset=args.dataset, sampled=sampled, reference=args.reference, sweeps=folders, kept=kept,
                       paper_source=PAPER_SOURCE, paper_hr5=PAPER_HR5)
    outputs = bench.finish(notes=table_notes(rows, folders, kept, sampled), body=table_markdown(rows, args.reference))
    commit = read_record(outputs[0], "the results just written")["git_commit"]
    entries = read_per_user(results_dir, f"ablations_{args.dataset}", "ablations").get("entries") or {}
    fresh = kept_entries(cells, commit)
    for folder, entry in fresh.items():  # a kept folder keeps the commit that scored it
        entry["git_commit"] = entry["git_commit"] or (entries.get(folder) or {}).get("git_commit")
    entries.update(fresh)  # folders of other tables stay kept
    write_per_user(results_dir, f"ablations_{args.dataset}", entries,
                   f"benchmarks/ablations.py: the cells of each sweep folder of ablations_{args.dataset} (--kept SWEEP)")
    return outputs


if __name__ == "__main__":
    os.environ.setdefault("ALIGNREC_PROGRESS", "0")
    print(*main())
