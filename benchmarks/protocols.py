"""The main job's models under both protocols: main (every item competes) and seen items excluded.

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/protocols.py --run runs/ml100k

Reads a finished main-job run (read only). The LLM is evaluated again with ``alignrec
evaluate --exclude both`` and the run's own evaluate settings, into a temporary folder: its
main-protocol predictions must equal the run's ``evaluate/predictions.jsonl`` byte for byte (checked
here), and the seen-excluded lists come from the beam search with every item the user had before
the target excluded inside it. Every classic model of the run (the behaviour model and the
baselines) is re-scored under both protocols with its trainer's own ranking
(:func:`alignrec.pipeline.report.collab_test_ranks`). All on every test user; 95% bootstrap
intervals over users, and the LLM minus each classic model paired over the same users.
Writes ``benchmarks/results/e2e_<dataset>_protocols.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchmarkRun  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished main-job run folder (read only)")
    parser.add_argument("--name", default="e2e_ml-100k_protocols")
    parser.add_argument("--results-dir", help="where the results files go (default benchmarks/results)")
    args = parser.parse_args()
    run_dir = Path(args.run).resolve()

    import numpy as np

    from alignrec.config import from_mapping
    from alignrec.data.dataset import load_dataset
    from alignrec.evaluate.recipe import EvaluateConfig, evaluate
    from alignrec.pipeline.report import (collab_test_ranks, comparison_row, paired_difference, prediction_ranks,
                                          with_interval_columns)
    from alignrec.utils.io import read_json
    from alignrec.utils.tables import markdown_table

    recorded = read_json(run_dir / "evaluate" / "config.json")["config"]
    config = from_mapping(EvaluateConfig, {**recorded, "exclude": "both"}, source=str(run_dir / "evaluate" / "config.json"))
    extra = {"results_dir": Path(args.results_dir)} if args.results_dir else {}
    run = BenchmarkRun(args.name, **extra, description=(
        f"The models of the main job's run `{run_dir.name}` under both protocols on every test user: main (every item "
        "competes) and seen items excluded (no item the user interacted with before the target: for the LLM excluded "
        "inside the constrained beam search, for the classic models their trainer's seen-excluded ranking)."))
    dataset = load_dataset(run_dir / "dataset")
    with tempfile.TemporaryDirectory(prefix="alignrec-protocols-") as folder:
        report = evaluate(config, run_dir, out=Path(folder))
        main_file, seen_file = Path(folder) / "predictions.jsonl", Path(report["seen_excluded"]["predictions"])
        identical = main_file.read_bytes() == (run_dir / "evaluate" / "predictions.jsonl").read_bytes()
        if not identical:
            raise SystemExit("the main protocol's predictions differ from the run's evaluate/predictions.jsonl")
        rows = np.arange(len(dataset.split("test")))
        ranks = {"LLM (alignment codes)": (prediction_ranks(dataset, main_file, rows), prediction_ranks(dataset, seen_file, rows))}
    for folder in sorted((run_dir / "collab").iterdir()):
        model = read_json(folder / "config.json")["config"]["train"]["model"]
        ranks[model] = (collab_test_ranks(folder, dataset), collab_test_ranks(folder, dataset, seen_excluded=True))
    llm = ranks["LLM (alignment codes)"]
    main_rows, seen_rows, versus = [], [], []
    for model, (main, seen) in ranks.items():
        main_rows.append(comparison_row(model, main))
        seen_rows.append(comparison_row(model, seen))
        if model != "LLM (alignment codes)":
            versus.append({"model": model, "main": paired_difference(llm[0], main), "seen_excluded": paired_difference(llm[1], seen)})
        run.add_row({"model": model, "users": int(len(main)),
                     "hr@10": main_rows[-1]["hr@10"], "ndcg@10": main_rows[-1]["ndcg@10"],
                     "hr@10 seen excluded": seen_rows[-1]["hr@10"], "ndcg@10 seen excluded": seen_rows[-1]["ndcg@10"],
                     "ci95": main_rows[-1]["ci95"], "ci95_seen_excluded": seen_rows[-1]["ci95"]})
    run.extra.update({"run": str(run_dir), "model_version": report["model_version"], "evaluate_config": recorded,
                      "main_predictions_identical_to_run": identical, "main": main_rows, "seen_excluded": seen_rows,
                      "llm_vs_classic": versus, "llm_seen_excluded_elapsed_s": report["seen_excluded"]["elapsed_s"]})
    columns = ["model", "users", "hr@1", "hr@5", "hr@10", "hr@10 95% CI", "ndcg@5", "ndcg@10", "ndcg@10 95% CI"]
    differences = [{"model": row["model"],
                    **{f"{protocol}: Δ ndcg@10": f"{row[key]['ndcg@10']['difference']:+.4f} "
                       f"[{row[key]['ndcg@10']['ci95'][0]:+.4f}, {row[key]['ndcg@10']['ci95'][1]:+.4f}]"
                       for protocol, key in (("main", "main"), ("seen excluded", "seen_excluded"))}} for row in versus]
    body = "\n".join([
        "## Main protocol (every item competes)", "", markdown_table(with_interval_columns(main_rows), columns),
        "## Seen items excluded", "", markdown_table(with_interval_columns(seen_rows), columns),
        "## LLM minus each classic model (paired bootstrap 95% interval, same users)", "", markdown_table(differences),
    ])
    notes = [f"the LLM's main-protocol predictions are byte-identical to the run's evaluate/predictions.jsonl: {identical}",
             f"the LLM's seen-excluded search took {report['seen_excluded']['elapsed_s']} s for {len(rows)} users"]
    json_path, md_path = run.finish(notes=notes, body=body)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
