"""Collision statistics and making code sequences unique.

Raw collision rate = 1 - distinct code sequences / items, measured on the codes the model's
assignment rule gives (before any de-duplication). Two resolution strategies (a registry):

``last_level`` (default): in each group of items that share all L codes, the item closest to
its last-level code keeps the sequence; every other one gets the cheapest *free* code path by
a depth-first search that follows the assignment rule's cost order — first the other codes of
the last level under the same prefix, then (only if that prefix is full) the next-best codes
of the level above, and so on. The vocabulary does not change, and a moved item keeps as much
of its prefix as possible (usually all but the last code).

``extra_level``: TIGER's fix — append one level whose code numbers the members of each
collision group (0, 1, 2, ...); its size is the largest group. Needed when the last level
alone cannot separate a group (e.g. L = 1 with more items than codes); ``last_level`` falls
back to it automatically in that case and says so.

The same search assigns new items (:mod:`alignrec.tokenizer.coldstart`), so a new item never
takes a sequence that an existing item (or an earlier new item) holds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from alignrec.errors import AlignrecError
from alignrec.tokenizer.model import ResidualQuantizer


class CollisionError(AlignrecError):
    """No free code sequence is left for an item (the code space around it is full)."""


def collision_rate(codes: np.ndarray) -> float:
    """1 - distinct rows / rows (0.0 for an empty table)."""
    if len(codes) == 0:
        return 0.0
    return 1.0 - len(np.unique(np.asarray(codes), axis=0)) / len(codes)


def prefix_collision_rates(codes: np.ndarray) -> list[float]:
    """Collision rate of the first l codes, for l = 1..L."""
    return [collision_rate(codes[:, : depth + 1]) for depth in range(codes.shape[1])]


def colliding_rows(codes: np.ndarray) -> np.ndarray:
    """Rows whose full code sequence is shared with at least one other row (sorted)."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return np.nonzero(counts[inverse.reshape(-1)] > 1)[0]


@dataclass
class CodeIndex:
    """Which code sequences are taken, and how many items sit under every prefix."""

    sizes: list[int]  # codebook size per level (including an extra level, if any)
    taken: set[tuple[int, ...]] = field(default_factory=set)
    counts: Counter[tuple[int, ...]] = field(default_factory=Counter)

    @classmethod
    def from_codes(cls, codes: np.ndarray, sizes: list[int]) -> CodeIndex:
        index = cls(list(sizes))
        for row in np.asarray(codes).tolist():
            index.add(tuple(row))
        return index

    def add(self, code: tuple[int, ...]) -> None:
        self.taken.add(code)
        for depth in range(len(code)):  # every proper prefix, the empty one included
            self.counts[code[:depth]] += 1

    def room_below(self, prefix: tuple[int, ...]) -> int:
        """How many more full sequences fit under ``prefix``."""
        return math.prod(self.sizes[len(prefix) :]) - self.counts[prefix]


class PathCost(Protocol):
    """How a code path is scored level by level (the search follows these costs)."""

    num_levels: int

    def start(self) -> Any: ...

    def costs(self, level: int, state: Any, prefix: tuple[int, ...]) -> np.ndarray: ...

    def advance(self, level: int, state: Any, code: int) -> Any: ...


@dataclass
class ResidualPath:
    """The quantizer's own rule: residual distance plus the prefix group's prices."""

    quantizer: ResidualQuantizer
    latent: np.ndarray  # (e,)

    @property
    def num_levels(self) -> int:
        return self.quantizer.num_levels

    def start(self) -> np.ndarray:
        return np.asarray(self.latent, dtype=np.float64)

    def costs(self, level: int, state: np.ndarray, prefix: tuple[int, ...]) -> np.ndarray:
        return self.quantizer.level_cost(level, state[None, :], np.asarray([prefix], dtype=np.int64).reshape(1, level))[0]

    def advance(self, level: int, state: np.ndarray, code: int) -> np.ndarray:
        return state - self.quantizer.codebooks[level][code].astype(np.float64)


def find_free_path(path: PathCost, index: CodeIndex, *, extra_size: int = 0, branch: int = 8) -> tuple[int, ...]:
    """The cheapest free code sequence under ``path``'s costs.

    Depth-first: at inner levels up to ``branch`` candidate codes with room below them, at
    the last level every code. With ``extra_size`` > 0 the sequence ends with an extra-level
    number: the smallest one not yet used under the real codes.
    """
    levels = path.num_levels

    def search(level: int, state: Any, prefix: tuple[int, ...]) -> tuple[int, ...] | None:
        order = np.argsort(path.costs(level, state, prefix), kind="stable")
        if level == levels - 1:
            for code in order.tolist():
                candidate = (*prefix, code)
                if extra_size:
                    if index.counts[candidate] < extra_size:
                        used = {t[-1] for t in index.taken if t[:-1] == candidate} if index.counts[candidate] else set()
                        return (*candidate, next(e for e in range(extra_size) if e not in used))
                elif candidate not in index.taken:
                    return candidate
            return None
        tried = 0
        for code in order.tolist():
            candidate = (*prefix, code)
            if index.room_below(candidate) <= 0:
                continue
            found = search(level + 1, path.advance(level, state, code), candidate)
            if found is not None:
                return found
            tried += 1
            if tried >= branch:
                break
        return None

    found = search(0, path.start(), ())
    if found is None:
        raise CollisionError("no free code sequence near this item: the code space is full (use more levels or codes)")
    return found


