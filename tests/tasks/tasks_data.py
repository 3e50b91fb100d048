"""A hand-made 3-user data set with known tasks (imported by the task, LLM and fine-tuning tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alignrec.data.dataset import ItemRecord, RawDataset
from alignrec.data.prepare import PrepareConfig, write_dataset
from alignrec.tokenizer.codes import ItemCodes

# Item ids "0".."5" become item indices 0..5 (numeric ids keep their order).
ITEMS = {
    "0": ItemRecord(title="Red Guitar", description="A loud electric guitar."),
    "1": ItemRecord(title="Blue Drum", description="A small snare drum."),
    "2": ItemRecord(title="Green Piano", description="An upright piano."),
    "3": ItemRecord(title="Old Violin", description=""),
    "4": ItemRecord(title="Silver Flute", description="A student flute."),
    "5": ItemRecord(title="Black Amp", description="A tube amplifier."),
}
SEQUENCES = {  # user -> items, oldest first
    "alice": ["0", "1", "2", "3"],  # train: [0] -> 1 ; valid: [0, 1] -> 2 ; test: [0, 1, 2] -> 3
    "bob": ["1", "2", "4", "5", "0"],  # train: [1] -> 2, [1, 2] -> 4 ; valid -> 5 ; test -> 0
    "carol": ["5", "4", "3"],  # no training sample; valid: [5] -> 4 ; test: [5, 4] -> 3
}
REVIEWS = [
    ("alice", "1", "I wanted a drum for my kid"),  # item 1 is a training item of alice
    ("bob", "0", "Great guitar"),  # item 0 is bob's test item: must be skipped
    ("carol", "5", "Loud   and clear amp"),
]


def handmade_codes() -> ItemCodes:
    """Item i -> (i // 2, i % 2): <a_0><b_0>, <a_0><b_1>, <a_1><b_0>, ..."""
    i = np.arange(6)
    return ItemCodes(np.stack([i // 2, i % 2], axis=1), [3, 2], [str(x) for x in i])


def write_handmade_run(run: Path, reviews: bool = True, text: bool = True) -> Path:
    raw = RawDataset(
        sequences={u: [(item, float(t)) for t, item in enumerate(seq)] for u, seq in SEQUENCES.items()},
        items=ITEMS if text else {k: ItemRecord() for k in ITEMS},
        reviews=list(REVIEWS) if reviews else [],
    )
    write_dataset(raw, run, PrepareConfig(format="csv"))
    handmade_codes().save(run / "tokenizer")
    return run


def write_descriptions(run: Path, entries: dict) -> Path:
    path = run / "tokenizer" / "code_descriptions.json"
    path.write_text(json.dumps(entries))
    return path
