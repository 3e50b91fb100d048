"""Fixtures of the tokenizer tests (built in-process, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_embedder():
    """A TextEmbedder over a tiny random Llama whose vocabulary covers the synthetic texts."""
    from alignrec.data.synthetic import GROUP_WORDS
    from alignrec.llm.tiny import build_tiny_backbone
    from alignrec.tokenizer.text import TextEmbedder

    words = [w for group in GROUP_WORDS for w in group] + [w.title() for group in GROUP_WORDS for w in group]
    words += ["model", "A", "accessory", "number", "Brand0", "Brand1", "Brand2", "Music"] + [str(i) for i in range(100)]
    model, tokenizer = build_tiny_backbone(words=words, seed=0, hidden_size=16)
    return TextEmbedder.from_model(model, tokenizer, spec="tiny")


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A prepared synthetic data set (32 items in 4 groups, with text) plus a behaviour
    embedding file whose rows cluster by group: ``(run_dir, embeddings_file, groups)``."""
    from safetensors.numpy import save_file

    from alignrec.data import load_dataset
    from alignrec.data.synthetic import write_synthetic

    tmp_path = tmp_path_factory.mktemp("cluster_run")
    run = tmp_path / "run"
    write_synthetic(run, num_users=40, num_items=32, groups=4, length=6, kind="clusters", seed=0)
    dataset = load_dataset(run)
    groups = np.array([int(item_id) % 4 for item_id in dataset.item_ids])
    rng = np.random.default_rng(1)
    centers = 5.0 * np.eye(8)[:4]
    vectors = (centers[groups] + 0.3 * rng.standard_normal((len(groups), 8))).astype(np.float32)
    path = tmp_path / "emb" / "item_embeddings.safetensors"
    path.parent.mkdir()
    save_file({"item_embeddings": vectors}, str(path))
    return run, path, groups
