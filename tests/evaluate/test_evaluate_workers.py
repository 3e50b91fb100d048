"""Several processes on one evaluation: each claims a shard before searching it, a claim of a
live worker is left alone and one of an exited worker is taken over, ``--join`` helps an
evaluation in progress, and ``workers`` > 1 gives the lists one process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from evaluation_runs import count_searches, interrupted, scores_of, shard_headers

from alignrec.cli import main
from alignrec.errors import InputError
from alignrec.evaluate import recipe as evaluate_module
from alignrec.evaluate.recipe import EvaluateConfig, claim_path, evaluate
from alignrec.llm.recommender import GenerativeRecommender
from alignrec.utils.io import process_owner

CONFIG = {"beam_size": 10, "batch_size": 4, "shard_users": 7}  # the 40 test users in shards 7, 7, 7, 7, 7, 5
OWNER = "import json, time; from alignrec.utils.io import process_owner; print(json.dumps(process_owner()), flush=True)"


def other_process(seconds: float) -> tuple[subprocess.Popen, dict]:
    """Another Python process and its owner record; it runs for ``seconds`` (0: it has exited on return)."""
    child = subprocess.Popen([sys.executable, "-c", f"{OWNER}; time.sleep({seconds})"], stdout=subprocess.PIPE, text=True)
    owner = json.loads(child.stdout.readline())
    if not seconds:
        child.wait()
    return child, owner


def claim(out: Path, index: int, owner: dict, age_s: float = 0.0) -> Path:
    path = claim_path(out / "shards", index)
    path.write_text(json.dumps({"owner": owner, "shard": index}))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_live_claims_are_left_and_abandoned_ones_taken_over(tiny_run, tiny_recommender, tmp_path, monkeypatch,
                                                            uninterrupted):
    whole, _ = uninterrupted
    out = tmp_path / "evaluate"
    interrupted(tiny_run, tiny_recommender, out, monkeypatch)  # shard 0 finished, killed in shard 1
    assert not claim_path(out / "shards", 1).exists()  # the killed search let go of its claim
    live, live_owner = other_process(120)
    try:
        _, exited_owner = other_process(0)
        claim(out, 2, live_owner)
        claim(out, 3, exited_owner)
        claim(out, 4, {**live_owner, "host": "another-host"}, age_s=60)  # touched a minute ago: still searching
        claim(out, 5, {**live_owner, "host": "another-host"}, age_s=evaluate_module.STALE_AFTER_S + 60)
        calls = count_searches(monkeypatch)
        joined = evaluate(EvaluateConfig(**CONFIG), tiny_run, out=out, recommender=tiny_recommender, join=True)
        assert calls == [7, 7, 5]  # shards 1, 3 and 5; 2 and 4 are another worker's
        assert joined == {"joined": str(out), "shards_searched": 3, "users_searched": 19, "complete": False}
        assert [h["shard"] for h in shard_headers(out)] == [0, 1, 3, 5]
        assert all(h["searched_by"] == process_owner() for h in shard_headers(out)[1:])
        assert sorted(p.name for p in (out / "shards").glob("*.claim")) == ["00002.claim", "00004.claim"]
        assert not (out / "predictions.jsonl").exists()  # a joined worker writes shards only
    finally:
        live.kill()
        live.wait()
    claim(out, 4, {**live_owner, "host": "another-host"}, age_s=evaluate_module.STALE_AFTER_S + 60)  # gone quiet
    calls.clear()
    report = evaluate(EvaluateConfig(**CONFIG), tiny_run, out=out, recommender=tiny_recommender)
    assert calls == [7, 7]  # the exited worker's shard 2 and the silent host's shard 4
    assert report["shards"]["reused"] == 4 and report["workers"] == 1
    assert (out / "predictions.jsonl").read_bytes() == (whole / "predictions.jsonl").read_bytes()
    assert not list((out / "shards").glob("*.claim"))


def test_join_needs_the_same_evaluation_in_progress(tiny_run, tiny_recommender, tmp_path, monkeypatch, capsys):
    out = tmp_path / "evaluate"
    with pytest.raises(InputError, match=r"no evaluation to join \(manifest.json is missing\)"):
        evaluate(EvaluateConfig(**CONFIG), tiny_run, out=out, recommender=tiny_recommender, join=True)
    interrupted(tiny_run, tiny_recommender, out, monkeypatch)
    with pytest.raises(InputError, match=r"other settings or another model: beam_size 10 \(shards\) vs 12 \(now\)"):
        evaluate(EvaluateConfig(**{**CONFIG, "beam_size": 12}), tiny_run, out=out, recommender=tiny_recommender,
                 join=True)
    flags = ["evaluate", "--model", str(tiny_run), "--out", str(out), "--batch-size", "4", "--shard-users", "7",
             "--beam-size", "10", "--device", "cpu", "--dtype", "float32"]
    assert main([*flags, "--join", "--restart"]) == 2
    assert "cannot --restart it or start --workers" in capsys.readouterr().err
    assert main([*flags, "--join"]) == 0  # the CLI loads its own model, as a second shell's process would
    assert json.loads(capsys.readouterr().out) == {"joined": str(out), "shards_searched": 5, "users_searched": 33,
                                                   "complete": True}
    calls = count_searches(monkeypatch)
    report = evaluate(EvaluateConfig(**CONFIG), tiny_run, out=out, recommender=tiny_recommender)
    assert calls == [] and report["shards"]["reused"] == 6
    assert evaluate(EvaluateConfig(**CONFIG), tiny_run, out=out, recommender=tiny_recommender, join=True) == {
        "joined": str(out), "shards_searched": 0, "users_searched": 0, "complete": True}


def test_helper_workers_give_the_lists_of_one_process(tiny_run, tmp_path, monkeypatch, uninterrupted):
    """workers=2: a spawned helper loads the model and searches shards beside this process. This
    process's first search waits until the helper has written a shard, so both take part."""
    whole, whole_report = uninterrupted
    out = tmp_path / "evaluate"
    me = process_owner()
    original = GenerativeRecommender.recommend

    def recommend(self, histories, *args, **kwargs):
        deadline = time.monotonic() + 120
        while not any(h["searched_by"] != me for h in shard_headers(out)):
            assert time.monotonic() < deadline, "the helper process wrote no shard in 2 minutes"
            time.sleep(0.2)
        return original(self, histories, *args, **kwargs)

    monkeypatch.setattr(GenerativeRecommender, "recommend", recommend)
    report = evaluate(EvaluateConfig(**CONFIG, workers=2, device="cpu", dtype="float32"), tiny_run, out=out)
    searched_by = [h["searched_by"] for h in shard_headers(out)]
    assert len(searched_by) == 6 and me in searched_by and len({json.dumps(w) for w in searched_by}) == 2
    assert report["workers"] == 2 and report["shards"] == {"users_per_shard": 7, "count": 6, "reused": 0}
    assert scores_of(report) == scores_of(whole_report)
    lists = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (whole / "predictions.jsonl").read_text().splitlines()]
    assert [r["user_id"] for r in lists] == [r["user_id"] for r in expected]
    assert [r["items"] for r in lists] == [r["items"] for r in expected]
    # the helper ran on 1 torch thread, the fixture on 2: the sums may differ in the last bits
    np.testing.assert_allclose([r["scores"] for r in lists], [r["scores"] for r in expected], atol=1e-5)
    assert not list((out / "shards").glob("*.claim"))
