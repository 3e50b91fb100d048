"""``alignrec precache`` and ``alignrec serve``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, command_config, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.serve.app import ServeConfig
    from alignrec.serve.precache import PrecacheConfig

    add_command(
        subparsers, "precache", config=PrecacheConfig, handler=run_precache,
        help="compute every user's top-K by constrained beam search into a cache store (resumable, incremental)",
        description=(
            "Run beam search for every user (whole known history) and store the top-K per user in a cache "
            "(SQLite file by default, or redis://). Only users that are new, whose history changed, or whose "
            "entry came from another model or settings are computed, so an interrupted run is finished by "
            "running it again. Several processes (GPUs, machines): launch it with `torchrun --nproc-per-node N -m "
            "alignrec.cli precache ...`; rank 0 writes the store."
        ),
        arguments=[
            argument("--model", required=True, help="run folder RUN or its RUN/finetune folder"),
            argument("--cache", help="cache URL: sqlite:///path, a file path, or redis://host:port/db[?namespace=x] "
                     "(default RUN/cache/cache.sqlite)"),
            argument("--data", help="prepared data set (default: RUN/dataset)"),
            argument("--items-registry", help="registry of new items (default: RUN/cache/items_registry.json)"),
            argument("--histories", help='JSON lines {"user_id": ..., "items": [item ids]} replacing/adding user histories'),
        ],
    )
    add_command(
        subparsers, "serve", config=ServeConfig, handler=run_serve,
        help="HTTP API over the cache: recommendations, new items, health, Prometheus metrics",
        description=(
            "Serve GET /v1/users/{user_id}/recommendations?k=, POST /v1/items (admin token from the "
            "environment variable named by --admin-token-env), GET /healthz and GET /metrics."
        ),
    )


def run_precache(args: argparse.Namespace) -> int:
    from alignrec.distributed import launcher_ranks
    from alignrec.serve.precache import precache

    report = precache(command_config(args), args.model, args.cache, args.data, args.items_registry, args.histories)
    report.pop("config")
    if not launcher_ranks().is_main:  # every rank has the report; one prints it
        return 0
    return print_summary(report)


def run_serve(args: argparse.Namespace) -> int:
    from alignrec.serve.app import run_server

    run_server(command_config(args))
    return 0
