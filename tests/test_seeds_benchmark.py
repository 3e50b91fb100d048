"""benchmarks/seeds.py on two tiny sweep folders (two seeds, two cells each): per-seed figures are
the runs' own, means and paired differences are worked out here from the runs' files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import TINY, load_script

from alignrec.cli import main as cli
from alignrec.config import load_config_file
from alignrec.data import load_dataset
from alignrec.metrics import per_user_metrics
from alignrec.pipeline.report import collab_test_ranks
from alignrec.utils.io import read_json


def tiny_sweep(tmp_path, seed: int):
    base = load_config_file(TINY)
    base.update(precache=None, threads=1, baselines=[{"model": "pop"}])
    base["behaviour"].update(epochs=2)
    base["finetune"].update(max_steps=6, logging_steps=3)
    base["evaluate"] = {"beam_size": 10, "batch_size": 16, "exclude": "both"}
    sweep = {"name": "s", "base": base, "out": str(tmp_path / f"seed{seed}"), "results": str(tmp_path / f"seed{seed}"),
             "cells": [{"name": "slow", "set": {"finetune.learning_rate": 0.001}},
                       {"name": "fast", "set": {"finetune.learning_rate": 0.02}},
                       {"name": "sasrec codes", "set": {"behaviour.model": "sasrec"}}]}  # a second behaviour model
    path = tmp_path / f"sweep{seed}.json"
    path.write_text(json.dumps(sweep))
    sets = [f"behaviour.seed={seed}", f"finetune.seed={seed}", f"tasks.seed={seed}", f"tokenizer.seed={seed}"]
    assert cli(["sweep", str(path), *[a for s in sets for a in ("--set", s)]]) == 0
    return tmp_path / f"seed{seed}"


@pytest.mark.usefixtures("one_torch_thread")
def test_seed_means_and_paired_differences_from_the_runs_files(tmp_path, monkeypatch):
    folders = [tiny_sweep(tmp_path, seed) for seed in (1, 2)]
    script = load_script("seeds")
    script.main(["--name", "t", "--reference", "slow", "--results-dir", str(tmp_path / "out"),
                 *[a for f in folders for a in ("--sweep", str(f))]])
    record = json.loads((tmp_path / "out" / "seeds_t.json").read_text())
    rows = {(r["protocol"], r["model"]): r for r in record["rows"]}
    assert sorted({p for p, _ in rows}) == ["main", "seen excluded"]
    assert sorted({m for _, m in rows}) == ["LLM: fast", "LLM: sasrec codes", "LLM: slow", "dccf", "pop", "sasrec"]

    per_seed: dict[str, list[np.ndarray]] = {}  # main protocol, NDCG@10 per user, per seed: from the runs' files
    for folder in folders:
        for cell in ("slow", "fast"):
            summary = read_json(folder / "cells" / f"{cell}.json")
            evaluation = read_json(f"{summary['stages']['evaluate']}/metrics.json")
            row = rows[("main", f"LLM: {cell}")]
            assert row["ndcg@10 per seed"][folders.index(folder)] == pytest.approx(evaluation["metrics"]["ndcg@10"], abs=1e-6)
            assert row["seeds"] == 2
        dataset = load_dataset(summary["stages"]["prepare"])
        for stage, model in (("behaviour", "dccf"), ("baseline/pop", "pop")):
            ranks = collab_test_ranks(Path(summary["stages"][stage]), dataset)
            per_seed.setdefault(model, []).append(per_user_metrics(ranks, [10])["ndcg@10"])
            expected = read_json(f"{summary['stages'][stage]}/metrics.json")["test"]["ndcg@10"]
            assert rows[("main", model)]["ndcg@10 per seed"][folders.index(folder)] == pytest.approx(expected, abs=1e-6)
    means = {model: np.mean(values, axis=0) for model, values in per_seed.items()}
    best = max(means, key=lambda m: means[m].mean())
    for model, averaged in means.items():
        row = rows[("main", model)]
        assert row["ndcg@10"] == pytest.approx(averaged.mean())
        assert row["ndcg@10"] == pytest.approx(np.mean(row["ndcg@10 per seed"]))
        if model != best:
            difference = row["ndcg@10 - best classic"]
            assert difference["against"] == best
            assert difference["difference"] == pytest.approx(averaged.mean() - means[best].mean())
            low, high = difference["ci95"]
            assert low <= difference["difference"] <= high
    fast = rows[("main", "LLM: fast")]
    assert fast["ndcg@10 - reference"]["against"] == "LLM: slow"
    assert fast["ndcg@10 - reference"]["difference"] == pytest.approx(fast["ndcg@10"] - rows[("main", "LLM: slow")]["ndcg@10"])
    assert "## Seen excluded" in (tmp_path / "out" / "seeds_t.md").read_text()

    # one folder twice is one result, not two seeds
    with pytest.raises(SystemExit, match="same seeds"):
        script.main(["--name", "t", "--results-dir", str(tmp_path / "out"), "--sweep", str(folders[0]), "--sweep", str(folders[0])])

    # --cell: only the named cells, in that order, the same figures; a cell a folder lacks is an error
    script.main(["--name", "two", "--results-dir", str(tmp_path / "out"), "--cell", "fast", "--cell", "slow",
                 *[a for f in folders for a in ("--sweep", str(f))]])
    chosen = json.loads((tmp_path / "out" / "seeds_two.json").read_text())["rows"]
    assert [r["model"] for r in chosen if r["protocol"] == "main" and r["kind"] == "LLM"] == ["LLM: fast", "LLM: slow"]
    assert next(r for r in chosen if r["model"] == "LLM: fast")["ndcg@10 per seed"] == fast["ndcg@10 per seed"]
    with pytest.raises(SystemExit, match="has no cell 'medium'"):
        script.main(["--name", "t", "--results-dir", str(tmp_path / "out"), "--cell", "medium", "--sweep", str(folders[0])])
