"""The shape every ``alignrec`` command shares, in one place.

A stage's ``cli.py`` declares its command with :func:`add_command`: its own arguments (run folder,
output folder, ...), then ``--config FILE`` and one flag per field of the stage's typed config
(:func:`alignrec.config.add_config_arguments`), and the handler. The handler reads the resolved
config with :func:`command_config` (defaults < config file < flags) and prints its summary with
:func:`print_summary`. Heavy imports stay inside the handlers, so ``alignrec --help`` is fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

Argument = tuple[tuple[str, ...], dict[str, Any]]


def argument(*flags: str, **options: Any) -> Argument:
    """One ``add_argument`` call, written as its arguments: ``argument("--out", help="...")``."""
    return flags, options


def add_command(subparsers: argparse._SubParsersAction, name: str, *, help: str, handler: Callable[[argparse.Namespace], int],
                description: str | None = None, arguments: Sequence[Argument] = (), config: type | None = None,
                config_help: str | None = None, **parser_options: Any) -> argparse.ArgumentParser:
    """Add the command ``name``: ``arguments``, then (with a typed ``config`` class) ``--config FILE``
    and a flag per config field; ``handler(args)`` runs it."""
    from alignrec.config import add_config_arguments

    parser = subparsers.add_parser(name, help=help, description=description or help, **parser_options)
    for flags, options in arguments:
        parser.add_argument(*flags, **options)
    if config is not None:
        what = config_help or f"{name} settings"
        parser.add_argument("--config", help=f"YAML/JSON file with {what} (flags override it)")
        add_config_arguments(parser, config)
    parser.set_defaults(handler=handler, config_class=config)
    return parser


def command_config(args: argparse.Namespace) -> Any:
    """The command's typed config: its defaults < ``--config FILE`` < the flags given."""
    from alignrec.config import config_from_args

    return config_from_args(args.config_class, args, args.config)


def print_summary(summary: Any) -> int:
    """Print a command's JSON summary on stdout; the handler's exit status (0)."""
    from alignrec.utils.io import to_json

    print(to_json(summary), end="")
    return 0
