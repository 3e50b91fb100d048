"""The tensor trie: hand-built tables, collisions, and agreement with a plain set of codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignrec.errors import InputError
from alignrec.llm.trie import CodeTrie


def test_tables_of_a_hand_built_trie():
    # items: 0 -> (0, 1), 1 -> (0, 2), 2 -> (1, 0); two levels with 2 and 3 codes
    trie = CodeTrie.from_codes(np.array([[0, 2], [1, 0], [0, 1]]), [2, 3])
    # order of the input rows must not matter for the tables, only for the item indices
    assert trie.child_codes[0].tolist() == [[0, 1]]
    assert trie.child_next[0].tolist() == [[0, 1]]  # code 0 -> prefix 0, code 1 -> prefix 1
    assert trie.child_codes[1].tolist() == [[1, 2], [0, -1]]  # prefix (0,) has 2 children, (1,) one
    assert trie.child_next[1].tolist() == [[2, 0], [1, -1]]  # item indices of (0,1), (0,2), (1,0)
    assert trie.num_edges() == [2, 3]
    assert [trie.lookup(c) for c in ([0, 2], [1, 0], [0, 1], [1, 1], [2, 0], [0])] == [0, 1, 2, -1, -1, -1]


def test_children_gather_for_a_batch_of_prefixes():
    trie = CodeTrie.from_codes(np.array([[0, 2], [1, 0], [0, 1]]), [2, 3])
    codes, nxt = trie.children(1, torch.tensor([[1, 0], [0, 0]]))  # (2, 2) prefixes -> (2, 2, F=2)
    assert codes.shape == (2, 2, 2)
    assert codes[0, 0].tolist() == [0, -1] and nxt[0, 0].tolist() == [1, -1]
    assert codes[1, 1].tolist() == [1, 2] and nxt[1, 1].tolist() == [2, 0]


def test_duplicate_codes_are_refused():
    with pytest.raises(InputError, match="not unique: 1 items"):
        CodeTrie.from_codes(np.array([[0, 1], [1, 1], [0, 1]]), [2, 2])


@pytest.mark.parametrize(
    ("codes", "sizes", "message"),
    [([[0, 3]], [2, 3], "out of range"), ([[0, -1]], [2, 3], "out of range"), ([[0, 1]], [2], "1 codebook sizes for 2")],
)
def test_bad_codes_are_refused(codes, sizes, message):
    with pytest.raises(InputError, match=message):
        CodeTrie.from_codes(np.array(codes), sizes)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    data=st.data(),
)
def test_trie_holds_exactly_the_item_codes(sizes, data):
    total = int(np.prod(sizes))
    flat = data.draw(st.lists(st.integers(0, total - 1), min_size=1, max_size=min(total, 30), unique=True))
    codes = np.stack(np.unravel_index(np.array(flat), tuple(sizes)), axis=1)
    trie = CodeTrie.from_codes(codes, sizes)
    # every item is found at its own index
    assert [trie.lookup(row) for row in codes.tolist()] == list(range(len(flat)))
    # and nothing else is: enumerate every path through the tables
    found = {}

    def walk(level, prefix_id, prefix):
        for code, nxt in zip(trie.child_codes[level][prefix_id].tolist(), trie.child_next[level][prefix_id].tolist(), strict=True):
            if code < 0:
                assert nxt == -1
                continue
            if level == len(sizes) - 1:
                found[tuple(prefix + [code])] = nxt
            else:
                walk(level + 1, nxt, prefix + [code])

    walk(0, 0, [])
    assert found == {tuple(row): index for index, row in enumerate(codes.tolist())}
    # children are listed in ascending code order, padding last
    for table in trie.child_codes:
        real = table.clone().masked_fill(table < 0, 10**6)
        assert torch.equal(real, real.sort(dim=1).values)
    # edges per level = distinct prefixes of length level + 1
    assert trie.num_edges() == [len({tuple(r[: d + 1]) for r in codes.tolist()}) for d in range(len(sizes))]
