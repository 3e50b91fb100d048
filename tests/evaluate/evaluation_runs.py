"""Helpers of the evaluation tests: count (or kill) searches, compare reports, read shard headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrec.evaluate.recipe import EvaluateConfig, evaluate
from alignrec.llm.recommender import GenerativeRecommender

TIMING = ("elapsed_s", "users_per_s", "wall_s", "world_size", "shards", "predictions")  # how a run went, not what it found


class Killed(RuntimeError):
    """Stands for a kill in the middle of a shard's search."""


def count_searches(monkeypatch: pytest.MonkeyPatch, fail_on: int | None = None) -> list[int]:
    """Count ``recommend`` calls (one per searched shard; the list holds each call's user count);
    with ``fail_on`` = n the n-th call (1-based) raises :class:`Killed` instead."""
    calls: list[int] = []
    original = GenerativeRecommender.recommend

    def recommend(self, histories, *args, **kwargs):
        calls.append(len(histories))
        if fail_on is not None and len(calls) == fail_on:
            raise Killed("killed during shard %d" % len(calls))
        return original(self, histories, *args, **kwargs)

    monkeypatch.setattr(GenerativeRecommender, "recommend", recommend)
    return calls


def scores_of(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in TIMING}


def shard_headers(out: Path) -> list[dict]:
    return [json.loads(path.read_text().split("\n", 1)[0]) for path in sorted((out / "shards").glob("*.jsonl"))]


def interrupted(tiny_run, tiny_recommender, out: Path, monkeypatch, **settings) -> None:
    """Leave an unfinished evaluation (first shard done, killed in the second) in ``out``."""
    calls = count_searches(monkeypatch, fail_on=2)
    with pytest.raises(Killed):
        evaluate(EvaluateConfig(beam_size=10, batch_size=4, shard_users=7, **settings), tiny_run, out=out,
                 recommender=tiny_recommender)
    assert len(calls) == 2
    monkeypatch.undo()
