"""The ``alignrec`` command: a thin layer over the stage modules.

Each stage module exposes ``register(subparsers)`` which adds its subcommands and sets
``handler`` on them; heavy imports happen inside the handlers so that ``alignrec --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from alignrec import __version__
from alignrec.errors import AlignrecError
from alignrec.utils.log import get_logger, setup_logging

# One module per pipeline stage, in pipeline order.
COMMAND_MODULES = (
    "alignrec.data.cli",
    "alignrec.collab.cli",
    "alignrec.tokenizer.cli",
    "alignrec.metrics.cli",
    "alignrec.tasks.cli",
    "alignrec.finetune.cli",
    "alignrec.prefer.cli",
    "alignrec.evaluate.cli",
    "alignrec.serve.cli",
    "alignrec.pipeline.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignrec",
        description="LLM-based generative recommendation with two-stage alignment.",
    )
    parser.add_argument("--version", action="version", version=f"alignrec {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        result = args.handler(args)
    except AlignrecError as error:
        get_logger("cli").debug("user error", exc_info=True)
        print(f"alignrec {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alignrec {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
