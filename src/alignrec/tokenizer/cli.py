"""``alignrec tokenize train`` and ``alignrec tokenize assign``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, command_config, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.tokenizer.config import TokenizerConfig

    parser = subparsers.add_parser(
        "tokenize",
        help="item codes: train cascaded residual codebooks, or give new items codes",
        description="Stage 3, Alignment Tokenization: item embeddings -> L codes per item.",
    )
    commands = parser.add_subparsers(dest="tokenize_command", required=True, metavar="ACTION")
    add_command(
        commands, "train", config=TokenizerConfig, config_help="tokenizer settings", handler=run_train,
        help="train a tokenizer on RUN_DIR's data set and write RUN_DIR/tokenizer",
        description=(
            "Train L x K residual codebooks (alignment = ours; rqvae = LC-Rec/TIGER RQ-VAE; rqkmeans = plain residual "
            "k-means) on behaviour item embeddings, with the LLM alignment loss when items have text; write item codes, "
            "codebooks, the report, code descriptions and the cold-start map."
        ),
        arguments=[
            argument("--data", required=True, help="run folder made by `alignrec prepare` (RUN_DIR or RUN_DIR/dataset)"),
            argument("--embeddings", help="behaviour item embeddings: a collab run folder, a .safetensors file (tensor "
                     "'item_embeddings'), or 'spectral' (computed here from the training sequences); default "
                     "RUN_DIR/collab/dccf"),
            argument("--out", help="output folder (default RUN_DIR/tokenizer)"),
        ],
    )
    add_command(
        commands, "assign", handler=run_assign,
        help="give new items unique codes with a trained tokenizer (no retraining)",
        description=(
            "Read new items (.jsonl/.json/.csv/.parquet with item_id, title, description) and, optionally, their "
            "behaviour embeddings; write the extended item codes (old items first) and new_items.json to --out."
        ),
        arguments=[
            argument("--tokenizer", required=True, help="folder written by `alignrec tokenize train`"),
            argument("--items", required=True, help="new items file (.jsonl, .json, .csv or .parquet)"),
            argument("--embeddings", help="optional .safetensors with 'item_embeddings' (one row per new item, same order)"),
            argument("--out", required=True, help="folder for item_codes.parquet + codes_meta.json + new_items.json"),
        ],
    )


def run_train(args: argparse.Namespace) -> int:
    from alignrec.tokenizer.train import train_tokenizer

    result = train_tokenizer(command_config(args), args.data, embeddings=args.embeddings, out_dir=args.out)
    report = result.report
    summary = {
        "out": str(result.out_dir),
        "method": report["method"],
        "items": report["items"],
        "levels": result.item_codes.num_levels,
        "raw_collision_rate": report["collisions"]["raw"],
        "final_collision_rate": report["collisions"]["final"],
        "train_seconds": report["train_seconds"],
        "text": report["text"]["summary"],
    }
    return print_summary(summary)


def run_assign(args: argparse.Namespace) -> int:
    from alignrec.tokenizer.coldstart import ColdStartAssigner
    from alignrec.tokenizer.items_file import read_embeddings_file, read_new_items

    ids, texts = read_new_items(args.items)
    embeddings = read_embeddings_file(args.embeddings, len(ids)) if args.embeddings else None
    assigner = ColdStartAssigner.load(args.tokenizer)
    start = len(assigner.item_ids)
    codes = assigner.assign(texts=None if embeddings is not None else texts, behaviour_embeddings=embeddings, item_ids=ids)
    assigner.save(args.out, new_from=start)
    return print_summary({"out": args.out, "new_items": len(ids), "total_items": len(assigner.item_ids),
                          "levels": int(codes.shape[1])})
