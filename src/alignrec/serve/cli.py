"""``alignrec precache`` and ``alignrec serve``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.config import add_config_arguments
    from alignrec.serve.app import ServeConfig
    from alignrec.serve.precache import PrecacheConfig

    parser = subparsers.add_parser(
        "precache",
        help="compute every user's top-K by constrained beam search into a cache store (resumable, incremental)",
        description=(
            "Run beam search for every user (whole known history) and store the top-K per user in a cache "
            "(SQLite file by default, or redis://). Only users that are new, whose history changed, or whose "
            "entry came from another model or settings are computed, so an interrupted run is finished by "
            "running it again. Several processes (GPUs, machines): launch it with `torchrun --nproc-per-node N -m "
            "alignrec.cli precache ...`; rank 0 writes the store."
        ),
    )
    parser.add_argument("--model", required=True, help="run folder RUN or its RUN/finetune folder")
    parser.add_argument("--cache", help="cache URL: sqlite:///path, a file path, or redis://host:port/db[?namespace=x] (default RUN/cache/cache.sqlite)")
    parser.add_argument("--data", help="prepared data set (default: RUN/dataset)")
    parser.add_argument("--items-registry", help="registry of new items (default: RUN/cache/items_registry.json)")
    parser.add_argument("--histories", help='JSON lines {"user_id": ..., "items": [item ids]} replacing/adding user histories')
    parser.add_argument("--config", help="YAML/JSON file with precache settings (flags override it)")
    add_config_arguments(parser, PrecacheConfig)
    parser.set_defaults(handler=run_precache)

    serve = subparsers.add_parser(
        "serve",
        help="HTTP API over the cache: recommendations, new items, health, Prometheus metrics",
        description=(
            "Serve GET /v1/users/{user_id}/recommendations?k=, POST /v1/items (admin token from the "
            "environment variable named by --admin-token-env), GET /healthz and GET /metrics."
        ),
    )
    serve.add_argument("--config", help="YAML/JSON file with serve settings (flags override it)")
    add_config_arguments(serve, ServeConfig)
    serve.set_defaults(handler=run_serve)


def run_precache(args: argparse.Namespace) -> int:
    import json

    from alignrec.config import config_from_args
    from alignrec.distributed import launcher_ranks
    from alignrec.serve.precache import PrecacheConfig, precache

    config = config_from_args(PrecacheConfig, args, args.config)
    report = precache(config, args.model, args.cache, args.data, args.items_registry, args.histories)
    report.pop("config")
    if launcher_ranks().is_main:  # every rank has the report; one prints it
        print(json.dumps(report, indent=2))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from alignrec.config import config_from_args
    from alignrec.serve.app import ServeConfig, run_server

    run_server(config_from_args(ServeConfig, args, args.config))
    return 0
