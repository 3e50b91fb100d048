"""``alignrec collab train`` and ``alignrec collab models``."""

from __future__ import annotations

import argparse

from alignrec.commands import add_command, argument, print_summary


class _ModelFlagsParser(argparse.ArgumentParser):
    """A ``collab`` subcommand parser; with ``model_flags=True`` (``collab train``) it gains the
    per-model flags. Those come from the model modules, which import torch, so they are added only
    when the command is parsed or its help shown — not for every ``alignrec`` invocation."""

    def __init__(self, *args, model_flags: bool = False, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's
        super().__init__(*args, **kwargs)
        self._model_flags_pending = model_flags

    def _add_model_flags(self) -> None:
        if self._model_flags_pending:
            from alignrec.collab.config import add_model_arguments

            add_model_arguments(self)
            self._model_flags_pending = False

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        self._add_model_flags()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_model_flags()
        return super().format_help()


def register(subparsers: argparse._SubParsersAction) -> None:
    from alignrec.collab.config import CollabConfig

    parser = subparsers.add_parser(
        "collab",
        help="behaviour models and classic baselines (DCCF, LightGCN, SASRec, BERT4Rec, FMLP-Rec, popularity)",
        description="Train collaborative models on a prepared data set and export their item embeddings.",
    )
    commands = parser.add_subparsers(dest="collab_command", required=True, metavar="COMMAND",
                                     parser_class=_ModelFlagsParser)

    add_command(
        commands, "train", config=CollabConfig, config_help="training and model settings", handler=run_train,
        model_flags=True,
        help="train one model, evaluate it (full ranking) and export its item embeddings",
        description=(
            "Train --model on the training part of a prepared run folder, early-stop on validation NDCG@10, "
            "evaluate the best checkpoint on the test split (full ranking over all items) and write metrics.json, "
            "item_embeddings.safetensors + item_ids.json, model.safetensors, train_log.json and config.json "
            "to --out (default RUN/collab/<model>)."
        ),
        arguments=[
            argument("--data", required=True, help="run folder (or its dataset/ folder) written by `alignrec prepare`"),
            argument("--out", help="output folder (default: DATA/collab/<model>)"),
            argument("--resume", action="store_true", help="continue from OUT/checkpoint if it exists"),
        ],
    )
    models = commands.add_parser("models", help="list the models and their default settings")
    models.set_defaults(handler=run_models)


def run_train(args: argparse.Namespace) -> int:
    from alignrec.collab.config import resolve_configs
    from alignrec.collab.trainer import train

    train_config, model_config = resolve_configs(args, args.config)
    result = train(train_config, model_config, args.data, out_dir=args.out, resume=args.resume)
    return print_summary({"out": str(result.out_dir), "model": train_config.model, "test": result.metrics["test"],
                          "best_epoch": result.metrics["best_epoch"], "epochs_run": result.metrics["epochs_run"]})


def run_models(args: argparse.Namespace) -> int:
    from alignrec.collab.registry import get_model_spec, model_names
    from alignrec.config import to_dict

    return print_summary({name: {"description": get_model_spec(name).description,
                                 "defaults": to_dict(get_model_spec(name).config_class())} for name in model_names()})
