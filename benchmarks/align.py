"""Preference alignment after fine-tuning (``alignrec prefer``): objectives at equal CPU minutes.

Every variant (``--variant NAME KEY=VALUE ...``: settings of ``alignrec prefer``) runs once per
seed on the fine-tuned run ``--model`` (read only; outputs under ``--work``) for the same
training time (``--minutes`` of rollouts + scoring + updates on ``--threads`` threads; the
validations are extra and the same for every variant: ``--validations`` checks on every
validation user, plus step 0). The checkpoint with the best validation NDCG@10 is kept (step 0,
the fine-tuned model itself, is a candidate) and evaluated on every test user. Each row compares
it with the fine-tuned model's own evaluation (``MODEL/evaluate/predictions.jsonl``) on the same
users: the mean over seeds of each user's metric minus the fine-tuned model's, with a paired
bootstrap interval (:mod:`alignrec.metrics.bootstrap`). ``none`` is the fine-tuned model.

Finished runs (``WORK/<variant>-s<seed>/metrics.json``) are kept, so the script can be run again
with more variants or seeds and writes the table of everything finished::

    .venv/bin/python benchmarks/align.py --model runs/ml100k --work runs/align --minutes 3 --seeds 0 1 2 --jobs 2 \
        --variant grpo objective=grpo --variant listwise objective=listwise --variant sft objective=sft
"""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    REPO_ROOT,
    RESULTS_DIR,
    BenchmarkRun,
    encode_ranks,
    paired_seed_means,
    run_measured,
    seed_mean_per_user,
    users_sha256,
    write_per_user,
)

from alignrec.utils.io import atomic_write_json, read_json

METRICS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")


def run_folder(work: Path, name: str, seed: int) -> Path:
    return work / f"{name}-s{seed}"


def command_of(args: argparse.Namespace, settings: list[str], seed: int, out: Path) -> list[str]:
    flags = ["--model", str(args.model), "--out", str(out), "--overwrite", "--seed", str(seed),
             "--max-train-minutes", str(args.minutes), "--eval-minutes", str(args.minutes / args.validations),
             "--torch-threads", str(args.threads), "--max-steps", "100000", "--lr-scheduler", "constant",
             "--eval-users", str(args.eval_users)]
    for setting in settings:
        key, _, value = setting.partition("=")
        flag = "--" + key.replace("_", "-")
        if value.lower() in ("true", "false"):
            flags.append(flag if value.lower() == "true" else "--no-" + key.replace("_", "-"))
        else:
            flags += [flag, value]
    return [str(REPO_ROOT / ".venv" / "bin" / "alignrec"), "prefer", *flags]


