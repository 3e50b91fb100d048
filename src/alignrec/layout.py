"""The run folder: which command writes which sub-folder, in one place.

Every command ``alignrec X`` has its code in the package ``alignrec.X`` (``prepare`` and
``tokenize`` are the verbs of the packages ``data`` and ``tokenizer``; ``precache`` and ``serve``
share ``serve``) and writes ``RUN/<folder>/``::

    alignrec prepare        alignrec.data        RUN/dataset/
    alignrec collab train   alignrec.collab      RUN/collab/<model>/
    alignrec tokenize       alignrec.tokenizer   RUN/tokenizer/
    alignrec tasks build    alignrec.tasks       RUN/tasks/
    alignrec finetune       alignrec.finetune    RUN/finetune/
    alignrec prefer         alignrec.prefer      RUN/prefer/  (preference alignment after fine-tuning)
    alignrec evaluate       alignrec.evaluate    RUN/evaluate/
    alignrec precache       alignrec.serve       RUN/cache/   (the store alignrec serve reads)
    alignrec run            alignrec.pipeline    RUN/report/  (and every folder above)

Run folders written before a folder was renamed keep working: readers look for the old name
(:data:`FORMER_NAMES`) when the new one is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDERS = {
    "prepare": "dataset",
    "collab": "collab",
    "tokenize": "tokenizer",
    "tasks": "tasks",
    "finetune": "finetune",
    "prefer": "prefer",
    "evaluate": "evaluate",
    "precache": "cache",
    "report": "report",
}

# Earlier names of a command's folder, newest first (``alignrec evaluate`` wrote RUN/evaluate/).
FORMER_NAMES = {"evaluate": ("eval",)}


def stage_dir(run_dir: str | os.PathLike[str], command: str) -> Path:
    """Where ``command`` writes inside ``run_dir``."""
    return Path(run_dir) / FOLDERS[command]


def existing_stage_dir(run_dir: str | os.PathLike[str], command: str) -> Path:
    """Where ``command``'s output is read from: its folder, or a former name of it that exists."""
    current = stage_dir(run_dir, command)
    if current.exists():
        return current
    for name in FORMER_NAMES.get(command, ()):
        if (Path(run_dir) / name).exists():
            return Path(run_dir) / name
    return current
