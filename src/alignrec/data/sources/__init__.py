"""Source readers: each turns files of one format into a :class:`~alignrec.data.dataset.RawDataset`.

``SOURCES`` is the registry ``alignrec prepare --format NAME`` looks up; a reader takes the
:class:`~alignrec.data.prepare.PrepareConfig` and returns the raw data plus the input files it
read (hashed into the run record).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from alignrec.data.dataset import RawDataset

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig

Reader = Callable[["PrepareConfig"], tuple[RawDataset, dict[str, str]]]


def _registry() -> dict[str, Reader]:
    from alignrec.data.sources import amazon18, lcrec, minionerec, recbole, table

    return {
        "lcrec": lcrec.read,
        "minionerec": minionerec.read,
        "amazon18": amazon18.read,
        "recbole": recbole.read,
        "csv": table.read,
    }


def get_reader(name: str) -> Reader:
    readers = _registry()
    if name not in readers:
        raise ValueError(f"unknown source format {name!r}; expected one of {sorted(readers)}")
    return readers[name]
