"""``alignrec evaluate`` end to end on the tiny run: files, metrics, re-scoring, errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from alignrec.cli import main
from alignrec.data.dataset import load_dataset
from alignrec.metrics import evaluate_rankings
from alignrec.metrics.predictions import evaluate_predictions_file
from alignrec.evaluate.recipe import EvaluateConfig, evaluate


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_evaluate_cli_writes_rescorable_predictions(tiny_run, tmp_path, capsys):
    out = tmp_path / "evaluate"
    assert main(["evaluate", "--model", str(tiny_run), "--out", str(out), "--beam-size", "12", "--batch-size", "7"]) == 0
    summary = json.loads(capsys.readouterr().out)
    dataset = load_dataset(tiny_run)
    test = dataset.split("test")
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["user_id"] for p in predictions] == [dataset.user_ids[u] for u in test.user_index]
    for record in predictions:
        assert len(record["items"]) == 10 == len(set(record["items"]))
        assert set(record["items"]) <= set(dataset.item_ids)
        assert record["scores"] == sorted(record["scores"], reverse=True)
    # metrics.json = the evaluator applied to the predictions file (re-scored independently)
    metrics = json.loads((out / "metrics.json").read_text())
    rescored = evaluate_predictions_file(out / "predictions.jsonl", dataset, "test", [1, 5, 10])
    assert metrics["metrics"] == pytest.approx(rescored["metrics"])
    assert summary["metrics"] == metrics["metrics"]
    assert metrics["users"] == len(test) and not metrics["sampled"]
    assert metrics["counts"] == {"duplicate_items": 0, "unknown_items": 0, "short_lists": 0, "empty_lists": 0}
    # hand check of HR@10: the share of users whose target is in their list
    index_of = dataset.item_index_of
    hits = [dataset.item_ids[t] in p["items"] for p, t in zip(predictions, test.targets, strict=True)]
    assert metrics["metrics"]["hr@10"] == pytest.approx(np.mean(hits))
    assert 0 < np.mean(hits) < 1  # the check distinguishes hits from misses
    record = json.loads((out / "config.json").read_text())
    assert record["stage"] == "evaluate" and record["config"]["beam_size"] == 12
    assert record["model_version"] == metrics["model_version"]
    assert all(index_of[i] >= 0 for p in predictions for i in p["items"])


def test_sampled_users_and_reference_method_agree(tiny_run, tiny_recommender, tmp_path):
    config = EvaluateConfig(beam_size=10, top_k=10, users=9, seed=3)
    fast = evaluate(config, tiny_run, out=tmp_path / "fast", recommender=tiny_recommender)
    reference = evaluate(
        EvaluateConfig(beam_size=10, top_k=10, users=9, seed=3, method="reference"),
        tiny_run,
        out=tmp_path / "ref",
        recommender=tiny_recommender,
    )
    assert fast["sampled"] and fast["users"] == 9 and fast["users_in_split"] == 40
    assert reference["users"] == 9 and reference["metrics"] == pytest.approx(fast["metrics"])
    fast_lines = read_jsonl(tmp_path / "fast" / "predictions.jsonl")
    reference_lines = read_jsonl(tmp_path / "ref" / "predictions.jsonl")
    assert [r["items"] for r in fast_lines] == [r["items"] for r in reference_lines]
    np.testing.assert_allclose([r["scores"] for r in fast_lines], [r["scores"] for r in reference_lines], atol=1e-4)
    # metrics cover the sampled users only
    dataset = load_dataset(tiny_run)
    test = dataset.split("test")
    row_of = {dataset.user_ids[u]: row for row, u in enumerate(test.user_index)}
    lists = [[dataset.item_index_of[i] for i in r["items"]] for r in fast_lines]
    targets = [test.targets[row_of[r["user_id"]]] for r in fast_lines]
    assert fast["metrics"] == pytest.approx(evaluate_rankings(lists, targets, dataset.num_items).metrics)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top-k", "30", "--beam-size", "20"], "top_k must be between 1 and beam_size"),
        (["--top-k", "5"], "largest K (10) exceeds top_k (5)"),
        (["--batch-size", "0"], "batch_size must be >= 1"),
        (["--users", "0"], "users must be >= 1"),
    ],
)
def test_bad_settings_are_user_errors(tiny_run, flags, message, capsys):
    assert main(["evaluate", "--model", str(tiny_run), *flags]) == 2
    assert message in capsys.readouterr().err


def test_missing_model_and_mismatched_data_set(tiny_run, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path)]) == 2
    assert "no fine-tuned model" in capsys.readouterr().err
    other = tmp_path / "other"
    from alignrec.data.synthetic import write_synthetic

    write_synthetic(other, num_users=10, num_items=30)
    assert main(["evaluate", "--model", str(tiny_run), "--data", str(other), "--out", str(tmp_path / "x")]) == 2
    assert "the model has codes for 24 items but the data set" in capsys.readouterr().err
    # same size, different item ids
    shuffled = tmp_path / "shuffled"
    shutil.copytree(tiny_run, shuffled)
    from alignrec.tokenizer.codes import ItemCodes

    codes = ItemCodes.load(shuffled / "finetune")
    codes.item_ids = list(reversed(codes.item_ids))
    codes.save(shuffled / "finetune")
    assert main(["evaluate", "--model", str(shuffled), "--out", str(tmp_path / "y")]) == 2
    assert "codes belong to another data set" in capsys.readouterr().err


def test_config_method_names_match_the_search_registry():
    import typing

    from alignrec.llm.recommender import SEARCH_METHODS
    from alignrec.serve.precache import PrecacheConfig

    for config in (EvaluateConfig, PrecacheConfig):
        assert set(typing.get_args(typing.get_type_hints(config)["method"])) == set(SEARCH_METHODS)


def test_old_configs_with_workers_are_refused(tmp_path):
    """``workers`` (helper processes) is gone, for torchrun: a config that still sets it is an
    error naming the key, not silently a one-process run."""
    from alignrec.config import ConfigError, from_mapping
    from alignrec.pipeline.experiment import load_experiment

    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['workers'\]"):
        from_mapping(EvaluateConfig, {"beam_size": 10, "workers": 2}, "evaluate")
    config = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
    with pytest.raises(ConfigError, match=r"workers"):
        load_experiment(config, [f"out={tmp_path / 'run'}", "evaluate.workers=2"])


def test_both_protocols_keep_the_main_files_and_add_the_seen_excluded_ones(tiny_run, tiny_recommender, tmp_path):
    """exclude=both: predictions.jsonl byte-identical to exclude=none; the seen-excluded lists hold
    no item the user had before the target, are full, and are scored in metrics.json."""
    base = EvaluateConfig(beam_size=10, batch_size=4, shard_users=15)
    plain = evaluate(base, tiny_run, out=tmp_path / "none", recommender=tiny_recommender)
    both = evaluate(dataclasses.replace(base, exclude="both"), tiny_run, out=tmp_path / "both", recommender=tiny_recommender)
    assert (tmp_path / "both" / "predictions.jsonl").read_bytes() == (tmp_path / "none" / "predictions.jsonl").read_bytes()
    assert both["metrics"] == plain["metrics"] and "exclude" not in plain and "seen_excluded" not in plain
    dataset = load_dataset(tiny_run)
    test = dataset.split("test")
    seen_lists = read_jsonl(tmp_path / "both" / "predictions_seen_excluded.jsonl")
    main_lists = read_jsonl(tmp_path / "both" / "predictions.jsonl")
    overlapping = 0
    for row, (record, main_record) in enumerate(zip(seen_lists, main_lists, strict=True)):
        sequence = [dataset.item_ids[i] for i in dataset.sequences[int(test.user_index[row])]]
        assert sequence[-1] == dataset.item_ids[int(test.targets[row])]  # leave-one-out: the target is the last item
        assert len(record["items"]) == 10 and not set(record["items"]) & (set(sequence[:-1]) - {sequence[-1]})
        overlapping += bool(set(main_record["items"]) & set(sequence[:-1]))
    assert overlapping > 0  # the main protocol does recommend seen items here (else the test proves nothing)
    rescored = evaluate_predictions_file(tmp_path / "both" / "predictions_seen_excluded.jsonl", dataset, "test", [1, 5, 10])
    assert both["seen_excluded"]["metrics"] == pytest.approx(rescored["metrics"])
    assert both["exclude"] == "both"
    # history alone: the main files are the seen-excluded ones
    only = evaluate(dataclasses.replace(base, exclude="history"), tiny_run, out=tmp_path / "history", recommender=tiny_recommender)
    assert (tmp_path / "history" / "predictions.jsonl").read_text() == (tmp_path / "both" / "predictions_seen_excluded.jsonl").read_text()
    assert only["metrics"] == both["seen_excluded"]["metrics"]
    # a rerun reuses every shard of both protocols
    again = evaluate(dataclasses.replace(base, exclude="both"), tiny_run, out=tmp_path / "both", recommender=tiny_recommender)
    assert again["shards"]["reused"] == 3 and again["seen_excluded"]["shards_reused"] == 3


def test_seen_items_are_what_the_classic_models_seen_mask_removes(tmp_path):
    """Both sides of the "seen items excluded" comparison remove the same items: the LLM's
    (``seen_items``, inside the beam search) and the classic models' (``seen_mask`` on scores),
    including a user whose test item repeats an earlier one (it stays rankable on both sides)."""
    import torch

    from alignrec.collab.data import TrainingData
    from alignrec.collab.trainer import seen_mask
    from alignrec.data.dataset import RawDataset
    from alignrec.data.prepare import PrepareConfig, write_dataset
    from alignrec.evaluate.recipe import seen_items

    sequences = {"a": ["1", "2", "3", "4", "5"], "b": ["6", "7", "6", "8", "6"], "c": ["2", "3", "9", "3", "1"]}
    write_dataset(RawDataset(sequences={u: [(i, float(t)) for t, i in enumerate(s)] for u, s in sequences.items()}),
                  tmp_path, PrepareConfig(format="csv"))
    dataset = load_dataset(tmp_path)
    test, valid = dataset.split("test"), dataset.split("valid")
    users = test.user_index
    seen = seen_items(dataset, "test", users)
    valid_item = np.full(dataset.num_users, -1, dtype=np.int64)
    valid_item[valid.user_index] = valid.targets
    mask = seen_mask(TrainingData.from_dataset(dataset), users, valid_item[users], torch.from_numpy(test.targets),
                     dataset.num_items)
    assert [set(np.flatnonzero(row).tolist()) for row in mask.numpy()] == seen
    by_user = {dataset.user_ids[int(u)]: {dataset.item_ids[i] for i in items} for u, items in zip(users, seen, strict=True)}
    assert by_user == {"a": {"1", "2", "3", "4"}, "b": {"7", "8"}, "c": {"2", "3", "9"}}  # b's test item 6 repeats: kept
