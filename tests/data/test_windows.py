"""The training windows the behaviour models and the LLM's dense task share (alignrec.data.windows)."""

from __future__ import annotations

import numpy as np
import pytest

from alignrec.data.windows import sequence_windows


def bounds(lengths: list[int], window: int, stride: int) -> list[tuple[int, int, int, int]]:
    w = sequence_windows(np.array(lengths), window, stride)
    return list(zip(w.sequence.tolist(), w.start.tolist(), w.first_target.tolist(), w.end.tolist()))


def test_known_answers() -> None:
    # 7 items, windows of 4, stride 3: ends 7, 4 (newest first) -> the second reaches the start
    assert bounds([7], 4, 3) == [(0, 3, 4, 7), (0, 0, 1, 4)]
    # stride 1: every later target is the last item of a full window (full context)
    assert bounds([6], 3, 1) == [(0, 3, 5, 6), (0, 2, 4, 5), (0, 1, 3, 4), (0, 0, 1, 3)]
    # fewer than two items: no window; two items: one, whose target is the second
    assert bounds([1, 2], 4, 3) == [(1, 0, 1, 2)]
    with pytest.raises(ValueError, match="stride"):
        sequence_windows(np.array([5]), 4, 4)
    with pytest.raises(ValueError, match="window length"):
        sequence_windows(np.array([5]), 1, 1)


@pytest.mark.parametrize(("window", "stride"), [(4, 3), (4, 1), (21, 20), (21, 5)])
def test_every_item_after_the_first_is_a_target_once(window: int, stride: int) -> None:
    lengths = np.random.default_rng(window + stride).integers(0, 60, size=40)
    w = sequence_windows(lengths, window, stride)
    for sequence, length in enumerate(lengths.tolist()):
        mine = w.sequence == sequence
        targets = sorted(t for first, end in zip(w.first_target[mine], w.end[mine]) for t in range(first, end))
        assert targets == list(range(1, length)), (sequence, length)
        assert ((w.end[mine] - w.start[mine]) <= window).all()
        assert ((w.first_target[mine] - w.start[mine]) >= np.minimum(w.first_target[mine], window - stride)).all()
