"""Train RecBole 1.2.1's own model on atomic files written by export_atomic.py; write result.json.

Runs in the separate RecBole venv (.venv-recbole; see README.md in this folder), never in
alignrec's. Protocol = alignrec's: leave-one-out (``LS: valid_and_test``, ordered by time,
grouped by user), 20 history items, full ranking over all items, Hit/NDCG at 1/5/10, early
stopping on validation NDCG@10, test metrics of the best-validation checkpoint. Everything
else is RecBole's own default for the model, except ``train_batch_size`` (see --batch-size).

    .venv-recbole/bin/python benchmarks/recbole_peer/run_recbole.py --data DIR --model SASRec --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_logger, init_seed

NAME = "alignrec-loo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder holding alignrec-loo/alignrec-loo.inter")
    parser.add_argument("--model", required=True, help="RecBole model class name (SASRec, BERT4Rec, ...)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256,
                        help="train_batch_size (RecBole's default 2048 is tuned for GPUs; 256 is the common CPU choice)")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    args.data, args.out = os.path.abspath(args.data), os.path.abspath(args.out)
    os.chdir(args.out)  # RecBole writes ./log and ./log_tensorboard into the working directory
    config_dict = {
        "data_path": args.data,
        "checkpoint_dir": args.out,
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 20,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Hit", "NDCG"],
        "topk": [1, 5, 10],
        "valid_metric": "NDCG@10",
        "epochs": args.epochs,
        "stopping_step": 10,
        "train_batch_size": args.batch_size,
        "eval_batch_size": 4096,
        "train_neg_sample_args": None,
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "device": "cpu",
        "worker": 0,
        "show_progress": False,
        "log_wandb": False,
    }
    config = Config(model=args.model, dataset=NAME, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    train_seconds: list[float] = []
    original_train_epoch = trainer._train_epoch

    def timed_train_epoch(*a, **k):
        start = time.time()
        result = original_train_epoch(*a, **k)
        train_seconds.append(time.time() - start)
        return result

    trainer._train_epoch = timed_train_epoch
    valid_scores: list[float] = []
    started = time.time()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False,
                callback_fn=lambda epoch, score: valid_scores.append(float(score)))
    fit_seconds = time.time() - started
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    def rename(result: dict) -> dict:
        return {key.replace("hit@", "hr@"): float(value) for key, value in result.items()}

    best_epoch = 1 + max(range(len(valid_scores)), key=valid_scores.__getitem__) if valid_scores else None
    result = {
        "recbole_version": __import__("recbole").__version__,
        "model": args.model,
        "test": rename(test),
        "valid": rename(trainer.best_valid_result or {}),
        "epochs_run": len(train_seconds),
        "best_epoch": best_epoch,
        "seconds_per_epoch": round(sum(train_seconds) / max(len(train_seconds), 1), 3),
        "train_seconds": round(sum(train_seconds), 2),
        "fit_seconds_with_validation": round(fit_seconds, 2),
        "valid_ndcg10_per_epoch": valid_scores,
        "users": {"train_inter": len(train_data.dataset), "test": len(test_data.dataset)},
        "settings": {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v))
                     for k, v in config.final_config_dict.items()
                     if k in ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob",
                              "attn_dropout_prob", "hidden_act", "loss_type", "learning_rate", "train_batch_size",
                              "mask_ratio", "MAX_ITEM_LIST_LENGTH", "stopping_step", "epochs", "weight_decay")},
        "torch_threads": torch.get_num_threads(),
    }
    with open(os.path.join(args.out, "result.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
