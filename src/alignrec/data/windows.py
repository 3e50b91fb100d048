"""Training windows over interaction sequences: the one rule the behaviour models and the LLM share.

A sequence of ``m`` items is cut into windows of at most ``window`` items that end at
``m, m - stride, m - 2 stride, ...`` until one reaches the sequence start. A window's targets
are its last ``stride`` items, or, in the window that reaches the start, every item but the
sequence's first. So every item after a sequence's first is a target exactly once, with at
least ``window - stride`` items of context. Sequences of fewer than two items give no window.

SASRec-style models train on the windows as padded arrays
(:meth:`alignrec.collab.data.TrainingData.sequence_windows`); the LLM's dense sequential task
writes each window as a prompt (the context) and an answer (the targets)
(:meth:`alignrec.llm.format.SequenceFormat.windows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Windows:
    """Every window of a set of sequences, as arrays of length N, grouped by sequence in order and,
    within a sequence, newest window first.

    In sequence ``sequence[n]``, window n holds items ``[start[n], end[n])`` and its targets are
    ``[first_target[n], end[n])``.
    """

    sequence: np.ndarray  # (N,) int64: index of the sequence
    start: np.ndarray  # (N,) int64
    first_target: np.ndarray  # (N,) int64
    end: np.ndarray  # (N,) int64, exclusive


def check_window(window: int, stride: int) -> None:
    if window < 2:
        raise ValueError(f"window length must be >= 2, got {window}")
    if not 1 <= stride <= window - 1:
        raise ValueError(f"stride must be in 1..{window - 1}, got {stride}")


def sequence_windows(lengths: np.ndarray, window: int, stride: int) -> Windows:
    """The windows of sequences of ``lengths`` items (see the module docstring)."""
    check_window(window, stride)
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = np.where(lengths >= 2, 1 - (-np.maximum(lengths - window, 0) // stride), 0)  # 1 + ceil(.. / stride)
    sequence = np.repeat(np.arange(len(lengths), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    k = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first, counts)  # 0 = the newest window
    end = lengths[sequence] - k * stride
    reaches_start = end <= window
    start = np.where(reaches_start, 0, end - window)
    first_target = np.where(reaches_start, 1, end - stride)
    return Windows(sequence, start, first_target, end)
