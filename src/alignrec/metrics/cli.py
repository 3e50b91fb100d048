"""``alignrec evaluate-predictions``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers, "evaluate-predictions", handler=run,
        help="score a JSON-lines file of ranked item lists (full ranking HR@K / NDCG@K)",
        description=(
            'Score predictions ({"user_id": ..., "items": [...]} per line, source ids) against the targets of '
            "a split of a prepared data set. Users without predictions count as misses; duplicates and "
            "unknown items are counted and reported."
        ),
        arguments=[
            argument("--data", required=True, help="run folder (or its dataset/ folder) written by prepare"),
            argument("--predictions", required=True, help="JSON-lines predictions file"),
            argument("--split", default="test", choices=["valid", "test"]),
            argument("--ks", type=int, nargs="+", default=[1, 5, 10], help="cut-offs K (default: 1 5 10)"),
            argument("--out", help="write the report JSON here (atomically) as well as to stdout"),
        ],
    )


def run(args: argparse.Namespace) -> int:
    from alignrec.data.dataset import load_dataset
    from alignrec.metrics.predictions import evaluate_predictions_file
    from alignrec.utils.io import atomic_write_json

    report = evaluate_predictions_file(args.predictions, load_dataset(args.data), args.split, args.ks)
    if args.out:
        atomic_write_json(args.out, report)
    return print_summary(report)
