"""Item codes: the contract between the tokenizer stage and everything after it.

An item is a sequence of L code indices, one per level (coarse to fine). Level ``l`` code
``c`` is the LLM token ``<{letter}_{c}>`` with letters a, b, c, ... per level (LC-Rec's
naming), so an item reads ``<a_12><b_7><c_201><d_3>``. On disk (``DIR/item_codes.parquet``
+ ``DIR/codes_meta.json``): item_index, item_id, codes (list of L ints); the meta file holds
the number of codes per level. Codes must be unique per item (the tokenizer resolves
collisions before saving).
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alignrec.errors import InputError
from alignrec.utils.io import atomic_path, atomic_write_json, read_json

LEVEL_LETTERS = string.ascii_lowercase
_TOKEN = re.compile(r"<([a-z])_(\d+)>")


def code_token(level: int, code: int) -> str:
    """The vocabulary token of ``code`` at ``level`` (0-based level: 0 -> ``<a_code>``)."""
    return f"<{LEVEL_LETTERS[level]}_{code}>"


@dataclass
class ItemCodes:
    """Codes of every item: ``codes[i]`` is item ``i``'s code per level."""

    codes: np.ndarray  # (I, L) int64
    codebook_sizes: list[int]  # (L,) number of codes at each level
    item_ids: list[str] | None = None

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.codes.ndim != 2:
            raise ValueError(f"codes must be (items, levels), got shape {self.codes.shape}")
        if len(self.codebook_sizes) != self.codes.shape[1]:
            raise ValueError(f"{len(self.codebook_sizes)} codebook sizes for {self.codes.shape[1]} levels")
        if len(self.codebook_sizes) > len(LEVEL_LETTERS):
            raise ValueError(f"at most {len(LEVEL_LETTERS)} levels are supported")
        if self.codes.size and (self.codes.min() < 0 or (self.codes >= np.asarray(self.codebook_sizes)).any()):
            raise ValueError("codes out of range of their codebook sizes")
        if self.item_ids is not None and len(self.item_ids) != self.codes.shape[0]:
            raise ValueError(f"{len(self.item_ids)} item ids for {self.codes.shape[0]} items")

    @property
    def num_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_levels(self) -> int:
        return int(self.codes.shape[1])

    def item_tokens(self, item: int) -> list[str]:
        return [code_token(level, int(code)) for level, code in enumerate(self.codes[item])]

    def item_string(self, item: int) -> str:
        """``<a_12><b_7>...`` — how item ``item`` is written in prompts and answers."""
        return "".join(self.item_tokens(item))

    def vocabulary(self) -> list[str]:
        """Every code token of every level (used or not), level by level."""
        return [code_token(level, code) for level, size in enumerate(self.codebook_sizes) for code in range(size)]

    def collision_rate(self) -> float:
        """1 - distinct code sequences / items (0 when every item has its own sequence)."""
        if self.num_items == 0:
            return 0.0
        distinct = len({tuple(row) for row in self.codes.tolist()})
        return 1.0 - distinct / self.num_items

    def item_of_codes(self) -> dict[tuple[int, ...], int]:
        """Map a full code sequence back to its item (requires unique codes)."""
        mapping = {tuple(row): index for index, row in enumerate(self.codes.tolist())}
        if len(mapping) != self.num_items:
            raise InputError(f"codes are not unique: {self.num_items - len(mapping)} collisions")
        return mapping

    @staticmethod
    def parse(text: str) -> list[tuple[int, int]]:
        """(level, code) pairs of the code tokens in ``text``, in order."""
        return [(LEVEL_LETTERS.index(letter), int(code)) for letter, code in _TOKEN.findall(text)]

    # -- files ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        directory = Path(directory)
        table = pa.table(
            {
                "item_index": pa.array(range(self.num_items), pa.int32()),
                "item_id": pa.array(self.item_ids if self.item_ids is not None else [str(i) for i in range(self.num_items)]),
                "codes": pa.array(self.codes.tolist(), pa.list_(pa.int32())),
            }
        )
        with atomic_path(directory / "item_codes.parquet") as tmp:
            pq.write_table(table, tmp)
        atomic_write_json(
            directory / "codes_meta.json",
            {"num_levels": self.num_levels, "codebook_sizes": list(self.codebook_sizes), "token_format": "<{letter}_{code}>"},
        )
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ItemCodes:
        directory = Path(directory)
        table_path, meta_path = directory / "item_codes.parquet", directory / "codes_meta.json"
        if not table_path.exists():
            raise InputError(f"{table_path}: not found (run `alignrec tokenize train` first)")
        meta = read_json(meta_path)
        table = pq.read_table(table_path)
        codes = np.asarray(table.column("codes").to_pylist(), dtype=np.int64).reshape(table.num_rows, -1)
        order = table.column("item_index").to_numpy()
        if not np.array_equal(order, np.arange(table.num_rows)):
            raise InputError(f"{table_path}: item_index must run 0..{table.num_rows - 1} in order")
        return cls(codes=codes, codebook_sizes=list(meta["codebook_sizes"]), item_ids=table.column("item_id").to_pylist())
