"""The whole pipeline on a tiny synthetic data set with a tiny model (issue: under two minutes).

Data: ``cyclic`` users walk rings of items, so the next item is a function of the last one.
The behaviour model, the tokenizer (with LLM alignment against the tiny model's embeddings),
the tasks, LoRA fine-tuning, beam-search evaluation, pre-cache and the report all run through
``alignrec run``; the fine-tuned model must beat popularity on the test split.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from alignrec.cli import main
from alignrec.config import ConfigError
from alignrec.data.synthetic import synthetic_raw
from alignrec.pipeline.experiment import load_experiment
from alignrec.utils.io import read_json


def write_synthetic_csv(folder: Path) -> tuple[Path, Path]:
    raw = synthetic_raw(num_users=48, num_items=24, groups=4, length=8, kind="cyclic", seed=3)
    inter, items = folder / "inter.csv", folder / "items.csv"
    with open(inter, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for user, events in raw.sequences.items():
            writer.writerows([user, item, ts] for item, ts in events)
    with open(items, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "title", "description"])
        for item, record in raw.items.items():
            writer.writerow([item, record.title, record.description])
    return inter, items


def save_tiny_backbone(folder: Path, texts: list[str]) -> Path:
    from alignrec.llm.tiny import build_tiny_backbone

    # initializer_range 0.2: weights large enough that frozen rows (EOS) reach confident logits,
    # standing in for a pretrained model.
    model, tokenizer = build_tiny_backbone(words=texts, hidden_size=32, layers=2, heads=2, seed=0, initializer_range=0.2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def experiment_config(tmp_path: Path) -> dict:
    inter, items = write_synthetic_csv(tmp_path)
    raw = synthetic_raw(num_users=48, num_items=24, groups=4, length=8, kind="cyclic", seed=3)
    backbone = str(save_tiny_backbone(tmp_path / "tiny", [r.text() for r in raw.items.values()]))
    return {
        "name": "tiny",
        "out": str(tmp_path / "run"),
        "data": {"format": "csv", "inter": str(inter), "items": str(items)},
        "behaviour": {"model": "lightgcn", "epochs": 5, "embedding_dim": 16},
        "baselines": [{"model": "pop"}],
        "tokenizer": {"levels": 2, "codebook_size": 6, "llm": backbone, "rounds": 2, "steps_per_round": 5},
        "tasks": {"tasks": ["sequential"], "phrasings": 1, "llm": backbone, "max_valid_samples": 16},
        "finetune": {
            "llm": backbone, "max_steps": 150, "batch_size": 16, "learning_rate": 0.01, "lora_dropout": 0.0,
            "logging_steps": 20, "save_steps": 1000, "warmup_ratio": 0.0, "lr_scheduler": "constant",
            "save_adapter": False, "max_eval_examples": 16,
        },
        "evaluate": {"beam_size": 10, "batch_size": 16},
        "precache": {"top_k": 10, "beam_size": 10},
        "threads": 2,
    }


def test_pipeline_end_to_end_beats_popularity(tmp_path: Path) -> None:
    config = experiment_config(tmp_path)
    config_path = tmp_path / "experiment.json"
    config_path.write_text(json.dumps(config))
    assert main(["run", str(config_path)]) == 0

    run = tmp_path / "run"
    for path in [
        "dataset/manifest.json", "collab/lightgcn/metrics.json", "collab/lightgcn/item_embeddings.safetensors",
        "collab/pop/metrics.json", "tokenizer/item_codes.parquet", "tokenizer/report.json",
        "tasks/train.jsonl", "finetune/model/config.json", "finetune/loss_curve.png", "eval/metrics.json",
        "eval/predictions.jsonl", "cache/cache.sqlite", "report/report.md", "report/metrics.png", "report/summary.json",
    ]:
        assert (run / path).exists(), path

    summary = read_json(run / "report" / "summary.json")
    rows = {row["model"].split(" ")[0]: row for row in summary["comparison_same_users"]}
    llm, pop = rows["LLM"], rows["pop"]
    assert llm["users"] == pop["users"] == 48
    assert llm["hr@10"] > pop["hr@10"]
    assert llm["ndcg@10"] > pop["ndcg@10"]

    # A second run reuses every stage (only the incremental pre-cache runs again).
    assert main(["run", str(config_path)]) == 0
    markers = {p.parent.name: read_json(p) for p in run.rglob(".alignrec-stage.json")}
    assert set(markers) >= {"dataset", "lightgcn", "pop", "tokenizer", "tasks", "finetune", "eval", "cache"}

    # A sampled evaluation (the main job's CPU budget) re-scores every baseline, popularity
    # included, on the LLM's sampled users.
    assert main(["run", str(config_path), "--set", "evaluate.users=24"]) == 0
    summary = read_json(run / "report" / "summary.json")
    assert [row["users"] for row in summary["comparison_same_users"]] == [24, 24, 24]
    assert {row["model"].split(" ")[0] for row in summary["comparison_same_users"]} == {"LLM", "lightgcn", "pop"}


def test_unknown_section_keys_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tokenizer.*unknown key"):
        load_experiment(data={"name": "x", "tokenizer": {"levelz": 3}})
    with pytest.raises(ConfigError, match="baselines\\[0\\].*unknown key"):
        load_experiment(data={"name": "x", "baselines": [{"model": "sasrec", "hidden": 3}]})
    with pytest.raises(ConfigError, match="unknown key"):
        load_experiment(data={"name": "x", "stages": {}})


def test_overrides_apply_dotted_keys() -> None:
    experiment = load_experiment(data={"name": "x"}, overrides=["finetune.max_steps=7", "precache=null", "data.dataset=ml-100k"])
    assert experiment.finetune == {"max_steps": 7}
    assert experiment.precache is None
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_experiment(data={"name": "x"}, overrides=["finetune.max_steps"])


def test_sweep_shares_stages_and_skips_finished_cells(tmp_path: Path) -> None:
    base = experiment_config(tmp_path)
    base["precache"] = None
    base["baselines"] = []
    base["finetune"].update(max_steps=4, logging_steps=2)
    base["evaluate"] = {"beam_size": 5, "top_k": 5, "ks": [1, 5], "batch_size": 16}
    sweep = {
        "name": "ratio",
        "base": base,
        "out": str(tmp_path / "sweep"),
        "results": str(tmp_path / "results"),
        "grid": {"tasks.negative_ratio": [0, 1]},
        "cells": [{"name": "two levels, K=5", "set": {"tokenizer.codebook_size": 5}}],
    }
    tasks = base["tasks"]
    tasks["tasks"] = ["sequential", "negative"]
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep))
    assert main(["sweep", str(path)]) == 0

    record = read_json(tmp_path / "results" / "ratio_inter.json")
    assert record["complete"] is True
    assert [row["cell"] for row in record["rows"]] == ["negative_ratio=0", "negative_ratio=1", "two levels, K=5"]
    assert all(0.0 <= row["hr@5"] <= 1.0 for row in record["rows"])
    assert (tmp_path / "results" / "ratio_inter.md").read_text().startswith("# ratio_inter\n")
    stages = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "sweep" / "stages").iterdir())
    # One data set and behaviour model for all; two tokenizers (K=6 and K=5); three task sets.
    assert stages.count("prepare") == 1 and stages.count("behaviour") == 1
    assert stages.count("tokenizer") == 2 and stages.count("tasks") == 3 and stages.count("finetune") == 3

    # Finished cells are skipped: nothing is run again, the results are rewritten unchanged.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep" / "stages").rglob(".alignrec-stage.json")}
    assert main(["sweep", str(path)]) == 0
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep" / "stages").rglob(".alignrec-stage.json")}
    assert before == after
    assert read_json(tmp_path / "results" / "ratio_inter.json")["rows"] == record["rows"]
