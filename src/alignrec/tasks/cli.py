"""``alignrec tasks build``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, command_config, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.tasks.build import TasksConfig

    tasks = subparsers.add_parser("tasks", help="alignment-task instruction data (stage two)")
    commands = tasks.add_subparsers(dest="tasks_command", required=True, metavar="SUBCOMMAND")
    add_command(
        commands, "build", config=TasksConfig, config_help="task settings", handler=run_build_command,
        help="write RUN/tasks/{train,valid}.jsonl from the data set and the item codes",
        description=(
            "Build the alignment tasks (sequential, negative behaviour, text, query, TS-Align, LC-Rec's "
            "history->title and titles->item) from RUN/dataset and the item codes (RUN/tokenizer); write "
            "train.jsonl, valid.jsonl, format.json, stats.json and config.json to OUT (default RUN/tasks)."
        ),
        arguments=[
            argument("--data", required=True, metavar="RUN", help="run folder with dataset/ (and tokenizer/)"),
            argument("--out", help="output folder (default: RUN/tasks)"),
        ],
    )


def run_build_command(args: argparse.Namespace) -> int:
    from alignrec.tasks.build import run_build
    from alignrec.utils.io import read_json

    out = run_build(command_config(args), args.data, args.out)
    stats = read_json(out / "stats.json")
    summary = {name: entry.get("examples", entry["status"]) for name, entry in stats["tasks"].items()}
    return print_summary({"tasks": str(out), "train_examples": stats["train_examples"],
                          "valid_examples": stats["valid_examples"], "per_task": summary})
