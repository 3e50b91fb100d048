"""Benchmark ``alignrec prepare``: wall time, peak memory and counts on the real data sets, and
peak memory against input size on synthetic interaction files.

Each prepare runs as its own ``alignrec prepare`` process (so its peak RSS is its own), the
way a user runs it, ``--repeats`` times; the table reports the median and best wall time, the
largest peak RSS, the in-process time ``prepare`` recorded in ``stats.json`` (reading +
filtering + writing, without interpreter start-up and imports), and the counts, next to the
counts the papers report. A first row times ``alignrec --help``: the fixed start-up cost
(Python, imports of the registered stages) included in every other row.

The synthetic rows (``--synthetic 1000000 10000000``, once each) show how memory grows with the
input: CSV files of N interactions (user, item, timestamp; N/20 users, 100k items, rows in
random user order), plus one file where a single user has every interaction (the worst case of
the leave-one-out split: one sample per event, each with a full history). The files are
generated (untimed) under ``--work`` and reused.

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/prepare.py [--repeats 3] [--synthetic N ...]

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


def synthetic_csv(folder: Path, interactions: int, users: int, seed: int = 0) -> Path:
    """A CSV of ``interactions`` rows (user_id, item_id, timestamp) over ``users`` users and 100k items.

    Rows come in random user order with random timestamps, so the reader sees every user's events
    scattered through the file and prepare has to sort them. Generated once and reused.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    path = folder / f"synthetic_{interactions}_{users}u.csv"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with pa_csv.CSVWriter(tmp, pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64())]),
                          write_options=pa_csv.WriteOptions(quoting_style="none")) as writer:
        chunk = 1_000_000
        for start in range(0, interactions, chunk):
            size = min(chunk, interactions - start)
            writer.write_table(pa.table({
                "user_id": rng.integers(0, users, size),
                "item_id": rng.integers(0, 100_000, size),
                "timestamp": rng.integers(1_300_000_000, 1_600_000_000, size),
            }))
    tmp.replace(path)
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
    parser.add_argument("--synthetic", nargs="*", type=int, default=[1_000_000, 10_000_000], metavar="N",
                        help="sizes of the synthetic memory rows (interactions; default 1M and 10M; none = skip)")
    parser.add_argument("--single-user", type=int, default=8_000_000, metavar="N",
                        help="interactions of the one-user synthetic row (default 8M; 0 = skip)")
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
    synthetic = [(n, max(n // 20, 1)) for n in args.synthetic] + ([(args.single_user, 1)] if args.single_user else [])
    for interactions, users in synthetic:
        source = synthetic_csv(work / "synthetic", interactions, users)
        out = work / "synthetic-run"
        if out.exists():
            shutil.rmtree(out)
        command = [*alignrec, "prepare", "--format", "csv", "--inter", str(source), "--out", str(out)]
        measured = run_measured(command).check()
        stats = json.loads((out / "dataset" / "stats.json").read_text())
        shutil.rmtree(out)
        run.add_row({
            "dataset": f"synthetic csv, {interactions:,} interactions, {users:,} user{'s' if users > 1 else ''}",
            "wall_median_s": measured.wall_s,
            "wall_best_s": measured.wall_s,
            "in_process_median_s": stats["seconds"],
            "peak_rss_mb": measured.peak_rss_mb,
            "input_mb": round(source.stat().st_size / 2**20, 1),
            "users": stats["users"],
            "items": stats["items"],
            "interactions": stats["interactions"],
            "avg_seq_len": stats["avg_seq_len"],
            "train_samples": stats["train_samples"],
            "command": " ".join(["alignrec", *command[len(alignrec):]]),
        })

    json_path, md_path = run.finish(
        columns=["dataset", "wall_median_s", "wall_best_s", "in_process_median_s", "peak_rss_mb", "input_mb", "users",
                 "items", "interactions", "avg_seq_len", "train_samples", "expected", "matches_expected"],
        notes=[
            "expected: Games and Instruments from Table 2 of the Semantic Convergence paper; Industrial from "
            "../shared/data/README.md (MiniOneRec samples rebuilt into per-user chains); ml-100k from the RecBole files.",
            "ml-100k is read from the local cache (~/.cache/alignrec or $ALIGNREC_CACHE); the one-time pip download is "
            "not timed.",
            "Every row includes the start-up cost of the first row (interpreter + imports of the registered stages).",
            "synthetic rows: one run each (fresh process); input_mb = size of the CSV file; the machine has "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB of memory.",
        ],
    )
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
