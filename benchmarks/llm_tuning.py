"""The main job's LLM settings against each other: test NDCG@10 on every user, paired with SASRec.

Each variant is the main config (``configs/ml100k.yaml``) with a few ``--set`` overrides, run
by ``alignrec run ... --until evaluate`` in its own folder. The stages a variant does not change
(data, SASRec, and the tokenizer/tasks when only fine-tuning settings differ) are copied from a
finished base run, so the pipeline reuses them and only what changed is recomputed. Every
variant is scored by constrained beam search on **all** test users and compared with the base
run's SASRec on the same users (paired bootstrap interval of the difference). Budgets are fixed
step counts (``finetune.max_steps``), so variants that run side by side (``--jobs 2 --threads
1`` on 2 cores) train the same way they would alone; only their wall-clock times are shared.

Finished variants are kept in ``benchmarks/results/<name>.partial.json``; an interrupted sweep
continues where it stopped. Run under the shared lock, from a finished base run::

    .venv/bin/alignrec run configs/ml100k.yaml --until tasks
    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/llm_tuning.py --jobs 2 --threads 1 \\
        --variant "codes 3x32" tokenizer.codebook_size=32 --variant "codes 3x64" tokenizer.codebook_size=64
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO_ROOT, RESULTS_DIR, BenchmarkRun, run_measured

from alignrec.utils.io import atomic_write_json, read_json

# The base run's stage folders a variant starts from (the pipeline replaces those whose settings changed).
SHARED_STAGES = ("dataset", "collab", "baselines", "tokenizer", "tasks")


def parse_variants(raw: list[list[str]]) -> dict[str, list[str]]:
    variants: dict[str, list[str]] = {}
    for name, *overrides in raw:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise SystemExit(f"--variant {name!r}: overrides must be KEY=VALUE, got {bad}")
        if name in variants:
            raise SystemExit(f"--variant {name!r} is given twice")
        variants[name] = overrides
    return variants


def folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ml100k.yaml")
    parser.add_argument("--base", default="runs/ml100k", help="a run of --config finished at least up to tasks")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                        help="a named variant and its --set overrides (none = the config as it is); repeatable")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each variant's fine-tuning")
    parser.add_argument("--jobs", type=int, default=1, help="variants run at once (jobs x threads <= cores)")
    parser.add_argument("--work", default="runs/llm_tuning", help="scratch folder for the variants' runs")
    parser.add_argument("--name", default="llm_tuning_ml-100k", help="results file name")
    args = parser.parse_args()

    variants = parse_variants(args.variant)
    overrides_text = {name: " ".join(overrides) or "(the config)" for name, overrides in variants.items()}
    base = REPO_ROOT / args.base
    missing = [stage for stage in ("dataset", "collab", "tokenizer", "tasks") if not (base / stage).is_dir()]
    if missing:
        raise SystemExit(f"{base}: no {', '.join(missing)} (run `alignrec run {args.config} --until tasks` first)")
    partial_path = RESULTS_DIR / f"{args.name}.partial.json"
    done = {row["variant"]: row for row in (read_json(partial_path)["rows"] if partial_path.is_file() else [])}

    from alignrec.data.dataset import load_dataset
    from alignrec.pipeline.report import collab_test_ranks, comparison_row, paired_difference, prediction_ranks, sample_rows

    dataset = load_dataset(base / "dataset")
    from alignrec.config import load_config_file

    behaviour_model = load_config_file(REPO_ROOT / args.config).get("behaviour", {}).get("model", "dccf")
    reference_dir = base / "collab" / behaviour_model  # the classic model the LLM must beat (SASRec in the main job)
    if not (reference_dir / "metrics.json").is_file():
        raise SystemExit(f"{reference_dir}: no trained {behaviour_model} model (the config's behaviour model)")
    reference_ranks = collab_test_ranks(reference_dir, dataset)
    reference = comparison_row(reference_dir.name, reference_ranks)

    def measure(name: str) -> dict:
        out = REPO_ROOT / args.work / folder_name(name)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for stage in SHARED_STAGES:
            if (base / stage).is_dir():
                shutil.copytree(base / stage, out / stage)
        overrides = [f"out={out.relative_to(REPO_ROOT)}", f"finetune.torch_threads={args.threads}", *variants[name]]
        command = [str(REPO_ROOT / ".venv/bin/alignrec"), "run", args.config, "--until", "evaluate"]
        for override in overrides:
            command += ["--set", override]
        run = run_measured(command, env={"OMP_NUM_THREADS": str(args.threads)}).check()
        finetune = read_json(out / "finetune" / "metrics.json")
        evaluation = read_json(out / "evaluate" / "metrics.json")
        predictions = Path(evaluation["predictions"])
        predictions = predictions if predictions.is_absolute() else REPO_ROOT / predictions
        rows = sample_rows(dataset, predictions)
        if len(rows) != len(reference_ranks):
            raise RuntimeError(f"{name}: {len(rows)} users scored, the split has {len(reference_ranks)}")
        ranks = prediction_ranks(dataset, predictions, rows)
        scored = comparison_row(name, ranks)
        ranking = finetune.get("validation_ranking") or {}
        return {
            "variant": name,
            "overrides": overrides_text[name],
            "steps": finetune.get("steps"),
            "epochs": finetune.get("epochs"),
            "train_loss": finetune.get("train_loss"),
            "eval_loss": finetune.get("eval_loss"),
            "code_tokens_per_s": finetune.get("code_tokens_per_second"),
            "valid_best_step": ranking.get("best_step"),
            "valid_best_ndcg@10": ranking.get("best_ndcg@10"),
            "users": scored["users"],
            "hr@10": round(scored["hr@10"], 4),
            "ndcg@10": round(scored["ndcg@10"], 4),
            "ndcg@10_ci95": [round(v, 4) for v in scored["ci95"]["ndcg@10"]],
            f"ndcg@10_minus_{reference_dir.name}": {
                k: ([round(x, 4) for x in v] if isinstance(v, list) else round(v, 4))
                for k, v in paired_difference(ranks, reference_ranks)["ndcg@10"].items()},
            "finetune_s": finetune.get("train_seconds"),
            "run_wall_s": run.wall_s,
            "threads": args.threads,
            "parallel_jobs": args.jobs,
        }

    todo = [name for name in variants if name not in done or done[name]["overrides"] != overrides_text[name]]
    bench = BenchmarkRun(args.name, description=(
        f"Variants of {args.config} (overrides below), each run by `alignrec run --until evaluate` and scored on every "
        f"test user; each compared with the base run's {reference_dir.name} on the same users."))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each variant is its own child process
        for name, row in zip(todo, pool.map(measure, todo)):
            done[name] = row
            atomic_write_json(partial_path, {"rows": list(done.values())})
            print(json.dumps(row), file=sys.stderr, flush=True)
    for name in variants:
        bench.add_row(done[name])
    bench.extra.update(config=args.config, base=args.base, threads=args.threads, jobs=args.jobs,
                       reference={k: reference[k] for k in ("model", "users", "hr@10", "ndcg@10", "ci95")})
    json_path, md_path = bench.finish(notes=[
        f"Reference: {reference_dir.name} of the base run on the same {reference['users']} users: NDCG@10 "
        f"{reference['ndcg@10']:.4f} [{reference['ci95']['ndcg@10'][0]:.4f}, {reference['ci95']['ndcg@10'][1]:.4f}].",
        "ndcg@10_minus_*: the paired difference over the same users with its 95% bootstrap interval.",
        "Fixed step budgets: variants run side by side train exactly as they would alone; finetune_s is shared-CPU time.",
        "The tuning chose the main config from these rows; its own run is benchmarks/results/e2e_ml-100k.",
    ])
    partial_path.unlink(missing_ok=True)
    print(json_path, md_path)


if __name__ == "__main__":
    main()
