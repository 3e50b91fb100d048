"""The objectives of ``alignrec prefer``, as pure functions of log-probabilities.

Every objective sees one *group* per prompt: the beam's ``G`` items (rank order, best first) and
the prompt's target item, scored by the policy (and, where needed, by the frozen fine-tuned
reference model). Shapes: ``B`` prompts, ``G`` beam items, ``L`` code tokens an item.

- ``grpo`` — MiniOneRec's on-policy GRPO (``rl.py`` / ``minionerec_trainer.py``): reward 1 for
  the target, ``-w_i / sum_j w_j`` for a wrong item at beam rank ``i`` (``w_i = 1 / log2(i + 2)``,
  summed over the ``G`` ranks), advantage ``(r - mean) / (std + 1e-4)`` within the group, one
  update per rollout (the ratio ``exp(logp - logp.detach())`` is 1, so clipping never acts), a
  per-token k3 KL estimate to the reference weighted by ``kl_beta``. A group whose beam misses
  the target gives no policy gradient (MiniOneRec's rule; most groups on ml-100k).
- ``listwise`` — softmax over the sequence log-probabilities of ``{target} ∪ beam items``
  (the target once, even when the beam holds it), loss ``-log`` of the target's share: always a
  gradient, and it is the one that lifts the target above the items that beat it. With
  ``sdpo_beta > 0`` the scores are ``sdpo_beta * (log pi - log pi_ref)`` (S-DPO's ratio to the
  reference). ``negatives`` keeps only the best ``n`` beam items as negatives;
  ``negatives_above_target`` only the items ranked above the target when the beam holds it (the
  ones that cost NDCG; a prompt without negatives contributes nothing but its anchor).
- ``sft`` — the anchor alone (the fine-tuning loss on the stage's prompts): the control that
  says whether a gain comes from the ranking objective or from more training.

Every objective adds the anchor: ``sft_weight`` x the target's mean code-token cross-entropy
(code-only normalisation, as fine-tuning computes it).
"""

from __future__ import annotations

import math

import torch

ADVANTAGE_EPSILON = 1e-4  # MiniOneRec's (r - mean) / (std + 1e-4)


def rank_penalties(group_size: int) -> torch.Tensor:
    """-(1 / log2(i + 2)) / sum_j (1 / log2(j + 2)) for ranks i = 0 .. G-1: (G,)."""
    weights = torch.tensor([1.0 / math.log2(i + 2) for i in range(group_size)], dtype=torch.float64)
    return (-weights / weights.sum()).float()


def grpo_rewards(is_target: torch.Tensor) -> torch.Tensor:
    """Rewards of beam items (B, G) bool (True = the target), beams in rank order -> (B, G) float32.

    The target earns 1; a wrong item at rank i the rank penalty of :func:`rank_penalties`.
    """
    penalties = rank_penalties(is_target.shape[1]).to(is_target.device)
    return torch.where(is_target, torch.ones_like(penalties), penalties.expand_as(is_target.float()))


def group_advantages(rewards: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(r - group mean) / (group std + 1e-4), rewards (B, G) -> (B, G); ``valid`` (B, G) bool masks
    dead beams (fewer than G items), which take no part and get advantage 0. std is the unbiased
    one (torch's default, as TRL/MiniOneRec compute it)."""
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    masked = torch.where(valid, rewards, torch.zeros_like(rewards))
    mean = masked.sum(dim=1, keepdim=True) / count
    variance = (torch.where(valid, rewards - mean, torch.zeros_like(rewards)) ** 2).sum(dim=1, keepdim=True)
    std = (variance / (count - 1).clamp(min=1)).sqrt()
    return torch.where(valid, (rewards - mean) / (std + ADVANTAGE_EPSILON), torch.zeros_like(rewards))


def k3_kl(policy: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference) from token log-probs of policy samples:
    exp(ref - pol) - (ref - pol) - 1 (>= 0; same shape)."""
    delta = reference - policy
    return torch.exp(delta) - delta - 1.0


def grpo_loss(token_log_probs: torch.Tensor, rewards: torch.Tensor, valid: torch.Tensor,
              has_target: torch.Tensor, reference_log_probs: torch.Tensor | None = None,
              kl_beta: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO's loss for one update per rollout.

    token_log_probs (B, G, L) policy log-probs of the beam items' code tokens (with gradient);
    rewards (B, G); valid (B, G) live beams; has_target (B,) whether the beam holds the target
    (groups without it give no policy gradient); reference_log_probs (B, G, L) or None.
    Per token: ``-(exp(lp - lp.detach()) * A - kl_beta * k3)``, averaged over the L tokens of an
    item, then over the live items of all groups (TRL's / MiniOneRec's mean).
    """
    advantages = group_advantages(rewards, valid) * has_target[:, None].float()  # (B, G)
    ratio = torch.exp(token_log_probs - token_log_probs.detach())  # (B, G, L), == 1
    per_token = -ratio * advantages[..., None]
    kl = torch.zeros_like(per_token)
    if reference_log_probs is not None and kl_beta > 0:
        kl = k3_kl(token_log_probs, reference_log_probs)
        per_token = per_token + kl_beta * kl
    weight = valid.float()  # (B, G)
    per_item = per_token.mean(dim=2)  # (B, G)
    loss = (per_item * weight).sum() / weight.sum().clamp(min=1)
    stats = {"kl": float((kl.detach().mean(dim=2) * weight).sum() / weight.sum().clamp(min=1)),
             "groups_with_gradient": float(has_target.float().mean())}
    return loss, stats


def listwise_loss(target_log_prob: torch.Tensor, item_log_probs: torch.Tensor, negative: torch.Tensor,
                  target_reference: torch.Tensor | None = None, item_reference: torch.Tensor | None = None,
                  sdpo_beta: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """-log softmax share of the target among ``{target} ∪ negatives``, averaged over prompts.

    target_log_prob (B,) and item_log_probs (B, G): sequence log-probs (summed over the L code
    tokens); negative (B, G) bool: which beam items count (live, not the target, within the
    ``negatives`` cut). With ``sdpo_beta > 0`` each score is ``sdpo_beta * (lp - lp_ref)``.
    """
    target_score, item_scores = target_log_prob, item_log_probs
    if sdpo_beta > 0:
        if target_reference is None or item_reference is None:
            raise ValueError("sdpo_beta > 0 needs the reference model's log-probs")
        target_score = sdpo_beta * (target_log_prob - target_reference)
        item_scores = sdpo_beta * (item_log_probs - item_reference)
    scores = torch.cat([target_score[:, None], item_scores.masked_fill(~negative, float("-inf"))], dim=1)  # (B, 1+G)
    loss = -(target_score - torch.logsumexp(scores, dim=1)).mean()
    share = torch.exp(target_score - torch.logsumexp(scores, dim=1)).mean().detach()
    return loss, {"target_share": float(share)}


def anchor_loss(target_token_log_probs: torch.Tensor) -> torch.Tensor:
    """The fine-tuning loss on the stage's prompts: mean code-token cross-entropy of the targets (B, L) -> ()."""
    return -target_token_log_probs.mean()


OBJECTIVES = ("grpo", "listwise", "sft")
