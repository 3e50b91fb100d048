"""``alignrec prepare``."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.config import add_config_arguments
    from alignrec.data.prepare import PrepareConfig

    parser = subparsers.add_parser(
        "prepare",
        help="ingest a data set into RUN_DIR/dataset with the leave-one-out split",
        description=(
            "Read a data set (LC-Rec json, MiniOneRec csv, raw Amazon 2014/2018 reviews + metadata, RecBole atomic files, plain "
            "CSV/Parquet, or the embedded ml-100k) and write the canonical tables, the leave-one-out split "
            "and stats.json under OUT/dataset."
        ),
    )
    parser.add_argument("--out", required=True, help="run folder; the data set goes to OUT/dataset")
    parser.add_argument("--config", help="YAML/JSON file with prepare settings (flags override it)")
    add_config_arguments(parser, PrepareConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from alignrec.config import config_from_args
    from alignrec.data.prepare import PrepareConfig, prepare

    config = config_from_args(PrepareConfig, args, args.config)
    dataset_dir = prepare(config, args.out)
    with open(dataset_dir / "stats.json", encoding="utf-8") as handle:
        stats = json.load(handle)
    summary = {key: stats[key] for key in ("users", "items", "interactions", "avg_seq_len", "train_samples", "test_samples")}
    print(json.dumps({"dataset": str(dataset_dir), **summary, "dropped": stats["dropped"]}, indent=2))
    return 0
