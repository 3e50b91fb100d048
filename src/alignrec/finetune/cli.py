"""``alignrec finetune``."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.config import add_config_arguments
    from alignrec.finetune.config import FinetuneConfig

    parser = subparsers.add_parser(
        "finetune",
        help="LoRA fine-tuning of the LLM on RUN/tasks (writes RUN/finetune/model)",
        description=(
            "Add the code tokens to the backbone, train LoRA adapters and the code-token rows on "
            "RUN/tasks/train.jsonl with the Hugging Face Trainer, merge, and write OUT/model (a Hugging Face "
            "folder), OUT/item_codes.parquet, loss_curve.png, metrics.json and config.json. Several processes: "
            "`torchrun --nproc_per_node N -m alignrec.cli finetune ...` or `accelerate launch -m alignrec.cli "
            "finetune ...`."
        ),
    )
    parser.add_argument("--data", required=True, metavar="RUN", help="run folder with tasks/ and tokenizer/")
    parser.add_argument("--out", help="output folder (default: RUN/finetune)")
    parser.add_argument("--config", help="YAML/JSON file with fine-tuning settings (flags override it)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/trainer_state")
    parser.add_argument("--overwrite", action="store_true", help="discard checkpoints of an earlier run in OUT")
    add_config_arguments(parser, FinetuneConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from alignrec.config import config_from_args
    from alignrec.finetune.config import FinetuneConfig
    from alignrec.finetune.recipe import finetune

    config = config_from_args(FinetuneConfig, args, args.config)
    result = finetune(config, args.data, args.out, resume=args.resume, overwrite=args.overwrite)
    keys = ("train_examples", "steps", "train_loss", "eval_loss", "train_seconds", "train_tokens_per_second")
    print(json.dumps({"finetune": str(result.out_dir), **{k: result.metrics.get(k) for k in keys}}, indent=2))
    return 0
