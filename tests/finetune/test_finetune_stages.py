"""Contract with the tokenizer stage: its real outputs (codes, code_descriptions.json,
codebooks.safetensors) feed TS-Align tasks, SA-Init and the MLP init."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignrec.tasks.build import TasksConfig, read_examples, run_build
from alignrec.finetune.config import FinetuneConfig
from alignrec.finetune.recipe import FinetuneJob


@pytest.fixture
def tokenized_run(tmp_path: Path) -> Path:
    """A synthetic run (4 item groups with text) tokenised by ``alignrec.tokenizer`` (2 x 4 codes)."""
    from safetensors.numpy import save_file

    from alignrec.data import load_dataset
    from alignrec.data.synthetic import write_synthetic
    from alignrec.tokenizer.config import TokenizerConfig
    from alignrec.tokenizer.train import train_tokenizer

    run = tmp_path / "run"
    write_synthetic(run, num_users=40, num_items=16, groups=4, length=6, kind="clusters", seed=0)
    groups = np.array([int(i) % 4 for i in load_dataset(run).item_ids])
    vectors = (5.0 * np.eye(8)[groups] + 0.3 * np.random.default_rng(1).standard_normal((16, 8))).astype(np.float32)
    save_file({"item_embeddings": vectors}, str(tmp_path / "embeddings.safetensors"))
    config = TokenizerConfig(levels=2, codebook_size=4, rounds=2, steps_per_round=3, kmeans_iterations=10,
                             llm="none", coldstart_holdout=0.0)
    train_tokenizer(config, run, embeddings=str(tmp_path / "embeddings.safetensors"))
    return run


def test_tokenizer_outputs_feed_ts_align_sa_init_and_mlp(tokenized_run: Path) -> None:
    run = tokenized_run
    descriptions = json.loads((run / "tokenizer" / "code_descriptions.json").read_text())
    run_build(TasksConfig(tasks=["sequential", "ts_align"], phrasings=1), run)
    ts_align = [r for r in read_examples(run / "tasks" / "train.jsonl") if r["task"] == "ts_align"]
    described = [t for t, e in descriptions.items() if e["description"].strip()]
    assert described and len(ts_align) >= len(described)  # one token -> description example per described token
    assert {r["answer"] for r in ts_align if r["kind"] == "description_to_token"} <= set(described)

    words = sorted({k for e in descriptions.values() for k in e["keywords"]})
    for init, expected in (("sa_init", sum(1 for e in descriptions.values() if e["keywords"])), ("mlp", 8)):
        from alignrec.llm.tiny import build_tiny_llama, build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer(words)
        model = build_tiny_llama(len(tokenizer), initializer_range=0.2)
        config = FinetuneConfig(new_token_init=init, max_steps=1, batch_size=4, logging_steps=1, mlp_steps=5,
                                save_adapter=False)
        job = FinetuneJob(config, run, run / f"ft-{init}", backbone=(model, tokenizer))
        job.prepare()
        report = job.metrics["new_token_init"]
        assert report["method"] == init and report["initialised"] == expected > 0
        if init == "mlp":
            assert report["fitted_on_items"] == 16  # the synthetic items have text
        job.train()
        assert np.isfinite(job.metrics["train_loss"])
