"""Training prompts of ``alignrec prefer``: from the training part of each sequence only.

A user's sequence is ``train + [valid, test]`` (leave-one-out); prompts are built from
``train`` alone (:meth:`PreferencePrompts.positions_of`), so a validation or test item is never a
target nor inside a history (a test checks). A prompt at position ``t`` holds the newest
``max_history`` items before ``t`` and asks for item ``t`` (``t >= 1``).

``positions: last`` (default) takes each user's newest ``prompts_per_user`` training targets:
their prompts have the evaluation's shape (the full history window right before the held-out
items), and one a user per epoch spreads the updates evenly over the users the metric averages
over (943 prompts an epoch on ml-100k, ~3 minutes at 5 prompts/s). ``uniform`` draws the
positions anew each epoch from the whole training part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prompt:
    user: int  # user index
    history: list[int]  # item indices, oldest first (already cut to max_history)
    target: int  # item index


def positions_of(length: int, count: int, mode: str, rng: np.random.Generator) -> list[int]:
    """Target positions of a training part of ``length`` items (>= 1: a prompt needs history)."""
    candidates = np.arange(1, length)
    if candidates.size == 0:
        return []
    if mode == "last":
        return candidates[-count:].tolist()
    return np.sort(rng.choice(candidates, size=min(count, candidates.size), replace=False)).tolist()


def epoch_prompts(training_sequences: Sequence[np.ndarray], max_history: int, prompts_per_user: int, mode: str,
                  seed: int, epoch: int) -> list[Prompt]:
    """The prompts of one epoch, in a seeded random order (the same for the same seed and epoch)."""
    rng = np.random.default_rng([seed, epoch])
    prompts = []
    for user, sequence in enumerate(training_sequences):
        for t in positions_of(len(sequence), prompts_per_user, mode, rng):
            prompts.append(Prompt(user, [int(i) for i in sequence[max(0, t - max_history) : t]], int(sequence[t])))
    order = rng.permutation(len(prompts))
    return [prompts[i] for i in order]
