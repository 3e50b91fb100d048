"""``alignrec collab train`` and ``alignrec collab models``."""

from __future__ import annotations

import argparse


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
    from alignrec.config import add_config_arguments

    parser = subparsers.add_parser(
        "collab",
        help="behaviour models and classic baselines (DCCF, LightGCN, SASRec, BERT4Rec, FMLP-Rec, popularity)",
        description="Train collaborative models on a prepared data set and export their item embeddings.",
    )
    commands = parser.add_subparsers(dest="collab_command", required=True, metavar="COMMAND",
                                     parser_class=_ModelFlagsParser)

    train = commands.add_parser(
        "train",
        model_flags=True,
        help="train one model, evaluate it (full ranking) and export its item embeddings",
        description=(
            "Train --model on the training part of a prepared run folder, early-stop on validation NDCG@10, "
            "evaluate the best checkpoint on the test split (full ranking over all items) and write metrics.json, "
            "item_embeddings.safetensors + item_ids.json, model.safetensors, train_log.json and config.json "
            "to --out (default RUN/collab/<model>)."
        ),
    )
    train.add_argument("--data", required=True, help="run folder (or its dataset/ folder) written by `alignrec prepare`")
    train.add_argument("--out", help="output folder (default: DATA/collab/<model>)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if it exists")
    train.add_argument("--config", help="YAML/JSON file with training and model settings (flags override it)")
    add_config_arguments(train, CollabConfig)
    train.set_defaults(handler=run_train)

    models = commands.add_parser("models", help="list the models and their default settings")
    models.set_defaults(handler=run_models)


def run_train(args: argparse.Namespace) -> int:
    from alignrec.collab.config import resolve_configs
    from alignrec.collab.trainer import train
    from alignrec.utils.io import to_json

    train_config, model_config = resolve_configs(args, args.config)
    result = train(train_config, model_config, args.data, out_dir=args.out, resume=args.resume)
    summary = {"out": str(result.out_dir), "model": train_config.model, "test": result.metrics["test"],
               "best_epoch": result.metrics["best_epoch"], "epochs_run": result.metrics["epochs_run"]}
    print(to_json(summary), end="")
    return 0


def run_models(args: argparse.Namespace) -> int:
    from alignrec.collab.registry import get_model_spec, model_names
    from alignrec.config import to_dict
    from alignrec.utils.io import to_json

    listing = {name: {"description": get_model_spec(name).description,
                      "defaults": to_dict(get_model_spec(name).config_class())} for name in model_names()}
    print(to_json(listing), end="")
    return 0