def find_free_code(
    quantizer: ResidualQuantizer, latent: np.ndarray, index: CodeIndex, *, extra_size: int = 0, branch: int = 8
) -> tuple[int, ...]:
    """:func:`find_free_path` under the quantizer's assignment rule for one latent vector (e,)."""
    return find_free_path(ResidualPath(quantizer, latent), index, extra_size=extra_size, branch=branch)


@dataclass
class Resolution:
    """Unique codes and what it took to get them."""

    codes: np.ndarray  # (N, L') int64
    codebook_sizes: list[int]
    strategy: str
    moved_items: int
    notes: list[str] = field(default_factory=list)


Resolver = Callable[[np.ndarray, np.ndarray, ResidualQuantizer], Resolution]
RESOLVERS: dict[str, Resolver] = {}


def register_resolver(name: str) -> Callable[[Resolver], Resolver]:
    def wrap(function: Resolver) -> Resolver:
        RESOLVERS[name] = function
        return function

    return wrap


def resolve_collisions(strategy: str, codes: np.ndarray, latent: np.ndarray, quantizer: ResidualQuantizer) -> Resolution:
    """Make ``codes`` (N, L) unique with the named strategy (see the module docstring)."""
    if strategy not in RESOLVERS:
        raise ValueError(f"unknown collision resolution {strategy!r}; expected one of {sorted(RESOLVERS)}")
    return RESOLVERS[strategy](np.asarray(codes, dtype=np.int64), np.asarray(latent, dtype=np.float64), quantizer)


def _groups_with_keeper(codes: np.ndarray, latent: np.ndarray, quantizer: ResidualQuantizer) -> tuple[np.ndarray, np.ndarray]:
    """(displaced rows, kept rows) of the collision groups: the member with the smallest
    last-level cost keeps the sequence (ties: lowest row)."""
    rows = colliding_rows(codes)
    if len(rows) == 0:
        return rows, rows
    last = codes.shape[1] - 1
    residual = quantizer.residuals(latent[rows], codes[rows])[last]
    own = ((residual - quantizer.codebooks[last][codes[rows, last]].astype(np.float64)) ** 2).sum(1)
    _, group = np.unique(codes[rows], axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.lexsort((rows, own, group))  # by group, then cost, then row
    first = np.concatenate([[True], group[order][1:] != group[order][:-1]])
    kept = rows[order][first]
    displaced = np.sort(rows[order][~first])
    return displaced, kept


@register_resolver("last_level")
def _resolve_last_level(codes: np.ndarray, latent: np.ndarray, quantizer: ResidualQuantizer) -> Resolution:
    displaced, _ = _groups_with_keeper(codes, latent, quantizer)
    if len(displaced) == 0:
        return Resolution(codes.copy(), quantizer.codebook_sizes, "last_level", 0)
    largest = int(np.unique(codes, axis=0, return_counts=True)[1].max())
    capacity = math.prod(quantizer.codebook_sizes)
    if codes.shape[0] > capacity:
        resolution = _resolve_extra_level(codes, latent, quantizer)
        resolution.notes.append(
            f"last_level impossible: {codes.shape[0]} items but only {capacity} code sequences; used extra_level"
        )
        return resolution
    keep = np.ones(len(codes), dtype=bool)
    keep[displaced] = False
    index = CodeIndex.from_codes(codes[keep], quantizer.codebook_sizes)
    out = codes.copy()
    for row in displaced.tolist():
        code = find_free_code(quantizer, latent[row], index)
        out[row] = code
        index.add(code)
    return Resolution(out, quantizer.codebook_sizes, "last_level", int(len(displaced)), [f"largest collision group: {largest}"])


@register_resolver("extra_level")
def _resolve_extra_level(codes: np.ndarray, latent: np.ndarray, quantizer: ResidualQuantizer) -> Resolution:
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    extra = np.zeros(len(codes), dtype=np.int64)
    seen: Counter[int] = Counter()
    for row, group in enumerate(inverse.tolist()):  # numbering in item order
        extra[row] = seen[group]
        seen[group] += 1
    size = max(int(counts.max()) if len(counts) else 1, 1)
    out = np.concatenate([codes, extra[:, None]], axis=1)
    moved = int((extra > 0).sum())
    return Resolution(out, [*quantizer.codebook_sizes, size], "extra_level", moved, [f"extra level of {size} codes"])


def describe_resolution(resolution: Resolution) -> dict[str, Any]:
    return {
        "strategy": resolution.strategy,
        "moved_items": resolution.moved_items,
        "levels": int(resolution.codes.shape[1]),
        "codebook_sizes": resolution.codebook_sizes,
        "notes": resolution.notes,
    }
