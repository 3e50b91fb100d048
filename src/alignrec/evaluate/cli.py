"""``alignrec evaluate``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, command_config, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.evaluate.recipe import EvaluateConfig

    add_command(
        subparsers, "evaluate", config=EvaluateConfig, handler=run,
        help="trie-constrained beam search for the test users of a fine-tuned model, scored with HR@K / NDCG@K",
        description=(
            "Load RUN/finetune (model/ + item codes), run constrained beam search for every user of a split "
            "(or a seeded sample with --users N) and write predictions.jsonl (re-scorable with "
            "`alignrec evaluate-predictions`), metrics.json and config.json to OUT (default RUN/evaluate). Users are "
            "searched in shards (--shard-users) saved under OUT/shards: run the same command again after a kill and "
            "it continues from the last finished shard. Several processes (GPUs, machines): launch it with "
            "`torchrun --nproc-per-node N -m alignrec.cli evaluate ...` (or `accelerate launch`); the shards are "
            "split among the ranks and rank 0 writes the files."
        ),
        arguments=[
            argument("--model", required=True, help="run folder RUN or its RUN/finetune folder"),
            argument("--data", help="prepared data set (default: RUN/dataset)"),
            argument("--out", help="output folder (default: RUN/evaluate)"),
            argument("--restart", action="store_true",
                     help="discard the finished shards under OUT/shards and search every user again (default: an "
                     "interrupted evaluation with the same settings and model continues where it stopped)"),
        ],
    )


def run(args: argparse.Namespace) -> int:
    from alignrec.distributed import launcher_ranks
    from alignrec.evaluate.recipe import evaluate

    report = evaluate(command_config(args), args.model, args.data, args.out, resume=not args.restart)
    if not launcher_ranks().is_main:  # every rank has the report; one prints it
        return 0
    keys = ("metrics", "users", "counts", "sampled", "elapsed_s", "users_per_s", "wall_s", "world_size", "shards",
            "predictions")
    keys += tuple(key for key in ("exclude", "seen_excluded") if key in report)
    return print_summary({key: report[key] for key in keys})
