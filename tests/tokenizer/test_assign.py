"""Assignment maths: costs, prefix keys, capacities, exact balanced assignment vs brute force,
prices that reproduce the assignment, the auction, Sinkhorn-Knopp."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from alignrec.tokenizer.assign import (
    _lap_prices,
    assign_with_prices,
    auction,
    balanced_assign,
    group_capacities,
    pairwise_cost,
    prefix_keys,
    sinkhorn_codes,
)
from alignrec.tokenizer.methods import _torch_cost, _torch_sinkhorn_codes


def test_pairwise_cost_matches_direct_formulas() -> None:
    x = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]])
    c = np.array([[1.0, 0.0], [0.0, 2.0]])
    expected_l2 = np.array([[1.0, 4.0], [4.0, 1.0], [5.0, 18.0]])  # hand-computed squared distances
    np.testing.assert_allclose(pairwise_cost(x, c, "l2"), expected_l2, atol=1e-12)
    cos = pairwise_cost(x, c, "cosine")
    assert cos[0].tolist() == [1.0, 1.0]  # zero vector: similarity 0 with everything
    np.testing.assert_allclose(cos[1], [1 - 1 / np.sqrt(5), 1 - 2 / np.sqrt(5)], atol=1e-12)
    np.testing.assert_allclose(_torch_cost(torch.tensor(x), torch.tensor(c), "l2").numpy(), expected_l2, atol=1e-9)
    np.testing.assert_allclose(_torch_cost(torch.tensor(x[1:]), torch.tensor(c), "cosine").numpy(), cos[1:], atol=1e-9)


def test_prefix_keys_and_capacities() -> None:
    codes = np.array([[1, 2], [0, 3], [3, 3]])
    assert prefix_keys(codes, [4, 5]).tolist() == [1 * 5 + 2, 3, 3 * 5 + 3]
    assert prefix_keys(codes[:, :0], [4, 5]).tolist() == [0, 0, 0]
    # ceil(f * n / K), at least 1 and at least ceil(n / K)
    assert group_capacities(np.array([66, 16859, 1, 300]), 256, 1.0).tolist() == [1, 66, 1, 2]
    assert group_capacities(np.array([16859]), 256, 2.0).tolist() == [132]


def _brute_force(cost: np.ndarray, capacity: int) -> float:
    num, codes = cost.shape
    best = np.inf
    for assignment in itertools.product(range(codes), repeat=num):
        if np.bincount(assignment, minlength=codes).max() <= capacity:
            best = min(best, cost[np.arange(num), assignment].sum())
    return float(best)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("capacity", [1, 2])
def test_lap_assignment_is_optimal_and_prices_reproduce_it(seed: int, capacity: int) -> None:
    rng = np.random.default_rng(seed)
    num = 3 * capacity
    cost = rng.random((num, 4))
    groups = np.zeros(num, dtype=np.int64)
    result = balanced_assign(cost, groups, np.array([capacity]))
    assert result.solver == "lap"
    assert np.bincount(result.codes, minlength=4).max() <= capacity
    assert cost[np.arange(num), result.codes].sum() == pytest.approx(_brute_force(cost, capacity))
    # rule (*) with the dual prices gives back exactly the optimal assignment
    assert assign_with_prices(cost, groups, result.prices).tolist() == result.codes.tolist()
    assert (result.prices >= -1e-6).all()


def test_prices_per_group_and_crowded_nearest_code() -> None:
    # three vectors all nearest to code 0 in group 0; group 1 has one vector (no price needed)
    cost = np.array([[0.0, 1.0, 5.0], [0.1, 3.0, 0.9], [0.2, 0.4, 4.0], [0.0, 2.0, 2.0]])
    groups = np.array([0, 0, 0, 1])
    result = balanced_assign(cost, groups, np.array([1, 1]))
    # optimum: total 0.0 + 0.9 + 0.4 = 1.3 (vector 0 keeps code 0)
    assert result.codes.tolist() == [0, 2, 1, 0]
    assert assign_with_prices(cost, groups, result.prices).tolist() == [0, 2, 1, 0]
    assert np.all(result.prices[1] == 0)
    assert assign_with_prices(cost, groups, None).tolist() == [0, 0, 0, 0]


def test_lap_prices_many_random_groups_reproduce_assignment() -> None:
    rng = np.random.default_rng(7)
    mismatches = 0
    for _ in range(20):
        cost = rng.random((12, 16))
        codes = balanced_assign(cost, np.zeros(12, np.int64), np.array([1])).codes
        prices = _lap_prices(cost, codes, 1)
        mismatches += int((assign_with_prices(cost, np.zeros(12, np.int64), prices[None, :]) != codes).sum())
    assert mismatches == 0


def test_auction_is_feasible_and_near_optimal() -> None:
    rng = np.random.default_rng(3)
    cost = rng.random((40, 8))
    groups = np.zeros(40, dtype=np.int64)
    exact = balanced_assign(cost, groups, np.array([5]))
    codes, prices, rounds = auction(cost, groups, np.array([5]), epsilon=1e-4)
    assert rounds > 0 and np.bincount(codes, minlength=8).max() <= 5
    spread = cost.max() - cost.min()
    # epsilon-optimal: within N * eps of the optimum
    assert cost[np.arange(40), codes].sum() <= cost[np.arange(40), exact.codes].sum() + 40 * 1e-4 * spread + 1e-9
    # forcing the auction path through balanced_assign gives the same kind of result
    forced = balanced_assign(cost, groups, np.array([5]), lap_max_entries=1, auction_epsilon=1e-4)
    assert forced.solver == "auction" and np.bincount(forced.codes, minlength=8).max() <= 5


def test_sinkhorn_spreads_a_crowded_code_and_twins_agree() -> None:
    rng = np.random.default_rng(0)
    cost = np.abs(rng.normal(size=(64, 4))) + np.array([0.0, 1.0, 1.0, 1.0])  # code 0 nearest for most rows
    assert np.bincount(cost.argmin(1), minlength=4)[0] > 40
    codes = sinkhorn_codes(cost, epsilon=0.003, iterations=100)
    counts = np.bincount(codes, minlength=4)
    # the entropic plan is uniform (16 per code); rounding each row to its argmax is nearly so
    assert counts.min() >= 14 and counts.max() <= 18, counts
    twin = _torch_sinkhorn_codes(torch.tensor(cost), 0.003, 100).numpy()
    assert twin.tolist() == codes.tolist()
    # the log-domain path (tiny epsilon) agrees with itself across implementations too
    assert sinkhorn_codes(cost, 0.001, 30).tolist() == _torch_sinkhorn_codes(torch.tensor(cost), 0.001, 30).numpy().tolist()
