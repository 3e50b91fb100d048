"""``alignrec evaluate``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.config import add_config_arguments
    from alignrec.evaluate.recipe import EvaluateConfig

    parser = subparsers.add_parser(
        "evaluate",
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
    )
    parser.add_argument("--model", required=True, help="run folder RUN or its RUN/finetune folder")
    parser.add_argument("--data", help="prepared data set (default: RUN/dataset)")
    parser.add_argument("--out", help="output folder (default: RUN/evaluate)")
    parser.add_argument("--config", help="YAML/JSON file with evaluate settings (flags override it)")
    parser.add_argument("--restart", action="store_true",
                        help="discard the finished shards under OUT/shards and search every user again (default: an "
                        "interrupted evaluation with the same settings and model continues where it stopped)")
    add_config_arguments(parser, EvaluateConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    from alignrec.config import config_from_args
    from alignrec.distributed import launcher_ranks
    from alignrec.evaluate.recipe import EvaluateConfig, evaluate

    config = config_from_args(EvaluateConfig, args, args.config)
    report = evaluate(config, args.model, args.data, args.out, resume=not args.restart)
    if launcher_ranks().is_main:  # every rank has the report; one prints it
        keys = ("metrics", "users", "counts", "sampled", "elapsed_s", "users_per_s", "wall_s", "world_size", "shards",
                "predictions")
        print(json.dumps({key: report[key] for key in keys}, indent=2))
    return 0
