"""Source readers: each turns files of one format into a :class:`~alignrec.data.dataset.RawDataset`.

:data:`SOURCES` is the registry ``alignrec prepare --format NAME`` looks up. A reader takes the
:class:`~alignrec.data.prepare.PrepareConfig` and returns the raw data plus the input files it
read (hashed into the run record). Each entry also declares which input options it reads, so
that a stray option (``--format lcrec --dir X``) is an error instead of being ignored.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alignrec.data.dataset import RawDataset

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig

Reader = Callable[["PrepareConfig"], tuple[RawDataset, dict[str, str]]]

INPUT_OPTIONS = ("inter", "items", "dir", "category")


@dataclass(frozen=True)
class Source:
    """One source format: where its reader lives, which input options it uses, how to call it."""

    module: str  # alignrec.data.sources.<module> with a ``read(config)`` function
    options: frozenset[str]  # subset of INPUT_OPTIONS that the reader looks at
    usage: str  # the input flags, for error messages and --help

    @property
    def read(self) -> Reader:
        return importlib.import_module(f"alignrec.data.sources.{self.module}").read  # type: ignore[no-any-return]


SOURCES: dict[str, Source] = {
    "lcrec": Source("lcrec", frozenset({"inter", "items"}), "--inter NAME.inter.json [--items NAME.item.json]"),
    "minionerec": Source("minionerec", frozenset({"dir"}), "--dir FOLDER (item.json, valid.csv, test.csv)"),
    "amazon18": Source(
        "amazon18",
        frozenset({"inter", "items", "dir", "category"}),
        "--inter REVIEWS.json[.gz] [--items META.json[.gz]]  or  --dir FOLDER --category NAME",
    ),
    "recbole": Source("recbole", frozenset({"inter", "items", "dir"}), "--inter NAME.inter [--items NAME.item]  or  --dir FOLDER"),
    "csv": Source("table", frozenset({"inter", "items"}), "--inter TABLE.{csv,tsv,parquet} [--items TABLE.{csv,tsv,parquet}]"),
}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown source format {name!r}; expected one of {sorted(SOURCES)}")
    return SOURCES[name]


def get_reader(name: str) -> Reader:
    """The reader function of source format ``name``."""
    return get_source(name).read
