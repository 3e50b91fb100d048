"""A complete, tiny "fine-tuned" run folder built in-process, for tests, demos and benchmarks.

It has the layout ``alignrec finetune`` writes (docs/architecture.md) — a synthetic data set,
unique random item codes, and a tiny random Llama with the code tokens in its tokenizer — so
``alignrec evaluate``, ``precache`` and ``serve`` can run end to end without a download or a
real fine-tuning run. The model is untrained: its recommendations are arbitrary but
deterministic, which is what agreement and plumbing tests need. ``logit_scale`` multiplies the
output layer so that scores differ clearly between items and users (a freshly initialised
model is almost uniform).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.tokenizer.codes import ItemCodes


def random_unique_codes(num_items: int, codebook_sizes: Sequence[int], seed: int = 0) -> np.ndarray:
    """(num_items, L) distinct code sequences drawn uniformly without replacement."""
    total = int(np.prod(codebook_sizes))
    if num_items > total:
        raise ValueError(f"{num_items} items do not fit in {total} code sequences")
    rng = np.random.default_rng(seed)
    flat = rng.choice(total, size=num_items, replace=False)
    return np.stack(np.unravel_index(flat, tuple(codebook_sizes)), axis=1).astype(np.int64)


def build_tiny_finetune_run(
    run_dir: str | os.PathLike[str],
    num_users: int = 40,
    num_items: int = 24,
    codebook_sizes: Sequence[int] = (4, 4, 4),
    seed: int = 0,
    logit_scale: float = 40.0,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    kind: str = "cyclic",
    codes: ItemCodes | None = None,
    write_dataset: bool = True,
) -> Path:
    """Write ``run_dir/{dataset,tokenizer,finetune}`` and return ``run_dir``.

    ``tokenizer/`` gets the item codes too (where the tokenizer stage writes them; cold start
    reads them from there). ``codes`` (e.g. from a trained tokenizer) replace the random ones
    and are then not written to ``tokenizer/``; ``write_dataset=False`` keeps an existing
    ``run_dir/dataset``.
    """
    import torch

    from alignrec.data.dataset import load_dataset
    from alignrec.data.synthetic import write_synthetic
    from alignrec.llm.tiny import build_tiny_backbone

    run_dir = Path(run_dir)
    if write_dataset:
        write_synthetic(run_dir, num_users=num_users, num_items=num_items, kind=kind, seed=seed)  # type: ignore[arg-type]
    dataset = load_dataset(run_dir)
    if codes is None:
        codes = ItemCodes(random_unique_codes(dataset.num_items, codebook_sizes, seed), list(codebook_sizes), list(dataset.item_ids))
        codes.save(run_dir / "tokenizer")
    finetune = run_dir / "finetune"
    codes.save(finetune)
    model, tokenizer = build_tiny_backbone(
        code_tokens=codes.vocabulary(), seed=seed, hidden_size=hidden_size, layers=layers, heads=heads
    )
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
    model.save_pretrained(finetune / "model")
    tokenizer.save_pretrained(finetune / "model")
    return run_dir


def load_tiny_recommender(run_dir: str | os.PathLike[str]) -> Any:
    """The :class:`~alignrec.llm.recommender.GenerativeRecommender` of a tiny run (CPU, float32)."""
    from alignrec.llm.recommender import load_recommender

    recommender, _ = load_recommender(run_dir, device="cpu", dtype="float32")
    return recommender
