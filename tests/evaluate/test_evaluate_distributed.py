"""``alignrec evaluate`` under torchrun: two CPU processes (gloo) write the files one process writes,
and a job whose rank was killed is resumed by searching only the shards that have no file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from evaluation_runs import scores_of, shard_headers

SETTINGS = ["--beam-size", "10", "--batch-size", "4", "--shard-users", "7", "--device", "cpu", "--dtype", "float32"]

# `alignrec evaluate` whose rank $KILL_RANK dies (os._exit, as a kill would) when it starts its
# second shard, after its first shard's file is written.
KILLED = textwrap.dedent(
    """
    import os, sys
    from alignrec.llm.recommender import GenerativeRecommender

    if os.environ["RANK"] == os.environ["KILL_RANK"]:
        original, calls = GenerativeRecommender.recommend, []

        def recommend(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                os._exit(3)
            return original(self, *args, **kwargs)

        GenerativeRecommender.recommend = recommend
    from alignrec.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def evaluate_command(run: Path, out: Path) -> list[str]:
    return ["-m", "alignrec.cli", "evaluate", "--model", str(run), "--out", str(out), *SETTINGS]


@pytest.fixture(scope="module")
def one_process(tiny_run, tmp_path_factory) -> Path:
    """The evaluation by one process without a launcher (one torch thread, as each rank has)."""
    import os
    import subprocess
    import sys

    import alignrec

    out = tmp_path_factory.mktemp("one-process") / "evaluate"
    source = str(Path(alignrec.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ALIGNREC_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, *evaluate_command(tiny_run, out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout)["world_size"] == 1
    return out


def metrics(out: Path) -> dict:
    return scores_of(json.loads((out / "metrics.json").read_text()))


@pytest.mark.distributed
def test_two_processes_write_the_files_of_one(tiny_run, one_process, torchrun, tmp_path):
    out = tmp_path / "evaluate"
    done = torchrun(2, *evaluate_command(tiny_run, out))
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)  # rank 0 alone prints the summary
    assert summary["world_size"] == 2 and summary["shards"] == {"users_per_shard": 7, "count": 6, "reused": 0}
    assert (out / "predictions.jsonl").read_bytes() == (one_process / "predictions.jsonl").read_bytes()
    assert metrics(out) == metrics(one_process)
    # shard i was searched by rank i % 2
    assert [h["searched_by"]["rank"] for h in shard_headers(out)] == [0, 1, 0, 1, 0, 1]
    assert json.loads((out / "shards" / "manifest.json").read_text())["complete"] is True


@pytest.mark.distributed
def test_a_killed_rank_is_resumed_from_the_finished_shards(tiny_run, one_process, torchrun, tmp_path):
    out = tmp_path / "evaluate"
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    killed = torchrun(2, str(script), *evaluate_command(tiny_run, out)[2:], env={"KILL_RANK": "1"})
    assert killed.returncode != 0
    assert not (out / "predictions.jsonl").exists()
    finished = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in (out / "shards").glob("*.jsonl")}
    assert "00001.jsonl" in finished  # rank 1's first shard
    assert "00003.jsonl" not in finished and "00005.jsonl" not in finished  # it died in its second

    done = torchrun(2, *evaluate_command(tiny_run, out))
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout)["shards"]["reused"] == len(finished)
    for name, (content, modified) in finished.items():  # kept as they were, not searched again
        path = out / "shards" / name
        assert path.read_bytes() == content and path.stat().st_mtime_ns == modified
    assert len(list((out / "shards").glob("*.jsonl"))) == 6
    assert (out / "predictions.jsonl").read_bytes() == (one_process / "predictions.jsonl").read_bytes()
    assert metrics(out) == metrics(one_process)
