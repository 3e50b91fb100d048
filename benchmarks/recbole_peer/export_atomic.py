"""Write a prepared alignrec data set as RecBole atomic files with the SAME leave-one-out split.

Each user's sequence is written in our order with ``timestamp`` = its position (0, 1, ...),
so RecBole's ``LS: valid_and_test`` split (ordered by time, grouped by user) holds out exactly
our validation and test items, and its 20-item histories are exactly ours. Ties in the
original MovieLens timestamps are thereby resolved the way ``alignrec prepare`` resolved them.
Runs in the alignrec venv (RecBole's venv does not have alignrec).
"""

from __future__ import annotations

import os
from pathlib import Path

from alignrec.data import load_dataset
from alignrec.utils.io import atomic_write_text

NAME = "alignrec-loo"


def export_atomic(run_dir: str | os.PathLike[str], out_root: str | os.PathLike[str], name: str = NAME) -> Path:
    """Write ``out_root/<name>/<name>.inter`` and return ``out_root`` (RecBole's data_path)."""
    dataset = load_dataset(run_dir)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, sequence in enumerate(dataset.sequences):
        lines += [f"u{user}\ti{item}\t{position}" for position, item in enumerate(sequence.tolist())]
    atomic_write_text(Path(out_root) / name / f"{name}.inter", "\n".join(lines) + "\n")
    return Path(out_root)
