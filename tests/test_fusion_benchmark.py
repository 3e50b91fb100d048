"""benchmarks/fusion.py on a tiny sweep folder: its ends (a = 0, a = 1) are the pipeline's own rankings
(the item head's evaluation, the classic model's trainer), a mixed weight is worked out here by
hand from the two log-probabilities, and the weight it reports is validation's best."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import TINY, load_script

from alignrec.cli import main as cli
from alignrec.config import load_config_file
from alignrec.data import load_dataset
from alignrec.metrics import metrics_from_ranks
from alignrec.pipeline.report import collab_test_ranks, prediction_ranks
from alignrec.utils.io import read_json


def tiny_item_head_sweep(tmp_path: Path) -> Path:
    base = load_config_file(TINY)
    base.update(precache=None, threads=1, baselines=[{"model": "sasrec", "epochs": 3}])
    base["behaviour"].update(epochs=2)
    base["finetune"].update(max_steps=30, logging_steps=10, item_loss_weight=1.0)
    base["evaluate"] = {"beam_size": 20, "batch_size": 16, "top_k": 20, "exclude": "both", "ranker": "item"}
    sweep = {"name": "f", "base": base, "out": str(tmp_path / "seed0"), "results": str(tmp_path / "seed0"),
             "cells": [{"name": "head", "set": {}}]}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep))
    assert cli(["sweep", str(path)]) == 0
    return tmp_path / "seed0"


@pytest.mark.usefixtures("one_torch_thread")
def test_fusion_ends_are_the_pipelines_rankings_and_validation_chooses_the_weight(tmp_path):
    folder = tiny_item_head_sweep(tmp_path)
    script = load_script("fusion")
    one = script.read_folder(folder, "head", "sasrec", batch_size=7)  # batches that split the users unevenly

    summary = read_json(folder / "cells" / "head.json")
    dataset = load_dataset(summary["stages"]["prepare"])
    test = dataset.split("test")
    rows = np.arange(len(test))
    evaluation = Path(summary["stages"]["evaluate"])
    sasrec = Path(summary["stages"]["baseline/sasrec"])
    top_k = 20
    for protocol, predictions, seen_excluded in (("main", "predictions.jsonl", False),
                                                 ("seen excluded", "predictions_seen_excluded.jsonl", True)):
        item_head = one["test"][protocol][0]
        listed = prediction_ranks(dataset, evaluation / predictions, rows)  # the evaluation's top-20 lists (-1: beyond)
        assert np.array_equal(np.where(item_head < top_k, item_head, -1), listed)
        assert np.array_equal(one["test"][protocol][-1], collab_test_ranks(sasrec, dataset, seen_excluded=seen_excluded))

    # a = 0.3 by hand: the rank of the target among the mixed log-probabilities, ties to the lower index
    scorers = script.Scorers(folder / "cells" / "head.json", summary, "sasrec")
    llm, classic = scorers.log_probs("test", rows)
    mixed = (0.7 * llm + 0.3 * classic).numpy()
    for row in range(len(test)):
        target = int(test.targets[row])
        expected = int(np.sum(mixed[row] > mixed[row, target]) + np.sum(mixed[row, :target] == mixed[row, target]))
        assert one["test"]["main"][script.WEIGHTS.index(0.3), row] == expected

    # the chosen a is the first best on validation, and the fused row reads test there
    for protocol in script.PROTOCOLS:
        valid = one["valid ndcg@10"][protocol]
        assert valid[one["chosen"][protocol]] == max(valid)
        assert valid.index(max(valid)) == one["chosen"][protocol]
    tables = script.compare([one], "sasrec")
    for protocol, table in tables.items():
        fused = next(r for r in table if r["model"] == "fused")
        chosen = one["chosen"][protocol]
        assert fused["a per seed"] == [script.WEIGHTS[chosen]]
        assert fused["ndcg@10"] == pytest.approx(metrics_from_ranks(one["test"][protocol][chosen], [10])["ndcg@10"])
        difference = fused["ndcg@10 - sasrec"]
        alone = next(r for r in table if r["model"] == "sasrec")
        assert difference["difference"] == pytest.approx(fused["ndcg@10"] - alone["ndcg@10"])

    # the whole script: files written, and a model without the item head is refused by name
    script.main(["--name", "t", "--cell", "head", "--classic", "sasrec", "--results-dir", str(tmp_path / "out"),
                 "--sweep", str(folder)])
    assert "## Seen excluded" in (tmp_path / "out" / "fusion_t.md").read_text()
    with pytest.raises(SystemExit, match="no classic model 'fmlp'"):
        script.main(["--name", "t", "--cell", "head", "--classic", "fmlp", "--sweep", str(folder)])
    with pytest.raises(SystemExit, match="no cell 'other'"):
        script.main(["--name", "t", "--cell", "other", "--classic", "sasrec", "--sweep", str(folder)])
