"""The objectives against hand-computed values and brute force."""

from __future__ import annotations

import math

import pytest
import torch

from alignrec.prefer import objectives


def test_rewards_of_a_hand_computed_group() -> None:
    # 4 beams, the target at rank 2: weights 1/log2(2), 1/log2(3), 1/log2(4), 1/log2(5)
    weights = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)]
    total = sum(weights)
    rewards = objectives.grpo_rewards(torch.tensor([[False, False, True, False]]))
    expected = [-weights[0] / total, -weights[1] / total, 1.0, -weights[3] / total]
    assert rewards[0].tolist() == pytest.approx(expected, abs=1e-6)
    # advantage: (r - mean) / (unbiased std + 1e-4)
    mean = sum(expected) / 4
    std = math.sqrt(sum((r - mean) ** 2 for r in expected) / 3)
    advantages = objectives.group_advantages(rewards)
    assert advantages[0].tolist() == pytest.approx([(r - mean) / (std + 1e-4) for r in expected], abs=1e-5)


def test_sixteen_rank_penalties_sum_to_minus_one() -> None:
    assert float(objectives.rank_penalties(16).sum()) == pytest.approx(-1.0, abs=1e-6)


def test_grpo_group_without_target_gives_no_policy_gradient() -> None:
    log_probs = torch.randn(2, 4, 3, requires_grad=True)
    is_target = torch.tensor([[False, True, False, False], [False, False, False, False]])
    loss, stats = objectives.grpo_loss(log_probs, objectives.grpo_rewards(is_target), torch.ones(2, 4, dtype=torch.bool),
                                       is_target.any(1))
    loss.backward()
    assert log_probs.grad[1].abs().sum() == 0
    assert log_probs.grad[0].abs().sum() > 0
    assert stats["groups_with_gradient"] == 0.5


def test_grpo_gradient_is_the_advantage_weighted_log_likelihood() -> None:
    log_probs = torch.randn(1, 3, 2, requires_grad=True)
    is_target = torch.tensor([[True, False, False]])
    rewards = objectives.grpo_rewards(is_target)
    loss, _ = objectives.grpo_loss(log_probs, rewards, torch.ones(1, 3, dtype=torch.bool), is_target.any(1))
    loss.backward()
    advantages = objectives.group_advantages(rewards)
    # d/d lp of -(A * 1) averaged over 2 tokens and 3 items
    assert log_probs.grad[0].flatten().tolist() == pytest.approx((-advantages[0][:, None] / 6).expand(3, 2).flatten().tolist(), abs=1e-6)


def test_k3_is_zero_at_the_reference_and_positive_elsewhere() -> None:
    policy = torch.tensor([-1.0, -2.0, -0.5])
    assert objectives.k3_kl(policy, policy).abs().max() == 0
    assert (objectives.k3_kl(policy, policy + torch.tensor([0.3, -0.2, 1.0])) > 0).all()


@pytest.mark.parametrize("sdpo_beta", [0.0, 0.5])
def test_listwise_loss_is_brute_force_softmax(sdpo_beta: float) -> None:
    torch.manual_seed(0)
    target, items = torch.randn(3), torch.randn(3, 5)
    ref_target, ref_items = torch.randn(3), torch.randn(3, 5)
    negative = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    loss, _ = objectives.listwise_loss(target, items, negative, ref_target, ref_items, sdpo_beta)
    expected = 0.0
    for b in range(3):
        score = (lambda lp, ref: sdpo_beta * (lp - ref)) if sdpo_beta else (lambda lp, ref: lp)
        scores = [score(float(target[b]), float(ref_target[b]))]
        scores += [score(float(items[b, g]), float(ref_items[b, g])) for g in range(5) if negative[b, g]]
        expected += -(scores[0] - math.log(sum(math.exp(s) for s in scores)))
    assert float(loss) == pytest.approx(expected / 3, abs=1e-5)


def test_listwise_always_has_a_gradient_on_the_target() -> None:
    target = torch.tensor([-3.0], requires_grad=True)
    items = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = objectives.listwise_loss(target, items, torch.ones(1, 2, dtype=torch.bool))
    loss.backward()
    assert float(target.grad) < 0 and (items.grad > 0).all()


def test_a_prompt_without_negatives_adds_nothing() -> None:
    target = torch.tensor([-3.0, -2.0], requires_grad=True)
    items = torch.tensor([[-1.0, -2.0], [-0.5, -4.0]], requires_grad=True)
    negative = torch.tensor([[True, False], [False, False]])
    loss, _ = objectives.listwise_loss(target, items, negative)
    loss.backward()
    assert float(loss) == pytest.approx(-(-3.0 - math.log(math.exp(-3.0) + math.exp(-1.0))) / 2, abs=1e-6)
    assert float(target.grad[1]) == 0 and items.grad[1].abs().sum() == 0
