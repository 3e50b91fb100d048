"""``alignrec evaluate-predictions``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate-predictions",
        help="score a JSON-lines file of ranked item lists (full ranking HR@K / NDCG@K)",
        description=(
            'Score predictions ({"user_id": ..., "items": [...]} per line, source ids) against the targets of '
            "a split of a prepared data set. Users without predictions count as misses; duplicates and "
            "unknown items are counted and reported."
        ),
    )
    parser.add_argument("--data", required=True, help="run folder (or its dataset/ folder) written by prepare")
    parser.add_argument("--predictions", required=True, help="JSON-lines predictions file")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10], help="cut-offs K (default: 1 5 10)")
    parser.add_argument("--out", help="write the report JSON here (atomically) as well as to stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from alignrec.data.dataset import load_dataset
    from alignrec.metrics.predictions import evaluate_predictions_file
    from alignrec.utils.io import atomic_write_json, to_json

    report = evaluate_predictions_file(args.predictions, load_dataset(args.data), args.split, args.ks)
    if args.out:
        atomic_write_json(args.out, report)
    print(to_json(report), end="")
    return 0
