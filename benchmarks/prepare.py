"""Benchmark ``alignrec prepare``: wall time, peak memory and counts on the real data sets.

Each prepare runs as its own ``alignrec prepare`` process (so its peak RSS is its own), the
way a user runs it, ``--repeats`` times; the table reports the median and best wall time, the
largest peak RSS, the in-process time ``prepare`` recorded in ``stats.json`` (reading +
filtering + writing, without interpreter start-up and imports), and the counts, next to the
counts the papers report. A first row times ``alignrec --help``: the fixed start-up cost
(Python, imports of the registered stages) included in every other row.

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/prepare.py [--repeats 3]

Writes benchmarks/results/prepare.json and prepare.md. Needs ../shared/data (or
$ALIGNREC_SHARED_DATA); ml-100k comes from the local cache (fetched, untimed, if absent).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/prepare.py` from anywhere

from benchmarks.common import REPO_ROOT, BenchmarkRun, run_measured  # noqa: E402

# name -> (prepare arguments relative to the shared data folder, expected counts from the papers/README)
DATASETS: dict[str, tuple[list[str], dict[str, float]]] = {
    "games": (["--format", "lcrec", "--inter", "{data}/amazon18/Games.inter.json"],
              {"users": 50_546, "items": 16_859, "avg_seq_len": 8.96}),
    "instruments": (["--format", "lcrec", "--inter", "{data}/amazon18/Instruments.inter.json"],
                    {"users": 24_772, "items": 9_922, "avg_seq_len": 8.32}),
    "industrial": (["--format", "minionerec", "--dir", "{data}/amazon18/Industrial_and_Scientific"],
                   {"users": 3_285}),
    "ml-100k": (["--dataset", "ml-100k"], {"users": 943, "items": 1_682, "interactions": 100_000}),
}


def shared_data() -> Path:
    path = Path(os.environ.get("ALIGNREC_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        sys.exit(f"shared data not found at {path} (set ALIGNREC_SHARED_DATA)")
    return path


def matches(stats: dict[str, float], expected: dict[str, float]) -> bool:
    """Counts equal; averages equal at the papers' two decimals."""
    return all(
        round(stats[key], 2) == value if isinstance(value, float) else stats[key] == value for key, value in expected.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per data set (default 3)")
    parser.add_argument("--only", nargs="+", choices=sorted(DATASETS), help="a subset of the data sets")
    parser.add_argument("--work", default=str(REPO_ROOT / "runs" / "data-bench"), help="scratch run folders")
    args = parser.parse_args()

    alignrec = [sys.executable, "-m", "alignrec.cli"]
    data = shared_data()
    work = Path(args.work)
    run = BenchmarkRun(
        "prepare",
        description=(
            f"`alignrec prepare` per data set, {args.repeats} runs each, every run a fresh process. wall = process "
            "wall time (median / best), peak RSS = the process's max resident memory, in-process = "
            "stats.json `seconds` (read + filter + split + write)."
        ),
    )

    from alignrec.data.sources.recbole import embedded_dataset_dir

    embedded_dataset_dir("ml-100k")  # make sure the fetch is not part of the timing

    startup = [run_measured([*alignrec, "--help"]).check() for _ in range(args.repeats)]
    run.add_row({"dataset": "(start-up: alignrec --help)", "wall_median_s": statistics.median(m.wall_s for m in startup),
                 "wall_best_s": min(m.wall_s for m in startup), "peak_rss_mb": max(m.peak_rss_mb for m in startup)})

    for name in args.only or list(DATASETS):
        prepare_args, expected = DATASETS[name]
        out = work / name
        command = [*alignrec, "prepare", *[a.format(data=data) for a in prepare_args], "--out", str(out)]
        measured, in_process = [], []
        for _ in range(args.repeats):
            if out.exists():
                shutil.rmtree(out)
            measured.append(run_measured(command).check())
            in_process.append(json.loads((out / "dataset" / "stats.json").read_text())["seconds"])
        stats = json.loads((out / "dataset" / "stats.json").read_text())
        run.add_row({
            "dataset": name,
            "wall_median_s": statistics.median(m.wall_s for m in measured),
            "wall_best_s": min(m.wall_s for m in measured),
            "in_process_median_s": statistics.median(in_process),
            "peak_rss_mb": max(m.peak_rss_mb for m in measured),
            "users": stats["users"],
            "items": stats["items"],
            "interactions": stats["interactions"],
            "avg_seq_len": stats["avg_seq_len"],
            "train_samples": stats["train_samples"],
            "expected": ", ".join(f"{k} {v:,}" for k, v in expected.items()),
            "matches_expected": matches(stats, expected),
            "command": " ".join(["alignrec", *command[len(alignrec):]]),
        })
    json_path, md_path = run.finish(
        columns=["dataset", "wall_median_s", "wall_best_s", "in_process_median_s", "peak_rss_mb", "users", "items",
                 "interactions", "avg_seq_len", "train_samples", "expected", "matches_expected"],
        notes=[
            "expected: Games and Instruments from Table 2 of the Semantic Convergence paper; Industrial from "
            "../shared/data/README.md (MiniOneRec samples rebuilt into per-user chains); ml-100k from the RecBole files.",
            "ml-100k is read from the local cache (~/.cache/alignrec or $ALIGNREC_CACHE); the one-time pip download is "
            "not timed.",
            "Every row includes the start-up cost of the first row (interpreter + imports of the registered stages).",
        ],
    )
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
