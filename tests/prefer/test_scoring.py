"""Rollouts are the evaluation's beam search; shared-prompt scoring equals plain scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alignrec.llm.tiny_run import load_tiny_recommender
from alignrec.prefer.scoring import completion_log_probs, completion_log_probs_reference, rollouts


@pytest.fixture(scope="module")
def recommender(tiny_run: Path):  # type: ignore[no-untyped-def]
    return load_tiny_recommender(tiny_run)


def _prompts(recommender, count: int = 3) -> list[list[int]]:  # type: ignore[no-untyped-def]
    histories = [[1, 2, 3], [4, 5, 6, 7, 8], [9]][:count]
    return [recommender.prompt_ids(h) for h in histories]


def test_rollouts_equal_the_evaluation_beam_search(recommender) -> None:  # type: ignore[no-untyped-def]
    histories = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
    evaluation = recommender.recommend(histories, top_k=8, beam_size=8, show_progress=False)
    rolled = rollouts(recommender.model, [recommender.prompt_ids(h) for h in histories], recommender.trie,
                      recommender.vocabulary, 8, recommender.pad_token_id, recommender.settings.head)
    assert torch.equal(rolled.items, evaluation.items)
    assert torch.allclose(rolled.scores, evaluation.scores)


@pytest.mark.parametrize("shared", [True, False])
def test_shared_prompt_scoring_equals_plain_scoring(recommender, shared: bool) -> None:  # type: ignore[no-untyped-def]
    prompts = _prompts(recommender)
    codes = torch.as_tensor(recommender.codes.codes)[torch.tensor([[0, 5, 7, 2], [3, 3, 1, 9], [10, 11, 12, 0]])]  # (3, 4, L)
    fast = completion_log_probs(recommender.model, prompts, codes, recommender.vocabulary, recommender.pad_token_id,
                                share_prompt_cache=shared)
    plain = completion_log_probs_reference(recommender.model, prompts, codes, recommender.vocabulary, recommender.pad_token_id)
    assert fast.shape == (3, 4, 3)
    assert torch.allclose(fast, plain, atol=1e-5)


def test_beam_scores_are_the_summed_code_log_probs(recommender) -> None:  # type: ignore[no-untyped-def]
    prompts = _prompts(recommender)
    rolled = rollouts(recommender.model, prompts, recommender.trie, recommender.vocabulary, 6, recommender.pad_token_id, "code")
    codes = torch.as_tensor(recommender.codes.codes)[rolled.items]
    with torch.no_grad():
        scored = completion_log_probs(recommender.model, prompts, codes, recommender.vocabulary, recommender.pad_token_id)
    assert torch.allclose(scored.sum(-1), rolled.scores, atol=1e-4)


def test_scoring_has_gradients(recommender) -> None:  # type: ignore[no-untyped-def]
    prompts = _prompts(recommender, 2)
    codes = torch.as_tensor(recommender.codes.codes)[torch.tensor([[0, 1], [2, 3]])]
    model = recommender.model
    model.zero_grad()
    completion_log_probs(model, prompts, codes, recommender.vocabulary, recommender.pad_token_id).sum().backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    model.zero_grad()
