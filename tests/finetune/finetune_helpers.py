"""Tiny runs for the fine-tuning tests: a cyclic synthetic data set, hand-made codes, tasks, a tiny Llama,
and a reference greedy decoder under the item trie."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alignrec.data import load_dataset
from alignrec.data.synthetic import write_synthetic
from alignrec.tasks.build import TasksConfig, run_build
from alignrec.tokenizer.codes import ItemCodes

NUM_ITEMS = 24


def cyclic_codes() -> ItemCodes:
    """Item i -> (i // 4, i % 4). In the cyclic data set (4 rings, item i's ring is i % 4) the next
    item of i is i + 4 (mod 24): same second code, first code + 1 (mod 6)."""
    i = np.arange(NUM_ITEMS)
    return ItemCodes(np.stack([i // 4, i % 4], axis=1), [6, 4], [str(x) for x in i])


def write_cyclic_run(run: Path, users: int = 60, tasks: tuple[str, ...] = ("sequential",), phrasings: int = 1,
                     sequential_format: str = "lcrec") -> Path:
    write_synthetic(run, num_users=users, num_items=NUM_ITEMS, groups=4, length=8, kind="cyclic", seed=0)
    codes = cyclic_codes()
    codes.item_ids = list(load_dataset(run).item_ids)
    codes.save(run / "tokenizer")
    run_build(TasksConfig(tasks=list(tasks), phrasings=phrasings, negative_ratio=1.0,
                          sequential_format=sequential_format), run)  # type: ignore[arg-type]
    return run


def tiny_backbone(tied: bool = False, hidden: int = 32, seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer) without code tokens (fine-tuning adds them). Weights with std 0.2 stand in
    for a pretrained model whose frozen rows (EOS) can reach confident logits."""
    from alignrec.llm.tiny import build_tiny_llama, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer), hidden_size=hidden, layers=2, heads=2, seed=seed,
                             tie_word_embeddings=tied, initializer_range=0.2)
    return model, tokenizer


def greedy_constrained(model: Any, tokenizer: Any, codes: ItemCodes, history: list[int]) -> int:
    """Greedy decoding restricted, step by step, to code tokens that continue a real item (a trie)."""
    import torch

    from alignrec.llm import format as prompts

    trie: dict[int, dict] = {}
    for item in range(codes.num_items):
        node = trie
        for token in tokenizer.convert_tokens_to_ids(codes.item_tokens(item)):
            node = node.setdefault(int(token), {})
    item_of = {tuple(tokenizer.convert_tokens_to_ids(codes.item_tokens(i))): i for i in range(codes.num_items)}
    ids = prompts.encode_prompt(tokenizer, prompts.sequential_prompt([codes.item_string(i) for i in history]))
    x = torch.tensor([ids])
    chosen: list[int] = []
    node = trie
    with torch.no_grad():
        while node:
            logits = model(input_ids=x).logits[0, -1]  # (V,)
            allowed = list(node)
            best = allowed[int(torch.argmax(logits[allowed]))]
            chosen.append(best)
            node = node[best]
            x = torch.cat([x, torch.tensor([[best]])], dim=1)
    return item_of[tuple(chosen)]
