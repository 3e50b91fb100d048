"""``alignrec prefer``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, command_config, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.prefer.config import PreferConfig

    add_command(
        subparsers, "prefer", config=PreferConfig, config_help="preference-alignment settings", handler=run,
        help="preference alignment of a fine-tuned model on its ranked beams (writes RUN/prefer/model)",
        description=(
            "Train a fresh LoRA adapter on top of the fine-tuned model with GRPO (MiniOneRec), a listwise objective "
            "over {target} + beam items, or the fine-tuning loss alone, anchored to the fine-tuned model; select the "
            "checkpoint (step 0 included) by NDCG@10 on the validation users; write OUT/model (the layout of "
            "RUN/finetune), metrics.json, config.json and the test evaluation in OUT/evaluate."
        ),
        arguments=[
            argument("--model", required=True, metavar="RUN", help="fine-tuned run (RUN or RUN/finetune)"),
            argument("--data", help="run folder or dataset folder (default: the model's RUN)"),
            argument("--out", help="output folder (default: RUN/prefer)"),
            argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/state"),
            argument("--overwrite", action="store_true", help="discard an earlier run in OUT"),
        ],
    )


def run(args: argparse.Namespace) -> int:
    from alignrec.prefer.recipe import prefer

    metrics = prefer(command_config(args), args.model, args.out, args.data, resume=args.resume, overwrite=args.overwrite)
    keys = ("objective", "steps", "selected_step", "validation_gain", "prompts_per_s", "test")
    return print_summary({k: metrics.get(k) for k in keys})
