"""HR@K / NDCG@K against hand-computed values; ranks_from_scores against a brute-force sort."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignrec.metrics import evaluate_rankings, metrics_from_ranks, ranks_from_scores, ranks_in_lists

# 1 / log2(r + 2) for the ranks used below, worked out by hand
GAIN = {0: 1.0, 1: 0.6309297535714574, 2: 0.5, 3: 0.43067655807339306, 4: 0.38685280723454163,
        5: 0.35620718710802218, 9: 0.28906482631788782}


def test_metrics_hand_computed() -> None:
    ranks = [0, 1, 4, 9, 10, -1]  # 10 is just outside K = 10; -1 = not retrieved
    metrics = metrics_from_ranks(ranks, ks=(1, 5, 10))
    assert list(metrics) == ["hr@1", "ndcg@1", "hr@5", "ndcg@5", "hr@10", "ndcg@10"]
    assert metrics["hr@1"] == pytest.approx(1 / 6)
    assert metrics["ndcg@1"] == pytest.approx(1 / 6)
    assert metrics["hr@5"] == pytest.approx(3 / 6)
    assert metrics["ndcg@5"] == pytest.approx((1.0 + 0.6309297535714574 + 0.38685280723454163) / 6)  # 0.336297...
    assert metrics["ndcg@5"] == pytest.approx(0.3362970934676665)
    assert metrics["hr@10"] == pytest.approx(4 / 6)
    assert metrics["ndcg@10"] == pytest.approx(0.38447456452064783)


def test_ndcg_of_third_position_is_one_half() -> None:
    assert metrics_from_ranks([2], ks=(1, 3, 5)) == {"hr@1": 0.0, "ndcg@1": 0.0, "hr@3": 1.0, "ndcg@3": 0.5,
                                                     "hr@5": 1.0, "ndcg@5": 0.5}


def test_metrics_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="non-empty 1-D array"):
        metrics_from_ranks([])
    with pytest.raises(ValueError, match="K must be >= 1"):
        metrics_from_ranks([0], ks=(0,))
    with pytest.raises(ValueError, match="ranks must be >= 0"):
        metrics_from_ranks([-3])


def test_ranks_in_lists_duplicates_and_unknown_items_keep_positions() -> None:
    rankings = [[3, 3, 12, 7], [], [2, 5, 8, 1, 0, 4], [-1, 9]]
    assert ranks_in_lists(rankings, [7, 2, 4, 9]).tolist() == [3, -1, 5, 1]
    dense = np.array([[4, 7, 7], [1, 2, 3]])
    assert ranks_in_lists(dense, [7, 9]).tolist() == [1, -1]  # first occurrence; absent -> -1


def test_evaluate_rankings_counts_without_removing() -> None:
    result = evaluate_rankings([[3, 3, 12, 7], [], [2, 5, 8, 1, 0, 4], [-1, 9]], [7, 2, 4, 9], num_items=10)
    assert result.users == 4
    assert result.counts == {"duplicate_items": 1, "unknown_items": 2, "short_lists": 4, "empty_lists": 1}
    # ranks 3, miss, 5, 1
    assert result.metrics["hr@1"] == 0.0
    assert result.metrics["hr@5"] == pytest.approx(0.5)
    assert result.metrics["ndcg@5"] == pytest.approx((GAIN[3] + GAIN[1]) / 4)  # 0.265401...
    assert result.metrics["hr@10"] == pytest.approx(0.75)
    assert result.metrics["ndcg@10"] == pytest.approx(0.35445337468821817)
    with pytest.raises(ValueError, match=r"targets must be item indices in \[0, 10\)"):
        evaluate_rankings([[1]], [10], num_items=10)


def reference_ranks(scores: np.ndarray, targets: np.ndarray, exclude: np.ndarray | None) -> list[int]:
    """Brute force: position of the target in a stable descending sort, excluded items removed."""
    out = []
    for row, target in enumerate(targets):
        order = [int(i) for i in np.argsort(-scores[row], kind="stable")]
        if exclude is not None:
            order = [i for i in order if i == target or not exclude[row, i]]
        out.append(order.index(int(target)))
    return out


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    rows=st.integers(1, 5),
    items=st.integers(1, 12),
)
def test_ranks_from_scores_matches_brute_force(data: st.DataObject, rows: int, items: int) -> None:
    # small integer scores make ties frequent: the tie rule is what is tested
    scores = np.array(data.draw(st.lists(st.lists(st.integers(-2, 2), min_size=items, max_size=items), min_size=rows,
                                         max_size=rows)), dtype=np.float32)
    targets = np.array(data.draw(st.lists(st.integers(0, items - 1), min_size=rows, max_size=rows)))
    exclude = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=items, max_size=items), min_size=rows,
                                          max_size=rows)))
    for mask in (None, exclude):
        expected = reference_ranks(scores, targets, mask)
        assert ranks_from_scores(scores, targets, mask).tolist() == expected
        torch_mask = None if mask is None else torch.from_numpy(mask)
        assert ranks_from_scores(torch.from_numpy(scores), torch.from_numpy(targets), torch_mask).tolist() == expected


def test_constant_scores_are_not_a_perfect_model() -> None:
    ranks = ranks_from_scores(np.zeros((3, 50)), np.array([0, 10, 49]))
    assert ranks.tolist() == [0, 10, 49]
    assert metrics_from_ranks(ranks, ks=(1,))["hr@1"] == pytest.approx(1 / 3)


def test_ranks_from_scores_rejects_nan_and_bad_shapes() -> None:
    scores = np.array([[0.1, np.nan, 0.3]])
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(scores, np.array([0]))
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(torch.from_numpy(scores), [0])
    with pytest.raises(ValueError, match=r"scores must be \(B, I\)"):
        ranks_from_scores(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(ValueError, match=r"targets must be item indices in \[0, 3\)"):
        ranks_from_scores(np.zeros((1, 3)), np.array([3]))
