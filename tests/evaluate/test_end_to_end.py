"""A fine-tuned tiny model on data with a known answer: `alignrec evaluate` must find it (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignrec.cli import main


@pytest.mark.slow
def test_evaluate_finds_the_next_item_of_a_trained_model(tmp_path: Path) -> None:
    """Cyclic data: item i is followed by item i + 4 (mod 24). After fine-tuning the sequential
    task, beam search must put the true next item first for nearly every test user, and the
    metrics must agree with a hand count over predictions.jsonl."""
    from alignrec.data import load_dataset
    from alignrec.data.synthetic import write_synthetic
    from alignrec.llm.tiny import build_tiny_llama, build_tiny_tokenizer
    from alignrec.tasks.build import TasksConfig, run_build
    from alignrec.tokenizer.codes import ItemCodes
    from alignrec.finetune.config import FinetuneConfig
    from alignrec.finetune.recipe import FinetuneJob

    run = tmp_path / "run"
    write_synthetic(run, num_users=60, num_items=24, groups=4, length=8, kind="cyclic", seed=0)
    items = np.arange(24)
    codes = ItemCodes(np.stack([items // 4, items % 4], axis=1), [6, 4], list(load_dataset(run).item_ids))
    codes.save(run / "tokenizer")
    run_build(TasksConfig(tasks=["sequential"], phrasings=1, negative_ratio=1.0), run)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer), hidden_size=32, layers=2, heads=2, seed=0, initializer_range=0.2)
    config = FinetuneConfig(max_steps=200, learning_rate=1e-2, lr_scheduler="constant", batch_size=16,
                            lora_dropout=0.0, logging_steps=50, save_steps=1000, warmup_ratio=0.0)
    FinetuneJob(config, run, backbone=(model, tokenizer)).run()

    assert main(["evaluate", "--model", str(run), "--beam-size", "10", "--device", "cpu"]) == 0
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert metrics["metrics"]["hr@1"] >= 0.9, metrics
    dataset = load_dataset(run)
    test = dataset.split("test")
    predictions = [json.loads(line) for line in (run / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    first_hits = [p["items"][0] == dataset.item_ids[t] for p, t in zip(predictions, test.targets, strict=True)]
    assert metrics["metrics"]["hr@1"] == pytest.approx(np.mean(first_hits))
    # the next item of the last history item, by the data's rule
    expected = [dataset.item_ids[(int(test.history(r)[-1]) + 4) % 24] for r in range(len(test))]
    assert np.mean([p["items"][0] == e for p, e in zip(predictions, expected, strict=True)]) >= 0.9
