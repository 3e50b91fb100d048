"""Small synthetic data sets with known structure, for tests, demos and the end-to-end check.

``cyclic``: items form ``groups`` rings; a user walks one ring, so the next item is a
deterministic function of the last one (a sequential model should reach HR@1 close to 1).
``clusters``: users draw items from one cluster each, in random order (graph models should
rank same-cluster items first). Items get titles and descriptions built from per-group
keywords, so text-based parts (LLM alignment, cluster keywords) have signal too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from alignrec.data.dataset import ItemRecord, RawDataset

GROUP_WORDS = (
    ("guitar", "string", "acoustic"), ("drum", "cymbal", "snare"), ("piano", "keyboard", "pedal"),
    ("violin", "bow", "rosin"), ("flute", "wind", "reed"), ("amplifier", "speaker", "cable"),
    ("microphone", "stand", "vocal"), ("trumpet", "brass", "valve"), ("ukulele", "tuner", "capo"),
    ("harmonica", "blues", "key"), ("synthesizer", "patch", "midi"), ("cello", "case", "endpin"),
)


def synthetic_raw(
    num_users: int = 60,
    num_items: int = 24,
    groups: int = 4,
    length: int = 8,
    kind: Literal["cyclic", "clusters"] = "cyclic",
    with_text: bool = True,
    seed: int = 0,
) -> RawDataset:
    """Build a :class:`RawDataset`; item ``i`` belongs to group ``i % groups``."""
    if num_items < groups * 2:
        raise ValueError("need at least two items per group")
    rng = np.random.default_rng(seed)
    members = [list(range(g, num_items, groups)) for g in range(groups)]
    sequences: dict[str, list[tuple[str, float | None]]] = {}
    for user in range(num_users):
        group = members[user % groups]
        if kind == "cyclic":
            start = int(rng.integers(len(group)))
            items = [group[(start + step) % len(group)] for step in range(length)]
        else:
            items = rng.choice(group, size=length, replace=len(group) < length).tolist()
        sequences[f"u{user}"] = [(str(item), float(step)) for step, item in enumerate(items)]
    items_table = None
    if with_text:
        items_table = {}
        for item in range(num_items):
            words = GROUP_WORDS[(item % groups) % len(GROUP_WORDS)]
            items_table[str(item)] = ItemRecord(
                title=f"{words[0].title()} {words[1]} model {item}",
                description=f"A {words[2]} {words[0]} accessory, number {item}.",
                brand=f"Brand{item % 3}",
                categories=["Music", words[0].title()],
            )
    reviews = [(user, item, f"I wanted a good {item_words(int(item), groups)} and this works")
               for user, events in sequences.items() for item, _ in events[:2]] if with_text else []
    return RawDataset(sequences=sequences, items=items_table, reviews=reviews, source={"format": "synthetic", "kind": kind})


def item_words(item: int, groups: int) -> str:
    return GROUP_WORDS[(item % groups) % len(GROUP_WORDS)][0]


def write_synthetic(run_dir: str | Path, max_history: int = 20, **kwargs: object) -> Path:
    """Write a synthetic data set to ``run_dir/dataset`` (see :func:`synthetic_raw` for options)."""
    from alignrec.data.prepare import PrepareConfig, write_dataset

    raw = synthetic_raw(**kwargs)  # type: ignore[arg-type]
    config = PrepareConfig(format="csv", max_history=max_history)
    return write_dataset(raw, run_dir, config)
