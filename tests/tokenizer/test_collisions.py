"""Collision statistics and resolution on hand-made code tables."""

from __future__ import annotations

import numpy as np
import pytest

from alignrec.tokenizer.collisions import (
    CodeIndex,
    CollisionError,
    collision_rate,
    colliding_rows,
    find_free_code,
    prefix_collision_rates,
    resolve_collisions,
)
from alignrec.tokenizer.model import ResidualQuantizer


def test_rates_by_hand() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 2], [1, 1]])
    assert collision_rate(codes) == pytest.approx(1 - 3 / 4)
    assert prefix_collision_rates(codes) == pytest.approx([1 - 2 / 4, 1 - 3 / 4])
    assert colliding_rows(codes).tolist() == [0, 1]
    assert collision_rate(np.zeros((0, 2), dtype=np.int64)) == 0.0


def _quantizer() -> ResidualQuantizer:
    # level 1: codes at 0 and 10 on the x axis; level 2: residual codes at x = -1, 0, 1
    return ResidualQuantizer([np.array([[0.0], [10.0]]), np.array([[-1.0], [0.0], [1.0]])])


def test_last_level_moves_all_but_the_closest_member() -> None:
    quantizer = _quantizer()
    latent = np.array([[0.1], [0.05], [0.9], [10.0]])  # items 0, 1 both -> (0, 1); item 2 -> (0, 2)
    codes = quantizer.quantize(latent)
    assert codes.tolist() == [[0, 1], [0, 1], [0, 2], [1, 1]]
    resolved = resolve_collisions("last_level", codes, latent, quantizer)
    # item 1 (0.05 from code 0) keeps (0, 1); item 0 takes the cheapest free last-level code:
    # (0, 2) is taken by item 2, so (0, 0)
    assert resolved.codes.tolist() == [[0, 0], [0, 1], [0, 2], [1, 1]]
    assert resolved.moved_items == 1 and resolved.strategy == "last_level"


def test_full_prefix_backtracks_to_the_level_above() -> None:
    quantizer = _quantizer()
    latent = np.array([[0.0], [0.0], [0.0], [0.0]])  # four items, only three paths under code 0
    codes = quantizer.quantize(latent)
    resolved = resolve_collisions("last_level", codes, latent, quantizer)
    assert collision_rate(resolved.codes) == 0.0
    assert sorted(map(tuple, resolved.codes.tolist()))[:3] == [(0, 0), (0, 1), (0, 2)]
    assert resolved.codes[:, 0].tolist().count(1) == 1  # the fourth goes to the other level-1 code


def test_extra_level_and_automatic_fallback() -> None:
    quantizer = ResidualQuantizer([np.array([[0.0], [1.0]])])
    latent = np.array([[0.0], [0.1], [0.9], [0.2], [1.0]])
    codes = quantizer.quantize(latent)  # [0, 0, 1, 0, 1]
    extra = resolve_collisions("extra_level", codes, latent, quantizer)
    assert extra.codes.tolist() == [[0, 0], [0, 1], [1, 0], [0, 2], [1, 1]]
    assert extra.codebook_sizes == [2, 3]
    fallback = resolve_collisions("last_level", codes, latent, quantizer)  # 5 items > 2 paths
    assert fallback.strategy == "extra_level" and "impossible" in fallback.notes[-1]
    with pytest.raises(ValueError, match="unknown collision resolution"):
        resolve_collisions("nope", codes, latent, quantizer)


def test_find_free_code_respects_taken_paths_and_full_space() -> None:
    quantizer = _quantizer()
    index = CodeIndex.from_codes(np.array([[0, 1], [0, 2]]), [2, 3])
    assert index.room_below((0,)) == 1 and index.room_below(()) == 4
    assert find_free_code(quantizer, np.array([0.0]), index) == (0, 0)
    index.add((0, 0))
    assert find_free_code(quantizer, np.array([0.0]), index) == (1, 0)  # prefix 0 is full: x=0 - 10 -> -10 nearest -1
    for code in [(1, 0), (1, 1), (1, 2)]:
        index.add(code)
    with pytest.raises(CollisionError):
        find_free_code(quantizer, np.array([0.0]), index)
