"""The whole pipeline on a tiny synthetic data set with a tiny model: ``configs/tiny.yaml``.

Data: ``cyclic`` users walk rings of items, so the next item is a function of the last one.
The behaviour model, the tokenizer (with LLM alignment against the tiny model's embeddings),
the tasks, LoRA fine-tuning, beam-search evaluation, pre-cache and the report all run through
``alignrec run``; the fine-tuned model must beat popularity on the test split, a second run
must reuse every stage, a code change must re-run exactly the stages whose code changed, and
two runs into empty folders must give identical results.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alignrec.cli import main
from alignrec.config import ConfigError, load_config_file
from alignrec.pipeline import fingerprint
from alignrec.pipeline.experiment import load_experiment, torch_settings
from alignrec.utils.io import read_json

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
# what the main job (configs/ml100k.yaml) writes, plus the tiny backbone the run builds
RUN_FILES = [
    "dataset/manifest.json", "backbone/config.json", "collab/dccf/metrics.json", "collab/dccf/item_embeddings.safetensors",
    "collab/sasrec/metrics.json", "collab/pop/metrics.json", "tokenizer/item_codes.parquet", "tokenizer/report.json",
    "tasks/train.jsonl", "finetune/model/config.json", "finetune/loss_curve.png", "evaluate/metrics.json",
    "evaluate/predictions.jsonl", "cache/cache.sqlite", "report/report.md", "report/metrics.png", "report/summary.json",
]


def run_tiny(out: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> dict[str, bool]:
    """``alignrec run configs/tiny.yaml --set out=OUT ...``; returns {stage: reused}."""
    capsys.readouterr()
    sets = [arg for override in (f"out={out}", *overrides) for arg in ("--set", override)]
    assert main(["run", str(TINY), *sets]) == 0
    out_text = capsys.readouterr().out
    printed = json.loads(out_text[out_text.rindex('{\n  "run_dir"'):])  # the trainer may print before it
    return {name: stage["reused"] for name, stage in printed["stages"].items()}


def marker_times(run: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob(".alignrec-stage.json")}


def test_pipeline_end_to_end_beats_popularity(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    reused = run_tiny(run, capsys)
    assert not any(reused.values())
    for path in RUN_FILES:
        assert (run / path).exists(), path

    summary = read_json(run / "report" / "summary.json")
    rows = {row["model"].split(" ")[0]: row for row in summary["comparison_same_users"]}
    llm, pop = rows["LLM"], rows["pop"]
    assert llm["users"] == pop["users"] == 48
    assert llm["hr@10"] > pop["hr@10"]
    assert llm["ndcg@10"] > pop["ndcg@10"]
    # every row carries its bootstrap intervals; re-scored classic models reproduce their own metrics.json
    assert all(row["ci95"]["ndcg@10"][0] <= row["ndcg@10"] <= row["ci95"]["ndcg@10"][1] for row in rows.values())
    assert all(summary["rescored_match_recorded"].values())
    assert {row["model"].split(" ")[0] for row in summary["llm_vs_classic"]} == {"dccf", "sasrec", "pop"}

    # A second run reuses every stage (only the incremental pre-cache runs again) and rewrites nothing.
    before = marker_times(run)
    reused = run_tiny(run, capsys)
    assert [name for name, was in reused.items() if not was] == ["precache"]
    after = marker_times(run)
    assert {k: v for k, v in after.items() if k != "cache"} == {k: v for k, v in before.items() if k != "cache"}

    # Code changes (checked on a copy of the package the fingerprints read): a module no stage
    # imports changes nothing; a fix in the evaluation code re-runs the evaluation alone.
    source = tmp_path / "src" / "alignrec"
    shutil.copytree(fingerprint.PACKAGE_ROOT, source, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "PACKAGE_ROOT", source)
    with open(source / "pipeline" / "sweep.py", "a") as handle:
        handle.write("\n# not stage code\n")
    assert [name for name, was in run_tiny(run, capsys).items() if not was] == ["precache"]
    with open(source / "evaluate" / "recipe.py", "a") as handle:
        handle.write("\n# a bug fix in the evaluation\n")
    before = marker_times(run)
    reused = run_tiny(run, capsys)
    assert [name for name, was in reused.items() if not was] == ["evaluate", "precache"]
    after = marker_times(run)
    assert {k for k in after if after[k] != before[k]} == {"evaluate", "cache"}

    # A sampled evaluation (the main job's CPU budget) re-scores every baseline, popularity
    # included, on the LLM's sampled users.
    run_tiny(run, capsys, "evaluate.users=24")
    summary = read_json(run / "report" / "summary.json")
    assert [row["users"] for row in summary["comparison_same_users"]] == [24, 24, 24, 24]
    assert {row["model"].split(" ")[0] for row in summary["comparison_same_users"]} == {"LLM", "dccf", "sasrec", "pop"}


def test_two_runs_into_empty_folders_give_identical_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    run_tiny(first, capsys)
    run_tiny(second, capsys)
    assert read_json(first / "evaluate" / "metrics.json")["metrics"] == read_json(second / "evaluate" / "metrics.json")["metrics"]
    assert (first / "evaluate" / "predictions.jsonl").read_bytes() == (second / "evaluate" / "predictions.jsonl").read_bytes()


def test_stages_run_with_deterministic_torch_kernels() -> None:
    """The cause of run-to-run drift on several threads: the backward of indexing with repeated
    indices (BPR losses, codebook rows). Inside a run it must be bit-identical every time."""
    import torch

    threads, before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(2625, 32, generator=generator, requires_grad=True)
    rows = torch.randint(0, 2625, (4096,), generator=generator)  # many repeats
    upstream = torch.randn(4096, 32, generator=generator)
    try:
        with torch_settings(2, deterministic=True):
            assert torch.are_deterministic_algorithms_enabled()
            grads = []
            for _ in range(10):
                weight.grad = None
                (weight[rows] * upstream).sum().backward()
                grads.append(weight.grad.clone())
            assert all(torch.equal(grads[0], grad) for grad in grads)
        assert torch.are_deterministic_algorithms_enabled() == before
    finally:
        torch.set_num_threads(threads)


def test_tiny_config_is_valid_and_self_contained() -> None:
    experiment = load_experiment(TINY)
    configs = experiment.stage_configs()
    assert configs.synthetic is not None and configs.backbone is not None
    assert {configs.tokenizer.llm, configs.finetune.llm} == {"tiny"}  # named once, at the top
    with pytest.raises(ConfigError, match=r"finetune.llm: the backbone is named once per experiment"):
        load_experiment(TINY, ["finetune.llm=smollm2"])
    assert TINY.read_text().startswith("# alignrec run configs/tiny.yaml")
    with pytest.raises(ConfigError, match="needs a backbone section"):
        load_experiment(TINY, ["backbone=null"])
    with pytest.raises(ConfigError, match="synthetic replaces the source"):
        load_experiment(TINY, ["data.dataset=ml-100k"])


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


def test_a_null_behaviour_setting_is_unset_so_the_model_can_be_switched() -> None:
    from alignrec.pipeline.experiment import collab_configs

    sasrec = {"model": "sasrec", "embedding_dim": 64, "train_stride": 5, "max_train_minutes": 4.0}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['train_stride'\] for model 'fmlp'"):
        collab_configs({**sasrec, "model": "fmlp"}, "behaviour")
    collab, model = collab_configs({**sasrec, "model": "fmlp", "train_stride": None, "max_train_minutes": None}, "behaviour")
    assert collab.model == "fmlp" and collab.max_train_minutes is None and model.embedding_dim == 64


def test_sweep_shares_stages_and_skips_finished_cells(tmp_path: Path) -> None:
    base = load_config_file(TINY)
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

    record = read_json(tmp_path / "results" / "ratio_synthetic.json")
    assert record["complete"] is True
    assert [row["cell"] for row in record["rows"]] == ["negative_ratio=0", "negative_ratio=1", "two levels, K=5"]
    assert all(0.0 <= row["hr@5"] <= 1.0 for row in record["rows"])
    assert (tmp_path / "results" / "ratio_synthetic.md").read_text().startswith("# ratio_synthetic\n")
    # the behaviour model on all test users, with its bootstrap intervals (the cells' K stops at 5)
    low, high = record["baselines"]["dccf"]["ci95"]["ndcg@10"]
    assert low <= record["baselines"]["dccf"]["ndcg@10"] <= high
    assert "| model | users | hr@1 | hr@5 | hr@10 | hr@10 95% CI |" in (tmp_path / "results" / "ratio_synthetic.md").read_text()
    stages = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "sweep" / "stages").iterdir())
    # One data set, backbone and behaviour model for all; two tokenizers (K=6 and K=5); three task sets.
    assert stages.count("prepare") == 1 and stages.count("backbone") == 1 and stages.count("behaviour") == 1
    assert stages.count("tokenizer") == 2 and stages.count("tasks") == 3 and stages.count("finetune") == 3

    # Finished cells are skipped: nothing is run again, the results are rewritten unchanged.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep" / "stages").rglob(".alignrec-stage.json")}
    assert main(["sweep", str(path)]) == 0
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep" / "stages").rglob(".alignrec-stage.json")}
    assert before == after
    assert read_json(tmp_path / "results" / "ratio_synthetic.json")["rows"] == record["rows"]


def test_distillation_teacher_is_the_stage_it_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """finetune.distill_from names a stage of the experiment (a baseline's model, or the behaviour model);
    its folder becomes the teacher and its key part of fine-tuning's."""
    run = tmp_path / "run"
    distill = ("finetune.item_loss_weight=1.0", "finetune.distill_weight=1.0")
    run_tiny(run, capsys, *distill, "finetune.distill_from=sasrec")
    record = read_json(run / "finetune" / "config.json")
    assert record["config"]["distill_from"] == str(run / "collab" / "sasrec")
    assert record["config"]["distill_weight"] == 1.0
    summary = read_json(run / "report" / "summary.json")
    rows = {row["model"].split(" ")[0]: row for row in summary["comparison_same_users"]}
    assert rows["LLM"]["ndcg@10"] > rows["pop"]["ndcg@10"]

    def error_of(*overrides: str) -> str:
        capsys.readouterr()
        sets = [arg for override in (f"out={run}", *distill, *overrides) for arg in ("--set", override)]
        assert main(["run", str(TINY), *sets]) == 2
        return capsys.readouterr().err

    assert "finetune.distill_from: 'nope' is not 'behaviour', a baseline of this experiment (['sasrec', 'pop'])" in \
        error_of("finetune.distill_from=nope")
    # the tiny config's behaviour model is DCCF, a graph model: no distribution per window position
    assert "is not a sequential model" in error_of("finetune.distill_from=behaviour")
