"""A sweep's cells against the classic models, over seeds and under both protocols.

    .venv/bin/alignrec sweep configs/paper/token_init.yaml --cell default --cell SA-Init \\
        --set behaviour.seed=2025 --set tokenizer.seed=1 --set tasks.seed=43 --set finetune.seed=43 \\
        --out runs/sweeps/token_init_ml100k_seed1 --results runs/sweeps/token_init_ml100k_seed1
    .venv/bin/python benchmarks/seeds.py --name token_init_ml-100k --reference default \\
        --sweep runs/sweeps/token_init_ml100k_seed0 --sweep runs/sweeps/token_init_ml100k_seed1 ...

``--cell`` keeps only the named cells (in that order), for folders that ran different cell sets.

Reads finished ``alignrec sweep`` folders, one per seed (each folder one replicate of every cell,
its seeds set with ``--set``); trains and searches nothing. Every folder must have every cell and
score the same test users (all of them). The classic models are the behaviour models and the
baselines of each folder's cells, trained to early stopping with that folder's seeds, so both sides
of a comparison vary with the seed (cells that train one model with different settings: the first
cell's).

Per model (each cell's LLM and each classic model) and protocol (main: every item competes; seen
items excluded, where the evaluations ran both, ``evaluate.exclude: both``): NDCG@10 and HR@10 of
every seed and their mean. The differences are paired over the same users: per user, the metric
averaged over the seeds, a cell minus the best classic model (the highest mean NDCG@10 under that
protocol) and minus the reference cell, with a paired bootstrap 95% interval over users. A seed
mean removes training noise; the interval is the noise of the test users.
Writes ``benchmarks/results/seeds_<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    BenchmarkRun,
    classic_stages,
    paired_seed_means,
    paired_text,
    read_input_json,
    script_error,
    seed_mean_per_user,
    stage_folder,
    stage_seeds,
)

PROTOCOLS = {"main": "predictions.jsonl", "seen excluded": "predictions_seen_excluded.jsonl"}
METRICS = ("ndcg@10", "hr@10")


def fail(message: str) -> SystemExit:
    return script_error("seeds", message)


def read_folder(folder: Path) -> dict[str, Any]:
    """One seed's folder: ``{"cells": {cell: {protocol: ranks}}, "classic": {model: {protocol: ranks}}, "seeds", "users"}``."""
    from alignrec.data import load_dataset
    from alignrec.pipeline.report import collab_test_ranks, prediction_ranks

    summaries = sorted((folder / "cells").glob("*.json"))
    if not summaries:
        raise fail(f"{folder}/cells: no cell summaries; expected a folder written by `alignrec sweep`")
    cells: dict[str, dict[str, np.ndarray]] = {}
    classic: dict[str, dict[str, np.ndarray]] = {}
    seeds: dict[str, Any] = {}
    dataset, users = None, None
    for path in summaries:
        summary = read_input_json(path, "a cell summary written by `alignrec sweep`", "seeds")
        stages = summary.get("stages")
        if not isinstance(stages, dict) or "evaluate" not in stages or "prepare" not in stages or "cell" not in summary:
            raise fail(f"{path}: expected a cell summary with the cell name and its prepare and evaluate stages")
        if dataset is None:
            dataset = load_dataset(stage_folder(stages["prepare"], path, "seeds"))
            users = len(dataset.split("test"))
        evaluation_dir = stage_folder(stages["evaluate"], path, "seeds")
        evaluation = read_input_json(evaluation_dir / "metrics.json", "the metrics of the evaluate stage", "seeds")
        if evaluation.get("sampled") or evaluation.get("users") != users or evaluation.get("split", "test") != "test":
            raise fail(f"{evaluation_dir}/metrics.json: scored {evaluation.get('users')} {evaluation.get('split')} users; "
                       f"the comparison needs all {users} test users")
        rows = np.arange(users)
        cells[str(summary["cell"])] = {protocol: prediction_ranks(dataset, evaluation_dir / name, rows)
                                       for protocol, name in PROTOCOLS.items() if (evaluation_dir / name).is_file()}
        for model, out in classic_stages(stages, path, "seeds").items():
            if model not in classic:  # (cells that train the same model differently: the first cell's)
                classic[model] = {"main": collab_test_ranks(out, dataset),
                                  "seen excluded": collab_test_ranks(out, dataset, seen_excluded=True)}
        seeds = stage_seeds(stages, path, "seeds") | seeds  # the cells share the seeds of a folder
    return {"cells": cells, "classic": classic, "seeds": seeds, "users": users, "folder": str(folder)}


def only_cells(folder: dict[str, Any], cells: Sequence[str] | None) -> dict[str, Any]:
    """The folder with only ``cells`` (in that order; None = all of them)."""
    if cells is None:
        return folder
    missing = [c for c in cells if c not in folder["cells"]]
    if missing:
        raise fail(f"{folder['folder']} has no cell {missing[0]!r}; cells: {sorted(folder['cells'])}")
    return folder | {"cells": {c: folder["cells"][c] for c in cells}}


