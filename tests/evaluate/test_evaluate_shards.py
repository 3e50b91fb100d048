"""Sharded, resumable ``alignrec evaluate``: a killed evaluation continues from its last finished
shard and ends with the files an uninterrupted run writes; shard files that do not check out
are searched again; other settings are refused or replaced as documented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from evaluation_runs import Killed, count_searches, interrupted, scores_of, shard_headers

from alignrec.cli import main
from alignrec.errors import InputError
from alignrec.evaluate.recipe import EvaluateConfig, evaluate


def test_killed_evaluation_resumes_to_the_uninterrupted_files(tiny_run, tiny_recommender, tmp_path, uninterrupted,
                                                               monkeypatch):
    whole, whole_report = uninterrupted
    assert [h["users"] for h in shard_headers(whole)] == [7, 7, 7, 7, 7, 5]
    assert whole_report["shards"] == {"users_per_shard": 7, "count": 6, "reused": 0}
    config = EvaluateConfig(beam_size=10, batch_size=4, shard_users=7)
    out = tmp_path / "resumed"
    calls = count_searches(monkeypatch, fail_on=2)
    with pytest.raises(Killed):
        evaluate(config, tiny_run, out=out, recommender=tiny_recommender)
    assert [p.name for p in sorted((out / "shards").glob("*.jsonl"))] == ["00000.jsonl"]
    assert not (out / "predictions.jsonl").exists()

    monkeypatch.undo()
    calls = count_searches(monkeypatch)
    report = evaluate(config, tiny_run, out=out, recommender=tiny_recommender)
    assert calls == [7, 7, 7, 7, 5]  # the first shard was not searched again
    assert (out / "predictions.jsonl").read_bytes() == (whole / "predictions.jsonl").read_bytes()
    assert scores_of(report) == scores_of(whole_report)
    assert scores_of(json.loads((out / "metrics.json").read_text())) == scores_of(whole_report)
    assert report["shards"] == {"users_per_shard": 7, "count": 6, "reused": 1}
    # the time is the sum of the shards' recorded search times, the rate the users over it
    seconds = sum(h["elapsed_s"] for h in shard_headers(out))
    assert report["elapsed_s"] == pytest.approx(seconds, abs=2e-3)
    assert report["users_per_s"] == pytest.approx(40 / report["elapsed_s"], rel=1e-3)

    # once finished, a rerun searches nothing and rewrites the same files
    calls.clear()
    again = evaluate(config, tiny_run, out=out, recommender=tiny_recommender)
    assert calls == [] and again["shards"]["reused"] == 6
    assert (out / "predictions.jsonl").read_bytes() == (whole / "predictions.jsonl").read_bytes()


def test_torn_edited_or_missing_shards_are_searched_again(tiny_run, tiny_recommender, uninterrupted, monkeypatch, caplog):
    out, report = uninterrupted
    original = (out / "predictions.jsonl").read_bytes()
    shards = sorted((out / "shards").glob("*.jsonl"))
    text = shards[1].read_text()
    shards[1].write_text(text[: len(text) - 25])  # torn in the middle of its last line
    lines = shards[2].read_text().split("\n")
    record = json.loads(lines[3])
    record["scores"][0] += 0.5  # still valid JSON, but not what was searched
    shards[2].write_text("\n".join([*lines[:3], json.dumps(record), *lines[4:]]))
    header, rest = shards[3].read_text().split("\n", 1)
    shards[3].write_text(header + "\n" + rest.split("\n", 1)[1])  # a whole line lost, header unchanged
    shards[4].unlink()
    calls = count_searches(monkeypatch)
    with caplog.at_level("WARNING", logger="alignrec"):
        again = evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=7), tiny_run, out=out,
                         recommender=tiny_recommender)
    assert calls == [7, 7, 7, 7]
    assert again["shards"]["reused"] == 2
    untrusted = [r.getMessage() for r in caplog.records if "not trusted" in r.getMessage()]
    assert len(untrusted) == 3
    assert "00001.jsonl: not trusted (the last line is incomplete)" in untrusted[0]
    assert "the header's predictions_sha256 do not match" in untrusted[1]
    assert "6 prediction lines for 7 users" in untrusted[2]
    assert (out / "predictions.jsonl").read_bytes() == original
    assert scores_of(again) == scores_of(report)


def test_other_settings_refuse_an_unfinished_evaluation(tiny_run, tiny_recommender, tmp_path, monkeypatch):
    out = tmp_path / "evaluate"
    interrupted(tiny_run, tiny_recommender, out, monkeypatch)
    with pytest.raises(InputError, match=r"unfinished evaluation with other settings is here: beam_size 10 \(shards\) "
                                         r"vs 12 \(now\); top_k 10 \(shards\) vs 8 \(now\)\. .*--restart"):
        evaluate(EvaluateConfig(beam_size=12, top_k=8, ks=[1, 5], batch_size=4, shard_users=7), tiny_run, out=out,
                 recommender=tiny_recommender)
    with pytest.raises(InputError, match=r"shard_users 7 \(shards\) vs 8 \(now\)"):
        evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=8), tiny_run, out=out, recommender=tiny_recommender)
    with pytest.raises(InputError, match=r"users 40 \(shards\) vs 30 \(now\); rows_sha256"):
        evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=7, users=30), tiny_run, out=out,
                 recommender=tiny_recommender)
    monkeypatch.setattr(tiny_recommender, "version", "another-model")
    with pytest.raises(InputError, match=r"model_version '[0-9a-f]{16}' \(shards\) vs 'another-model' \(now\)"):
        evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=7), tiny_run, out=out, recommender=tiny_recommender)
    monkeypatch.undo()
    # the refusals left the unfinished evaluation as it was: it still continues
    calls = count_searches(monkeypatch)
    report = evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=7), tiny_run, out=out,
                      recommender=tiny_recommender)
    assert len(calls) == 5 and report["shards"]["reused"] == 1


def test_restart_discards_the_shards(tiny_run, tiny_recommender, tmp_path, monkeypatch):
    out = tmp_path / "evaluate"
    interrupted(tiny_run, tiny_recommender, out, monkeypatch)
    other = EvaluateConfig(beam_size=12, batch_size=4, shard_users=10)
    calls = count_searches(monkeypatch)
    restarted = evaluate(other, tiny_run, out=out, recommender=tiny_recommender, on_mismatch="restart")
    assert calls == [10, 10, 10, 10] and restarted["beam_size"] == 12
    fresh = evaluate(other, tiny_run, out=tmp_path / "fresh", recommender=tiny_recommender)
    assert (out / "predictions.jsonl").read_bytes() == (tmp_path / "fresh" / "predictions.jsonl").read_bytes()
    assert [p.name for p in sorted((out / "shards").glob("*.jsonl"))] == [f"0000{i}.jsonl" for i in range(4)]
    assert scores_of(restarted) == scores_of(fresh)
    # resume=False searches every shard again, even for the same settings
    calls.clear()
    evaluate(other, tiny_run, out=out, recommender=tiny_recommender, resume=False)
    assert calls == [10, 10, 10, 10]
    # a finished evaluation is replaced by one with other settings, without being asked
    calls.clear()
    replaced = evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=0), tiny_run, out=out,
                        recommender=tiny_recommender)
    assert calls == [40] and replaced["shards"] == {"users_per_shard": 40, "count": 1, "reused": 0}
    assert [p.name for p in (out / "shards").glob("*.jsonl")] == ["00000.jsonl"]


def test_cli_refuses_then_restarts(tiny_run, tiny_recommender, tmp_path, monkeypatch, capsys):
    out = tmp_path / "evaluate"
    interrupted(tiny_run, tiny_recommender, out, monkeypatch)
    flags = ["evaluate", "--model", str(tiny_run), "--out", str(out), "--batch-size", "4", "--shard-users", "7",
             "--device", "cpu", "--dtype", "float32"]
    assert main([*flags, "--beam-size", "12"]) == 2
    assert "beam_size 10 (shards) vs 12 (now)" in capsys.readouterr().err
    assert main([*flags, "--beam-size", "12", "--restart"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards"] == {"users_per_shard": 7, "count": 6, "reused": 0}
    assert main([*flags, "--beam-size", "12"]) == 0  # finished: every shard is reused
    assert json.loads(capsys.readouterr().out)["shards"]["reused"] == 6
    assert main([*flags, "--shard-users", "-1"]) == 2
    assert "shard_users must be >= 0" in capsys.readouterr().err


def test_shard_sizes_do_not_change_the_lists(tiny_run, tiny_recommender, tmp_path):
    """One shard (0, or a size >= the users) gives the same bytes; one user per shard (other
    batches, so other padding) the same lists and scores up to float rounding."""
    outputs = {}
    for size in (0, 40, 1000, 1):
        out = tmp_path / f"size{size}"
        report = evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=size), tiny_run, out=out,
                          recommender=tiny_recommender)
        assert report["shards"]["count"] == (40 if size == 1 else 1)
        outputs[size] = (out / "predictions.jsonl").read_bytes()
    assert outputs[0] == outputs[40] == outputs[1000]
    whole = [json.loads(line) for line in outputs[0].decode().splitlines()]
    single = [json.loads(line) for line in outputs[1].decode().splitlines()]
    assert [r["user_id"] for r in single] == [r["user_id"] for r in whole]
    assert [r["items"] for r in single] == [r["items"] for r in whole]
    np.testing.assert_allclose([r["scores"] for r in single], [r["scores"] for r in whole], atol=1e-4)


def test_pipeline_stage_continues_an_interrupted_evaluation(tiny_run, tmp_path, monkeypatch):
    """``alignrec run`` hands its resume flag to the evaluation: a killed evaluate stage continues
    from its last shard; with other settings (a changed config) it starts over instead of refusing."""
    from alignrec.pipeline.experiment import ExperimentRunner, load_experiment
    from alignrec.pipeline.stages import MARKER, StageResult

    config = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"

    def evaluate_stage(*overrides: str) -> StageResult:
        experiment = load_experiment(config, [f"out={tmp_path / 'run'}", "evaluate.batch_size=4", *overrides])
        runner = ExperimentRunner(experiment)
        runner.result.stages["prepare"] = StageResult("prepare", "p", tiny_run / "dataset", True, 0.0)
        runner.result.stages["finetune"] = StageResult("finetune", "f", tiny_run / "finetune", True, 0.0)
        runner._evaluate()
        return runner.result.stages["evaluate"]

    count_searches(monkeypatch, fail_on=2)
    with pytest.raises(Killed):
        evaluate_stage("evaluate.shard_users=15")
    assert not (tmp_path / "run" / "evaluate" / MARKER).exists()
    monkeypatch.undo()
    calls = count_searches(monkeypatch)
    stage = evaluate_stage("evaluate.shard_users=15")
    assert calls == [15, 10] and not stage.skipped and (stage.out / MARKER).is_file()
    assert json.loads((stage.out / "metrics.json").read_text())["shards"] == {"users_per_shard": 15, "count": 3, "reused": 1}

    monkeypatch.undo()
    count_searches(monkeypatch, fail_on=2)
    with pytest.raises(Killed):  # the marker is replaced (new settings), then the search is killed
        evaluate_stage("evaluate.shard_users=20")
    monkeypatch.undo()
    calls = count_searches(monkeypatch)
    stage = evaluate_stage("evaluate.shard_users=20", "evaluate.beam_size=12")
    assert calls == [20, 20]  # the unfinished shards of beam 10 were discarded, not refused
    assert json.loads((stage.out / "metrics.json").read_text())["beam_size"] == 12
    calls.clear()  # the same settings again: the finished stage is kept
    assert evaluate_stage("evaluate.shard_users=20", "evaluate.beam_size=12").skipped
    assert calls == []
