"""``alignrec finetune``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, command_config, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.finetune.config import FinetuneConfig

    add_command(
        subparsers, "finetune", config=FinetuneConfig, config_help="fine-tuning settings", handler=run,
        help="LoRA fine-tuning of the LLM on RUN/tasks (writes RUN/finetune/model)",
        description=(
            "Add the code tokens to the backbone, train LoRA adapters and the code-token rows on "
            "RUN/tasks/train.jsonl with the Hugging Face Trainer, merge, and write OUT/model (a Hugging Face "
            "folder), OUT/item_codes.parquet, loss_curve.png, metrics.json and config.json. Several processes: "
            "`torchrun --nproc_per_node N -m alignrec.cli finetune ...` or `accelerate launch -m alignrec.cli "
            "finetune ...`."
        ),
        arguments=[
            argument("--data", required=True, metavar="RUN", help="run folder with tasks/ and tokenizer/"),
            argument("--out", help="output folder (default: RUN/finetune)"),
            argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/trainer_state"),
            argument("--overwrite", action="store_true", help="discard checkpoints of an earlier run in OUT"),
        ],
    )


def run(args: argparse.Namespace) -> int:
    from alignrec.finetune.recipe import finetune

    result = finetune(command_config(args), args.data, args.out, resume=args.resume, overwrite=args.overwrite)
    keys = ("train_examples", "steps", "train_loss", "eval_loss", "train_seconds", "train_tokens_per_second")
    return print_summary({"finetune": str(result.out_dir), **{k: result.metrics.get(k) for k in keys}})
