"""``alignrec prepare``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, command_config, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.data.prepare import PrepareConfig

    add_command(
        subparsers, "prepare", config=PrepareConfig, config_help="prepare settings", handler=run,
        help="ingest a data set into RUN_DIR/dataset with the leave-one-out split",
        description=(
            "Read a data set (LC-Rec json, MiniOneRec csv, raw Amazon 2014/2018 reviews + metadata, RecBole atomic files, plain "
            "CSV/Parquet, or the embedded ml-100k) and write the canonical tables, the leave-one-out split "
            "and stats.json under OUT/dataset."
        ),
        arguments=[argument("--out", required=True, help="run folder; the data set goes to OUT/dataset")],
    )


def run(args: argparse.Namespace) -> int:
    from alignrec.data.prepare import prepare
    from alignrec.utils.io import read_json

    dataset_dir = prepare(command_config(args), args.out)
    stats = read_json(dataset_dir / "stats.json")
    summary = {key: stats[key] for key in ("users", "items", "interactions", "avg_seq_len", "train_samples", "test_samples")}
    return print_summary({"dataset": str(dataset_dir), **summary, "dropped": stats["dropped"]})
