"""Bootstrap intervals over users: known answers, a plain numpy reference, pairing, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignrec.metrics import bootstrap as bootstrap_module
from alignrec.metrics import bootstrap_interval, metrics_from_ranks, paired_bootstrap_interval, per_user_metrics
from alignrec.metrics.bootstrap import bootstrap_means


def test_per_user_metrics_known_answers_and_means() -> None:
    ranks = np.array([0, 1, 9, 10, -1])
    values = per_user_metrics(ranks, (1, 10))
    np.testing.assert_array_equal(values["hr@1"], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(values["hr@10"], [1, 1, 1, 0, 0])
    np.testing.assert_allclose(values["ndcg@10"], [1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0, 0.0])
    assert metrics_from_ranks(ranks, (1, 10)) == {name: float(v.mean()) for name, v in values.items()}


@pytest.mark.parametrize("value", [0.0, 0.25, 1.0])
def test_constant_vectors_give_zero_width_intervals(value: float) -> None:
    assert bootstrap_interval(np.full(37, value)) == (value, value)
    # paired: a model against itself, or against a copy shifted by a constant on every user
    assert paired_bootstrap_interval(np.full(37, value), np.full(37, value)) == (0.0, 0.0)
    shifted = paired_bootstrap_interval(np.arange(10.0) + 0.5, np.arange(10.0))
    assert shifted == pytest.approx((0.5, 0.5), abs=1e-12)


def test_two_users_by_hand() -> None:
    # Users [0, 1]: a draw of two users has mean 0 (p = 1/4), 1/2 (p = 1/2) or 1 (p = 1/4), so the
    # 2.5% and 97.5% quantiles of the draws' means are 0 and 1.
    assert bootstrap_interval([0.0, 1.0], resamples=4000) == (0.0, 1.0)
    # at 40% confidence the quantiles (30% and 70%) both fall among the 1/2 means
    assert bootstrap_interval([0.0, 1.0], confidence=0.4, resamples=4000) == (0.5, 0.5)


def test_matches_a_plain_numpy_reference_in_any_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(3).random(101)
    reference_rng = np.random.default_rng(7)
    reference = values[reference_rng.integers(0, 101, size=(500, 101))].mean(axis=1)  # (R,)
    np.testing.assert_array_equal(bootstrap_means(values, resamples=500, seed=7), reference)
    expected = tuple(np.quantile(reference, [0.025, 0.975]))
    assert bootstrap_interval(values, resamples=500, seed=7) == expected
    monkeypatch.setattr(bootstrap_module, "_CHUNK_ELEMENTS", 101 * 3 + 1)  # blocks of 3 draws
    assert bootstrap_interval(values, resamples=500, seed=7) == expected


def test_hit_rate_interval_is_close_to_the_normal_approximation() -> None:
    hits = np.zeros(500)
    hits[:150] = 1.0  # HR = 0.3 over 500 users: 1.96 * sqrt(0.3 * 0.7 / 500) = 0.0402
    low, high = bootstrap_interval(hits, resamples=4000)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 500)
    assert low == pytest.approx(0.3 - half, abs=0.006) and high == pytest.approx(0.3 + half, abs=0.006)


def test_paired_interval_is_narrower_than_the_users_spread() -> None:
    rng = np.random.default_rng(0)
    user_effect = rng.random(300)  # most of the spread is between users ...
    first = user_effect + 0.02 + 0.01 * rng.standard_normal(300)  # ... and both models share it
    second = user_effect
    low, high = paired_bootstrap_interval(first, second)
    assert 0.0 < low < 0.02 < high
    single = bootstrap_interval(first)
    assert high - low < (single[1] - single[0]) / 5


def test_seeded_and_checked() -> None:
    values = np.random.default_rng(1).random(50)
    assert bootstrap_interval(values, seed=4) == bootstrap_interval(values, seed=4)
    assert bootstrap_interval(values, seed=4) != bootstrap_interval(values, seed=5)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap_interval([0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(values, confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval(values, resamples=0)