def per_user(dataset: Any, predictions: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from alignrec.metrics.metrics import per_user_metrics
    from alignrec.pipeline.report import prediction_ranks

    rows = np.arange(len(dataset.split("test")))
    ranks = prediction_ranks(dataset, predictions, rows, "test")
    return ranks, per_user_metrics(ranks, [1, 5, 10])


def paired(values: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    gap = paired_seed_means(values, baseline)
    return {"difference": round(gap["difference"], 6), "ci95": [round(x, 6) for x in gap["ci95"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="fine-tuned run (RUN with finetune/ and evaluate/)")
    parser.add_argument("--work", type=Path, required=True, help="folder of the variants' runs")
    parser.add_argument("--minutes", type=float, default=3.0, help="training minutes of every run")
    parser.add_argument("--validations", type=int, default=3, help="validations per run besides step 0")
    parser.add_argument("--eval-users", type=int, default=0,
                        help="validation users of every check (0 = all; else a sample seeded by the run's seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                        help="a variant: a name and alignrec prefer settings")
    parser.add_argument("--name", default=None, help="results name (default align_<dataset>)")
    parser.add_argument("--dry-run", action="store_true", help="write the table of finished runs only")
    args = parser.parse_args()

    from alignrec.data.dataset import load_dataset
    from alignrec.llm.finetuned import FinetunedRun

    source = FinetunedRun.locate(args.model)
    dataset = load_dataset(source.dataset_dir)
    dataset_name = read_json(source.dataset_dir / "manifest.json").get("name") or source.run_dir.name
    name = args.name or f"align_{dataset_name}"
    baseline_predictions = source.run_dir / "evaluate" / "predictions.jsonl"
    if not baseline_predictions.is_file():
        sys.exit(f"align.py: {baseline_predictions}: missing; run `alignrec evaluate --model {args.model}` first")
    run = BenchmarkRun(name, description=(
        "`alignrec prefer` on the fine-tuned model at equal training minutes: objectives (grpo = MiniOneRec's GRPO, "
        "listwise over {target} + beam items, sft = the fine-tuning loss alone) against none (the fine-tuned model). "
        "Every row: mean over seeds, every test user, paired with the fine-tuned model on the same users."))
    args.work.mkdir(parents=True, exist_ok=True)
    recorded = args.work / "variants.json"
    variants = read_json(recorded) if recorded.is_file() else {}  # every variant run here so far
    for name_and_settings in args.variant:
        variants[name_and_settings[0]] = name_and_settings[1:]
    atomic_write_json(recorded, variants)

    pending = [(v, s) for v in variants for s in args.seeds
               if not (run_folder(args.work, v, s) / "metrics.json").is_file()]
    lock = threading.Lock()
    measured: dict[str, Any] = read_json(args.work / "measured.json") if (args.work / "measured.json").is_file() else {}

    def one(job: tuple[str, int]) -> None:
        variant, seed = job
        out = run_folder(args.work, variant, seed)
        print(f"[align] {variant} seed {seed} -> {out}", file=sys.stderr, flush=True)
        result = run_measured(command_of(args, variants[variant], seed, out)).check()
        with lock:  # re-read: another invocation may share the folder
            path = args.work / "measured.json"
            measured.update(read_json(path) if path.is_file() else {})
            measured[out.name] = {"wall_s": result.wall_s, "user_s": result.user_s, "peak_rss_mb": result.peak_rss_mb}
            atomic_write_json(path, measured)

    if not args.dry_run and pending:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(one, pending))

    base_ranks, base = per_user(dataset, baseline_predictions)
    split = dataset.split("test")
    pairs = [(dataset.user_ids[int(u)], dataset.item_ids[int(t)]) for u, t in zip(split.user_index, split.targets)]
    rows = [{"variant": "none (fine-tuned model)", "settings": "", "seeds": "", "users": len(base_ranks),
             **{m: round(float(base[m].mean()), 4) for m in METRICS}}]
    details: dict[str, Any] = {}
    kept: dict[str, Any] = {"none": {"ranks": encode_ranks(base_ranks)}}
    for variant, settings in variants.items():
        seeds = [s for s in args.seeds if (run_folder(args.work, variant, s) / "metrics.json").is_file()]
        if not seeds:
            continue
        runs = [read_json(run_folder(args.work, variant, s) / "metrics.json") for s in seeds]
        per_seed = [per_user(dataset, run_folder(args.work, variant, s) / "evaluate" / "predictions.jsonl") for s in seeds]
        mean = seed_mean_per_user([ranks for ranks, _ in per_seed], METRICS)
        difference = {m: paired(mean[m], base[m]) for m in ("hr@10", "ndcg@10", "ndcg@5", "hr@1")}
        seed_ndcg = [paired(metrics["ndcg@10"], base["ndcg@10"])["difference"] for _, metrics in per_seed]
        timing = [r["timing"] for r in runs]
        rows.append({
            "variant": variant, "settings": " ".join(settings), "seeds": len(seeds), "users": len(base_ranks),
            **{m: round(float(mean[m].mean()), 4) for m in METRICS},
            "Δ ndcg@10": difference["ndcg@10"]["difference"], "Δ ndcg@10 95% CI": difference["ndcg@10"]["ci95"],
            "Δ hr@10": difference["hr@10"]["difference"], "Δ hr@10 95% CI": difference["hr@10"]["ci95"],
            "Δ ndcg@10 per seed": seed_ndcg,
            # what the objective did to validation, selection aside: the last check minus step 0
            "valid Δ ndcg@10 last": round(float(np.mean([r["validation"][-1]["ndcg@10"] - r["validation"][0]["ndcg@10"]
                                                         for r in runs])), 4),
            "selected steps": [r["selected_step"] for r in runs],
            "steps": [r["steps"] for r in runs],
            "validation gain": [r["validation_gain"] for r in runs],
            "prompts/s": round(float(np.mean([r["prompts_per_s"] for r in runs])), 2),
            "prompts/CPU s": (round(float(np.mean(cpu)), 2) if (cpu := [r["prompts_per_cpu_s"] for r in runs
                                                                         if r.get("prompts_per_cpu_s")]) else ""),
            "rollout/scoring/update s": "/".join(str(round(float(np.mean([t[k] for t in timing])), 1))
                                                 for k in ("rollout_s", "scoring_s", "update_s")),
        })
        details[variant] = {"settings": settings, "seeds": seeds, "differences": difference, "runs": [
            {"seed": s, "validation": r["validation"], "selected_step": r["selected_step"], "steps": r["steps"],
             "timing": r["timing"], "prompts_per_s": r["prompts_per_s"], "test": r.get("test"),
             "process": measured.get(run_folder(args.work, variant, s).name)} for s, r in zip(seeds, runs)]}
        for s, (ranks, _) in zip(seeds, per_seed):
            kept[f"{variant}-s{s}"] = {"ranks": encode_ranks(ranks)}
    write_per_user(RESULTS_DIR, name, {"users_sha256": users_sha256(pairs), **kept},
                   "test ranks of the fine-tuned model (none) and of every variant's selected model, per seed")
    run.extra.update(model=str(source.finetune_dir), minutes=args.minutes, threads=args.threads, jobs=args.jobs,
                     validations=args.validations, eval_users=args.eval_users, details=details)
    columns = ["variant", "settings", "seeds", *METRICS, "Δ ndcg@10", "Δ ndcg@10 95% CI", "Δ hr@10", "Δ hr@10 95% CI",
               "Δ ndcg@10 per seed", "valid Δ ndcg@10 last", "selected steps", "steps", "prompts/s", "prompts/CPU s", "rollout/scoring/update s"]
    for row in rows:
        for key in ("Δ ndcg@10 95% CI", "Δ hr@10 95% CI"):
            if key in row:
                row[key] = f"[{row[key][0]:+.4f}, {row[key][1]:+.4f}]"
    run.rows = rows
    validated = (f"{args.eval_users:,} validation users (a sample drawn from the run's seed, the same at every check)"
                 if args.eval_users else "every validation user")
    run.finish(columns, notes=[
        f"Each run: {args.minutes} training minutes on {args.threads} thread(s), {args.jobs} run(s) at a time; validation "
        f"NDCG@10 on {validated} at step 0 and every {args.minutes / args.validations:.2f} training minutes; "
        "the best checkpoint (step 0 = the fine-tuned model included) is evaluated on every test user (beam 20).",
        "Δ: the mean over seeds of each user's metric minus the fine-tuned model's, 95% paired bootstrap interval over "
        "the users (1,000 resamples). Selected step 0 means the stage kept the fine-tuned model (Δ = 0 by construction).",
        f"valid Δ ndcg@10 last: validation NDCG@10 ({validated}) at the run's last check minus step 0, mean over "
        "seeds: what the objective did before selection stepped in.",
    ])


if __name__ == "__main__":
    main()
