"""``alignrec tasks build``."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.config import add_config_arguments
    from alignrec.tasks.build import TasksConfig

    tasks = subparsers.add_parser("tasks", help="alignment-task instruction data (stage two)")
    commands = tasks.add_subparsers(dest="tasks_command", required=True, metavar="SUBCOMMAND")
    build = commands.add_parser(
        "build",
        help="write RUN/tasks/{train,valid}.jsonl from the data set and the item codes",
        description=(
            "Build the alignment tasks (sequential, negative behaviour, text, query, TS-Align, LC-Rec's "
            "history->title and titles->item) from RUN/dataset and the item codes (RUN/tokenizer); write "
            "train.jsonl, valid.jsonl, stats.json and config.json to OUT (default RUN/tasks)."
        ),
    )
    build.add_argument("--data", required=True, metavar="RUN", help="run folder with dataset/ (and tokenizer/)")
    build.add_argument("--out", help="output folder (default: RUN/tasks)")
    build.add_argument("--config", help="YAML/JSON file with task settings (flags override it)")
    add_config_arguments(build, TasksConfig)
    build.set_defaults(handler=run_build_command)


def run_build_command(args: argparse.Namespace) -> int:
    from alignrec.config import config_from_args
    from alignrec.tasks.build import TasksConfig, run_build
    from alignrec.utils.io import read_json

    config = config_from_args(TasksConfig, args, args.config)
    out = run_build(config, args.data, args.out)
    stats = read_json(out / "stats.json")
    summary = {name: entry.get("examples", entry["status"]) for name, entry in stats["tasks"].items()}
    print(json.dumps({"tasks": str(out), "train_examples": stats["train_examples"],
                      "valid_examples": stats["valid_examples"], "per_task": summary}, indent=2))
    return 0
