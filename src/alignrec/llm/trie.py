"""A prefix trie over the valid item code sequences, stored as padded tensors.

Beam search asks, for many beams at once, "which codes may follow this prefix, and which prefix
(or item) does each lead to?". A pointer-based trie answers that one beam at a time in Python;
here every level is two dense tables indexed by *prefix id* so that the answer for a whole
batch of beams is a single ``gather``:

- prefixes of length ``l`` (the nodes at depth ``l``) are numbered ``0 .. P_l - 1``; the root
  is prefix 0 at depth 0;
- ``child_codes[l]`` is ``(P_l, F_l)``: the codes that may follow prefix ``p`` at level ``l``,
  ascending, padded with -1 (``F_l`` = the largest fan-out at that level);
- ``child_next[l]`` is ``(P_l, F_l)``: the prefix id at depth ``l + 1`` that each child leads
  to — or, at the last level, the *item index* of the completed code sequence; -1 = padding.

Exclusion (seen items, a request's ``exclude``) needs, per user, the nodes below which every
item is excluded: ``item_prefix[l]`` is ``(I,)``, the depth-``l + 1`` prefix of every item, and
``leaves[l]`` is ``(P_{l+1},)``, the number of items below each such prefix (levels ``0 .. L-2``);
:meth:`CodeTrie.excluded_nodes` counts a user's excluded items per prefix with one ``index_add``.

Memory is ``sum_l P_l * F_l`` entries: the number of trie edges plus padding. Real code
assignments are close to balanced, so ``F_l`` stays near the mean fan-out below the first
level (a dense ``(P_l, K_l)`` table would cost ``K_l / F_l`` times more).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alignrec.errors import InputError


@dataclass
class CodeTrie:
    """The trie of every item's code sequence; see the module docstring for the layout."""

    codebook_sizes: list[int]
    num_items: int
    child_codes: list[torch.Tensor]  # per level l: (P_l, F_l) int64, -1 = padding
    child_next: list[torch.Tensor]  # per level l: (P_l, F_l) int64, next prefix id (item index at the last level)
    item_prefix: list[torch.Tensor]  # per level l < L-1: (I,) int64, the depth-(l+1) prefix of each item
    leaves: list[torch.Tensor]  # per level l < L-1: (P_{l+1},) int64, items below each depth-(l+1) prefix

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def device(self) -> torch.device:
        return self.child_codes[0].device

    @classmethod
    def from_codes(cls, codes: np.ndarray, codebook_sizes: Sequence[int]) -> CodeTrie:
        """Build the trie of ``codes`` (I, L): row ``i`` is item ``i``'s code sequence.

        Raises :class:`InputError` when two items share a code sequence: the trie could then
        only ever return one of them, and the lists would silently miss the other.
        """
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] == 0:
            raise InputError(f"item codes must be a non-empty (items, levels) array, got shape {codes.shape}")
        num_items, num_levels = codes.shape
        sizes = np.asarray(list(codebook_sizes), dtype=np.int64)
        if sizes.shape != (num_levels,):
            raise InputError(f"{len(sizes)} codebook sizes for {num_levels} code levels")
        if codes.min() < 0 or (codes >= sizes).any():
            raise InputError("item codes out of range of their codebook sizes")

        child_codes: list[torch.Tensor] = []
        child_next: list[torch.Tensor] = []
        item_prefix: list[torch.Tensor] = []
        leaves: list[torch.Tensor] = []
        prefix_of_item = np.zeros(num_items, dtype=np.int64)  # every item starts at the root
        num_prefixes = 1
        for level in range(num_levels):
            # A child edge is (parent prefix, code); number the distinct edges in sorted order,
            # which sorts them by parent first and by code within a parent.
            edge_key = prefix_of_item * sizes[level] + codes[:, level]
            edges, edge_of_item = np.unique(edge_key, return_inverse=True)
            parent = edges // sizes[level]
            code = edges % sizes[level]
            fanout = np.bincount(parent, minlength=num_prefixes)
            width = int(fanout.max())
            first_edge = np.cumsum(fanout) - fanout
            slot = np.arange(len(edges)) - first_edge[parent]
            table_codes = np.full((num_prefixes, width), -1, dtype=np.int64)
            table_codes[parent, slot] = code
            table_next = np.full((num_prefixes, width), -1, dtype=np.int64)
            if level < num_levels - 1:
                table_next[parent, slot] = np.arange(len(edges))  # edge e leads to prefix e at depth l + 1
                prefix_of_item = edge_of_item
                num_prefixes = len(edges)
                item_prefix.append(torch.from_numpy(prefix_of_item.astype(np.int64)))
                leaves.append(torch.from_numpy(np.bincount(prefix_of_item, minlength=num_prefixes).astype(np.int64)))
            else:
                if len(edges) != num_items:
                    raise InputError(
                        f"item codes are not unique: {num_items - len(edges)} items share a code sequence with "
                        "another item (the tokenizer must resolve collisions before inference)"
                    )
                item_of_edge = np.empty(len(edges), dtype=np.int64)
                item_of_edge[edge_of_item] = np.arange(num_items)
                table_next[parent, slot] = item_of_edge
            child_codes.append(torch.from_numpy(table_codes))
            child_next.append(torch.from_numpy(table_next))
        return cls(list(int(s) for s in sizes), int(num_items), child_codes, child_next, item_prefix, leaves)

    def to(self, device: torch.device | str) -> CodeTrie:
        return CodeTrie(
            self.codebook_sizes,
            self.num_items,
            [t.to(device) for t in self.child_codes],
            [t.to(device) for t in self.child_next],
            [t.to(device) for t in self.item_prefix],
            [t.to(device) for t in self.leaves],
        )

    def children(self, level: int, prefix_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, next ids) of the children of ``prefix_ids`` (any shape S) at ``level``:
        both ``S + (F_l,)``, -1 where a prefix has fewer children than ``F_l``."""
        return self.child_codes[level][prefix_ids], self.child_next[level][prefix_ids]

    def excluded_nodes(self, excluded: torch.Tensor) -> list[torch.Tensor]:
        """Where a user's beams must not go. ``excluded`` (B, I) bool: the items each user must not
        get. Returns per level l a (B, N) bool mask over what the children at level l lead to
        (:meth:`children`' next ids): the depth-(l+1) prefixes below which *every* item is
        excluded, and at the last level the excluded items themselves. A beam search that masks
        these never spends a beam on a prefix that can only end in excluded items."""
        if excluded.shape[-1] != self.num_items:
            raise ValueError(f"an exclusion mask over {excluded.shape[-1]} items for a trie of {self.num_items}")
        counts = excluded.to(torch.int64)
        masks = []
        for level in range(self.num_levels - 1):
            below = counts.new_zeros((counts.shape[0], len(self.leaves[level]))).index_add_(1, self.item_prefix[level], counts)
            masks.append(below == self.leaves[level])
        masks.append(excluded)
        return masks

    def lookup(self, codes: Sequence[int]) -> int:
        """Walk the tables from the root: the item index of a full code sequence, or -1.

        A scalar convenience for checks and tests; beam search uses :meth:`children`.
        """
        if len(codes) != self.num_levels:
            return -1
        node = 0
        for level, code in enumerate(codes):
            row = self.child_codes[level][node]
            hits = (row == int(code)).nonzero()
            if hits.numel() == 0:
                return -1
            node = int(self.child_next[level][node, int(hits[0, 0])])
        return node

    def num_edges(self) -> list[int]:
        """Number of trie edges per level (children that exist, without the padding)."""
        return [int((table >= 0).sum()) for table in self.child_codes]
