"""``alignrec run`` and ``alignrec sweep``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    overrides = "override a setting, e.g. --set finetune.max_steps=500 (repeatable)"
    add_command(
        subparsers, "run", handler=run_command,
        help="run a whole experiment (prepare -> ... -> evaluate -> precache -> report) from one config",
        description=(
            "Run every stage of an experiment config, reusing stages whose outputs are complete for the same "
            "settings and resuming interrupted ones. configs/ml100k.yaml is the embedded default (MovieLens-100K, "
            "a SASRec behaviour model, the alignment tokenizer, SmolLM2-135M, CPU budget)."
        ),
        arguments=[
            argument("config", help="experiment YAML/JSON (see configs/)"),
            argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=overrides),
            argument("--publish", metavar="PREFIX", help="also copy the report to PREFIX.json/.md (+ figures), e.g. "
                     "benchmarks/results/e2e_ml-100k"),
            argument("--until", help="stop after this stage (prepare, backbone, behaviour, baselines, tokenizer, tasks, "
                     "finetune, evaluate, precache)"),
        ],
    )
    add_command(
        subparsers, "sweep", handler=sweep_command,
        help="run a grid of experiments sharing common stages; skips finished cells; writes a results table",
        arguments=[
            argument("config", help="sweep YAML (see configs/paper/)"),
            argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting of the base experiment for every cell (e.g. the scale)"),
            argument("--base", help="base experiment config replacing the sweep's own (e.g. configs/games.yaml)"),
            argument("--cell", dest="cells", action="append", help="run only this cell (repeatable)"),
            argument("--out", help="sweep folder replacing the config's (default runs/sweeps/<name>_<label>); "
                     "e.g. one folder per seed"),
            argument("--results", help="folder for the results table replacing the config's (default benchmarks/results)"),
        ],
    )


def run_command(args: argparse.Namespace) -> int:
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
    return print_summary({
        "run_dir": str(result.root),
        "report": str(report) if report.exists() and args.until is None else None,
        "stages": {name: {"seconds": s.seconds, "reused": s.skipped} for name, s in result.stages.items()},
        "total_seconds": round(time.perf_counter() - started, 1),
    })


def sweep_command(args: argparse.Namespace) -> int:

    from alignrec.pipeline.sweep import run_sweep

    record = run_sweep(args.config, args.overrides, args.cells, base=args.base, out=args.out, results=args.results)
    return print_summary({"results": record["name"], "cells": len(record["rows"]), "seconds": record["seconds"]})
