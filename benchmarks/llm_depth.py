"""NDCG@10 of the fine-tuned LLM against its decoder depth, at equal CPU minutes of fine-tuning.

For each depth N the first N decoder layers of SmolLM2-135M are fine-tuned on the tasks of a
prepared run (the main job's ``runs/ml100k``: its data set, item codes and alignment tasks) for
the same wall-clock budget (``--minutes``) with the settings of the config's finetune section,
then evaluated by constrained beam search on **every** test user. A shallow model sees more
data in the same minutes; a deep one learns more per example — the table says which wins on a
CPU. Each depth is its own process; finished depths are kept in ``benchmarks/results/llm_depth_<dataset>.partial.json``
so an interrupted run continues where it stopped. Run under the shared lock::

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/llm_depth.py --run runs/ml100k --minutes 4 \
        --jobs 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO_ROOT, RESULTS_DIR, BenchmarkRun, run_measured

from alignrec.utils.io import atomic_write_json, read_json


def finetune_flags(config_path: Path) -> list[str]:
    """The config's finetune settings as ``alignrec finetune`` flags (budgets are set by this script)."""
    from alignrec.config import load_config_file

    settings = dict(load_config_file(config_path).get("finetune", {}))
    for budget in ("max_steps", "epochs", "max_train_minutes", "llm_layers", "rank_eval_steps", "early_stopping_patience",
                   "lr_scheduler", "warmup_ratio"):
        settings.pop(budget, None)
    # A wall-clock budget has no known step count, so no schedule can decay over it: a constant
    # learning rate after a short warm-up of 20 steps (warmup_ratio would be a share of max_steps).
    settings.update(lr_scheduler="constant_with_warmup", warmup_ratio=20 / 100000)
    flags: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/ml100k", help="a run folder with dataset/, tokenizer/ and tasks/")
    parser.add_argument("--config", default="configs/ml100k.yaml", help="its config (the finetune settings used)")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16, 30])
    parser.add_argument("--minutes", type=float, default=4.0, help="fine-tuning wall-clock minutes per depth")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each depth's processes")
    parser.add_argument("--jobs", type=int, default=1,
                        help="depths run at once (e.g. 2 jobs x 1 thread on 2 cores: equal CPU per depth)")
    parser.add_argument("--work", default="runs/llm_depth", help="scratch folder for the models")
    parser.add_argument("--dataset-name", default="ml-100k", help="names the results file llm_depth_<name>")
    args = parser.parse_args()

    run_dir = REPO_ROOT / args.run
    name = f"llm_depth_{args.dataset_name}"
    partial_path = RESULTS_DIR / f"{name}.partial.json"
    done = {row["layers"]: row for row in (read_json(partial_path)["rows"] if partial_path.is_file() else [])}
    bench = BenchmarkRun(name, description=(
        f"NDCG@10 on all test users against the decoder depth of SmolLM2-135M, each depth fine-tuned for "
        f"{args.minutes:g} wall-clock minutes on {args.threads} threads (settings: {args.config}, run {args.run})."))
    flags = finetune_flags(REPO_ROOT / args.config)

    def measure(depth: int) -> dict:
        out = REPO_ROOT / args.work / f"layers{depth}"
        if out.exists():
            shutil.rmtree(out)
        train = run_measured([
            str(REPO_ROOT / ".venv/bin/alignrec"), "finetune", "--data", str(run_dir), "--out", str(out / "finetune"),
            *flags, "--llm-layers", str(depth), "--max-steps", "100000", "--max-train-minutes", str(args.minutes),
            "--torch-threads", str(args.threads), "--no-save-adapter", "--save-steps", "100000",
        ]).check()
        shutil.copytree(run_dir / "dataset", out / "dataset")
        evaluation = run_measured([
            str(REPO_ROOT / ".venv/bin/alignrec"), "evaluate", "--model", str(out / "finetune"), "--data", str(out),
            "--out", str(out / "evaluate"), "--batch-size", "32",
        ], env={"OMP_NUM_THREADS": str(args.threads)}).check()
        metrics = read_json(out / "finetune" / "metrics.json")
        scores = read_json(out / "evaluate" / "metrics.json")
        row = {
            "layers": depth,
            "minutes": args.minutes,
            "steps": metrics.get("steps"),
            "epochs": metrics.get("epochs"),
            "code_tokens_per_s": metrics.get("code_tokens_per_second"),
            "train_loss": metrics.get("train_loss"),
            "users": scores.get("users"),
            "hr@10": round(scores["metrics"]["hr@10"], 4),
            "ndcg@10": round(scores["metrics"]["ndcg@10"], 4),
            "ndcg@5": round(scores["metrics"]["ndcg@5"], 4),
            "finetune_wall_s": train.wall_s,
            "evaluate_wall_s": evaluation.wall_s,
            "eval_users_per_s": scores.get("users_per_s"),
            "threads": args.threads,
            "parallel_jobs": args.jobs,
        }
        return row

    todo = [d for d in args.depths if not (d in done and done[d].get("minutes") == args.minutes)]
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each depth is its own child process
        for depth, row in zip(todo, pool.map(measure, todo)):
            with lock:
                done[depth] = row
                atomic_write_json(partial_path, {"rows": sorted(done.values(), key=lambda r: r["layers"])})
            print(json.dumps(row), file=sys.stderr, flush=True)
    for depth in args.depths:
        bench.add_row(done[depth])
    bench.extra.update(minutes=args.minutes, threads=args.threads, jobs=args.jobs, run=args.run, config=args.config)
    json_path, md_path = bench.finish(notes=[
        "Equal wall-clock budget and threads per depth on the same 2-core machine (jobs x threads <= 2 cores); "
        "steps and epochs show how much data each saw.",
        "Every test user is scored (constrained beam search, the config's evaluate settings are not used: beam 20).",
    ])
    partial_path.unlink(missing_ok=True)
    print(json_path, md_path)


if __name__ == "__main__":
    main()
