"""The report's same-user comparison: classic models re-scored exactly as their trainer scored
them (the sampled figures are the full run's per-user ranks restricted to the sampled users),
the LLM's per-user ranks read back from predictions.jsonl, and bootstrap intervals on each row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignrec.collab import resolve_configs
from alignrec.collab.export import load_trained_model
from alignrec.collab.trainer import rank_test_split, train
from alignrec.data import load_dataset
from alignrec.metrics import metrics_from_ranks
from alignrec.pipeline.report import collab_test_ranks, comparison_row, paired_difference, prediction_ranks
from alignrec.utils.io import read_json

@pytest.fixture(scope="module")
def ring_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 users walking rings of 12 items (8 steps: no item twice), so each validation item is
    new to its user and adding it to a graph changes the scores."""
    from alignrec.data.synthetic import write_synthetic

    run = tmp_path_factory.mktemp("rings") / "run"
    write_synthetic(run, num_users=60, num_items=48, groups=4, length=8, kind="cyclic")
    return run


SETTINGS = {
    # a graph model: test scoring puts every user's validation item into the graph
    "lightgcn": {"model": "lightgcn", "epochs": 3, "patience": 0, "embedding_dim": 8, "batch_size": 32},
    # a sequential model whose run keeps history items out of the ranking
    "sasrec": {"model": "sasrec", "epochs": 2, "patience": 0, "exclude_history": True, "embedding_dim": 8,
               "num_heads": 1, "ffn_dim": 16, "batch_size": 16},
}


@pytest.mark.parametrize("model", sorted(SETTINGS))
@pytest.mark.usefixtures("one_torch_thread")
def test_sampled_rescoring_is_the_full_run_restricted_to_the_sampled_users(model: str, ring_run: Path, tmp_path: Path) -> None:
    out = tmp_path / model
    train(*resolve_configs(dict(SETTINGS[model])), ring_run, out)
    dataset = load_dataset(ring_run)
    recorded = read_json(out / "metrics.json")["test"]

    full = collab_test_ranks(out, dataset)
    assert metrics_from_ranks(full, (1, 5, 10)) == recorded  # the trainer's own figures, exactly
    rows = np.sort(np.random.default_rng(0).choice(len(full), size=17, replace=False))
    sampled = collab_test_ranks(out, dataset, rows)
    np.testing.assert_array_equal(sampled, full[rows])
    row = comparison_row(model, full[rows])
    assert {m: row[m] for m in ("hr@10", "ndcg@10")} == {m: metrics_from_ranks(full[rows])[m] for m in ("hr@10", "ndcg@10")}

    # one function for both: the trainer's scoring of the reloaded model gives the same ranks
    train_config, _ = resolve_configs(dict(SETTINGS[model]))
    np.testing.assert_array_equal(rank_test_split(load_trained_model(out, ring_run), dataset, train_config), full)


def test_prediction_ranks_and_intervals(tiny_run: Path, tmp_path: Path) -> None:
    dataset = load_dataset(tiny_run)
    test = dataset.split("test")
    rows = np.array([0, 3, 5])
    item_ids, user_ids = dataset.item_ids, dataset.user_ids
    other = [i for i in range(dataset.num_items) if i != int(test.targets[3])][:2]
    lines = [
        {"user_id": user_ids[int(test.user_index[0])], "items": [item_ids[int(test.targets[0])]]},  # rank 0
        {"user_id": user_ids[int(test.user_index[3])], "items": [item_ids[i] for i in other]},  # a miss
    ]  # user of row 5: no line, a miss
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ranks = prediction_ranks(dataset, path, rows)
    np.testing.assert_array_equal(ranks, [0, -1, -1])

    row = comparison_row("LLM", ranks)
    assert row["users"] == 3 and row["ndcg@10"] == pytest.approx(1 / 3)
    low, high = row["ci95"]["ndcg@10"]
    assert 0.0 <= low <= row["ndcg@10"] <= high <= 1.0
    # a model against itself: difference 0 with a zero-width paired interval
    assert paired_difference(ranks, ranks) == {m: {"difference": 0.0, "ci95": [0.0, 0.0]} for m in ("hr@10", "ndcg@10")}


@pytest.mark.usefixtures("one_torch_thread")
def test_both_protocols_beside_every_classic_model(ring_run: Path, tmp_path: Path) -> None:
    """protocol_rows: the classic model's seen-excluded figures are its trainer's seen-excluded
    ranking; the LLM's come from predictions_seen_excluded.jsonl; the main figures are kept."""
    from alignrec.pipeline.report import protocol_rows

    out = tmp_path / "sasrec"
    train(*resolve_configs(dict(SETTINGS["sasrec"])), ring_run, out)
    dataset = load_dataset(ring_run)
    test = dataset.split("test")
    rows = np.arange(len(test))
    # the LLM: a hit at rank 0 for every even row under "seen excluded", nothing otherwise
    lines = [{"user_id": dataset.user_ids[int(test.user_index[r])],
              "items": [dataset.item_ids[int(test.targets[r])]] if r % 2 == 0 else []} for r in rows]
    predictions = tmp_path / "predictions_seen_excluded.jsonl"
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    main_rows = [comparison_row("LLM", np.full(len(rows), -1)), comparison_row("sasrec", collab_test_ranks(out, dataset))]
    report = {"seen_excluded": {"predictions": str(predictions)}}
    got = protocol_rows(report, dataset, rows, "test", "LLM", {"sasrec": out}, main_rows)
    assert [r["model"] for r in got] == ["LLM", "sasrec"]
    assert got[0]["hr@10"] == 0.0 and got[0]["hr@10 seen excluded"] == pytest.approx(np.mean(rows % 2 == 0))
    seen = metrics_from_ranks(collab_test_ranks(out, dataset, seen_excluded=True), (1, 5, 10))
    assert got[1]["ndcg@10 seen excluded"] == pytest.approx(seen["ndcg@10"]) and got[1]["ndcg@10"] == main_rows[1]["ndcg@10"]
    assert protocol_rows({}, dataset, rows, "test", "LLM", {"sasrec": out}, main_rows) == []