def compare(folders: list[dict[str, Any]], reference: str | None) -> dict[str, list[dict[str, Any]]]:
    """Per protocol, the rows of the table (cells first, then the classic models)."""
    from alignrec.metrics import metrics_from_ranks

    first = folders[0]
    for other in folders[1:]:
        if other["users"] != first["users"]:
            raise fail(f"{other['folder']} scored {other['users']} test users, {first['folder']} {first['users']}: "
                       "the seeds must share one split")
        for kind in ("cells", "classic"):
            if set(other[kind]) != set(first[kind]):
                raise fail(f"{other['folder']} has the {kind} {sorted(other[kind])}, {first['folder']} "
                           f"{sorted(first[kind])}: every folder needs the same ones")
    if reference is not None and reference not in first["cells"]:
        raise fail(f"--reference {reference!r}: no such cell; cells: {sorted(first['cells'])}")
    tables: dict[str, list[dict[str, Any]]] = {}
    for protocol in PROTOCOLS:
        if not all(protocol in ranks for f in folders for ranks in f["cells"].values()):
            continue  # an evaluation without that protocol
        models = {**{f"LLM: {c}": [f["cells"][c][protocol] for f in folders] for c in first["cells"]},
                  **{m: [f["classic"][m][protocol] for f in folders] for m in first["classic"]}}
        averaged = {name: seed_mean_per_user(ranks, METRICS) for name, ranks in models.items()}
        best = max(first["classic"], key=lambda m: averaged[m]["ndcg@10"].mean())
        rows = []
        for name, ranks in models.items():
            seeds = [metrics_from_ranks(r, [10]) for r in ranks]
            row: dict[str, Any] = {"model": name, "kind": "classic" if name in first["classic"] else "LLM",
                                   "seeds": len(ranks), **{f"{m} per seed": [round(s[m], 6) for s in seeds] for m in METRICS},
                                   **{m: float(averaged[name][m].mean()) for m in METRICS},
                                   "ndcg@10 sd over seeds": float(np.std([s["ndcg@10"] for s in seeds], ddof=1)) if len(seeds) > 1 else None}
            against = {"best classic": best} | ({"reference": f"LLM: {reference}"} if reference else {})
            for label, other in against.items():
                if other == name:
                    continue
                row[f"ndcg@10 - {label}"] = {"against": other,
                                             **paired_seed_means(averaged[name]["ndcg@10"], averaged[other]["ndcg@10"])}
            rows.append(row)
        tables[protocol] = rows
    return tables


def table_markdown(rows: list[dict[str, Any]]) -> str:
    from alignrec.utils.tables import markdown_table

    best = next((r["ndcg@10 - best classic"]["against"] for r in rows if r.get("ndcg@10 - best classic")), "")
    reference = next((r["ndcg@10 - reference"]["against"] for r in rows if r.get("ndcg@10 - reference")), None)
    shown = [{"model": r["model"], "NDCG@10 per seed": ", ".join(f"{v:.4f}" for v in r["ndcg@10 per seed"]),
              "NDCG@10 mean": f"{r['ndcg@10']:.4f}", "HR@10 mean": f"{r['hr@10']:.4f}",
              f"NDCG@10 - {best} (paired, seed means)": paired_text(r.get("ndcg@10 - best classic")),
              **({f"NDCG@10 - {reference} (paired, seed means)": paired_text(r.get("ndcg@10 - reference"))} if reference else {})}
             for r in rows]
    return markdown_table(shown)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="results file name: seeds_<name>.{json,md}")
    parser.add_argument("--sweep", action="append", required=True, metavar="SWEEP", help="a finished sweep folder of one seed; repeat per seed")
    parser.add_argument("--reference", help="the cell every other cell is also compared with (e.g. default)")
    parser.add_argument("--cell", action="append", dest="cells", metavar="CELL",
                        help="compare only this cell (repeatable; default: every cell, which every folder must have)")
    parser.add_argument("--results-dir", help="where the results files go (default benchmarks/results)")
    args = parser.parse_args(argv)
    folders = [only_cells(read_folder(Path(f)), args.cells) for f in args.sweep]
    seeds = [f["seeds"] for f in folders]
    twins = [i for i, s in enumerate(seeds) if s in seeds[:i]]
    if twins:
        raise fail(f"{args.sweep[twins[0]]} ran the same seeds as an earlier folder ({seeds[twins[0]]}): one result, not two")
    tables = compare(folders, args.reference)
    extra = {"results_dir": Path(args.results_dir)} if args.results_dir else {}
    run = BenchmarkRun(f"seeds_{args.name}", **extra, description=(
        f"The cells of {len(folders)} sweep folders (one per seed) against the classic models trained in the same runs, "
        f"on all {folders[0]['users']} test users, under both protocols (main: every item competes; seen items excluded). "
        "Differences: per user, the metric averaged over the seeds, paired bootstrap 95% interval over users."))
    for protocol, rows in tables.items():
        for row in rows:
            run.add_row({"protocol": protocol, **row})
    run.extra.update({"sweeps": [f["folder"] for f in folders], "seeds": seeds, "reference": args.reference})
    body = "\n".join(f"## {protocol.capitalize()}\n\n{table_markdown(rows)}" for protocol, rows in tables.items())
    notes = ["Seeds per folder (stage: seed): " + "; ".join(f"{f['folder']}: " + ", ".join(f"{k} {v}" for k, v in f["seeds"].items())
                                                            for f in folders),
             "The best classic model is the one with the highest mean NDCG@10 under that protocol, chosen on test as the "
             "issue's table chooses it; every classic model is trained to early stopping on validation in its seed's run."]
    json_path, md_path = run.finish(notes=notes, body=body)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
