"""``alignrec run`` and ``alignrec sweep``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="run a whole experiment (prepare -> ... -> evaluate -> precache -> report) from one config",
        description=(
            "Run every stage of an experiment config, reusing stages whose outputs are complete for the same "
            "settings and resuming interrupted ones. configs/ml100k.yaml is the embedded default (MovieLens-100K, "
            "DCCF, alignment tokenizer, SmolLM2-135M, CPU budget)."
        ),
    )
    run.add_argument("config", help="experiment YAML/JSON (see configs/)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting, e.g. --set finetune.max_steps=500 (repeatable)")
    run.add_argument("--publish", metavar="PREFIX",
                     help="also copy the report to PREFIX.json/.md (+ figures), e.g. benchmarks/results/e2e_ml-100k")
    run.add_argument("--until", help="stop after this stage (prepare, backbone, behaviour, baselines, tokenizer, tasks, finetune, evaluate, precache)")
    run.set_defaults(handler=run_command)

    sweep = subparsers.add_parser(
        "sweep",
        help="run a grid of experiments sharing common stages; skips finished cells; writes a results table",
    )
    sweep.add_argument("config", help="sweep YAML (see configs/paper/)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting of the base experiment for every cell (e.g. the scale)")
    sweep.add_argument("--base", help="base experiment config replacing the sweep's own (e.g. configs/games.yaml)")
    sweep.add_argument("--cell", dest="cells", action="append", help="run only this cell (repeatable)")
    sweep.add_argument("--out", help="sweep folder replacing the config's (default runs/sweeps/<name>_<label>); "
                       "e.g. one folder per seed")
    sweep.add_argument("--results", help="folder for the results table replacing the config's (default benchmarks/results)")
    sweep.set_defaults(handler=sweep_command)


def run_command(args: argparse.Namespace) -> int:
    import json
    import time

    from alignrec.pipeline.experiment import load_experiment, run_experiment

    started = time.perf_counter()
    experiment = load_experiment(args.config, args.overrides)
    result = run_experiment(experiment, until=args.until)
    report = result.root / "report" / "report.md"
    if args.publish and args.until is None:
        import shlex
        import sys
        from pathlib import Path

        from alignrec.pipeline.report import publish_report

        publish_report(result.root, Path(args.publish), shlex.join(["alignrec", *sys.argv[1:]]))
    print(json.dumps({
        "run_dir": str(result.root),
        "report": str(report) if report.exists() and args.until is None else None,
        "stages": {name: {"seconds": s.seconds, "reused": s.skipped} for name, s in result.stages.items()},
        "total_seconds": round(time.perf_counter() - started, 1),
    }, indent=2))
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    import json

    from alignrec.pipeline.sweep import run_sweep

    record = run_sweep(args.config, args.overrides, args.cells, base=args.base, out=args.out, results=args.results)
    print(json.dumps({"results": record["name"], "cells": len(record["rows"]), "seconds": record["seconds"]}, indent=2))
    return 0
