"""Fast constrained beam search vs. Hugging Face generate, vs. exhaustive scoring, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignrec.errors import InputError
from alignrec.llm.beam_search import constrained_beam_search, left_pad
from alignrec.llm.recommender import check_recommendations
from alignrec.llm.reference import reference_beam_search
from alignrec.llm.tiny_run import random_unique_codes
from alignrec.llm.trie import CodeTrie
from alignrec.llm.vocab import CodeVocabulary
from alignrec.llm.tiny import build_tiny_backbone
from alignrec.llm.format import encode_prompt, sequential_prompt
from alignrec.tokenizer.codes import ItemCodes


def exhaustive_scores(model, prompt, codes: np.ndarray, vocabulary) -> torch.Tensor:
    """Sum of code-token log-probs of every item after ``prompt``, by teacher forcing: (I,)."""
    answers = torch.stack([vocabulary.level_token_ids[level][torch.as_tensor(codes[:, level])] for level in range(codes.shape[1])], 1)
    inputs = torch.cat([torch.tensor(prompt).expand(len(codes), -1), answers], dim=1)  # (I, T + L)
    with torch.no_grad():
        log_probs = model(input_ids=inputs).logits.float().log_softmax(-1)  # (I, T + L, V)
    start = len(prompt) - 1  # the logits at position t predict token t + 1
    picked = log_probs[:, start : start + codes.shape[1]].gather(2, answers[..., None])[..., 0]  # (I, L)
    return picked.sum(1)


def make_setup(num_items: int, sizes, seed: int, logit_scale: float = 30.0, kv_heads: int | None = None):
    codes = random_unique_codes(num_items, sizes, seed)
    item_codes = ItemCodes(codes, list(sizes))
    model, tokenizer = build_tiny_backbone(code_tokens=item_codes.vocabulary(), seed=seed)
    if kv_heads is not None:  # grouped-query attention (as SmolLM2: 9 query heads share 3 key/value heads)
        from transformers import LlamaForCausalLM

        config = model.config
        config.num_attention_heads, config.num_key_value_heads, config.head_dim = 6, kv_heads, 8
        config.hidden_size = 48
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)  # random init is near-uniform; make items differ clearly
    model.eval()
    rng = np.random.default_rng(seed)
    prompts = [
        encode_prompt(tokenizer, sequential_prompt([item_codes.item_string(int(i)) for i in rng.choice(num_items, n)]))
        for n in (1, 3, 7, 2, 5)
    ]
    return model, tokenizer, codes, item_codes, CodeVocabulary.from_tokenizer(tokenizer, sizes), prompts


@pytest.mark.parametrize(
    ("num_items", "sizes", "beam", "top_k"),
    [
        (40, (4, 5, 6), 8, 5),  # beam wider than the first level's fan-out (4)
        (12, (3, 3, 3), 20, 10),  # fewer items than beams: dead beams must not surface
        (30, (8, 8), 6, 6),
    ],
)
def test_fast_matches_hf_generate(num_items, sizes, beam, top_k):
    model, tokenizer, codes, _, vocabulary, prompts = make_setup(num_items, sizes, seed=num_items)
    trie = CodeTrie.from_codes(codes, sizes)
    reference = reference_beam_search(model, prompts, codes, vocabulary, beam, top_k, tokenizer.pad_token_id, tokenizer.eos_token_id)
    for share in (True, False):  # shared prompt cache, plain per-beam HF cache
        fast = constrained_beam_search(model, prompts, trie, vocabulary, beam, top_k, tokenizer.pad_token_id, share_prompt_cache=share)
        assert fast.items.shape == (len(prompts), top_k)
        assert torch.equal(fast.items, reference.items), share
        torch.testing.assert_close(fast.scores, reference.scores, rtol=0, atol=1e-4)
        # the users do not all get the same list (the test would be weak otherwise)
        assert len({tuple(row) for row in fast.items.tolist()}) > 1
        check_recommendations(fast.items, num_items)
        assert (fast.items >= 0).all() and torch.isfinite(fast.scores).all()
        assert (fast.scores[:, 1:] <= fast.scores[:, :-1]).all()  # best first


def exhaustive_code_scores(model, prompt, codes: np.ndarray, vocabulary) -> torch.Tensor:
    """Sum over levels of log-softmax over that level's code tokens only, by teacher forcing: (I,)."""
    answers = torch.stack([vocabulary.level_token_ids[level][torch.as_tensor(codes[:, level])] for level in range(codes.shape[1])], 1)
    inputs = torch.cat([torch.tensor(prompt).expand(len(codes), -1), answers], dim=1)  # (I, T + L)
    with torch.no_grad():
        logits = model(input_ids=inputs).logits.float()  # (I, T + L, V)
    start = len(prompt) - 1
    total = torch.zeros(len(codes))
    for level in range(codes.shape[1]):
        level_logits = logits[:, start + level][:, vocabulary.level_token_ids[level]]  # (I, K_level): the full head, sliced
        total += level_logits.log_softmax(-1).gather(1, torch.as_tensor(codes[:, level])[:, None])[:, 0]
    return total


@pytest.mark.parametrize(("num_items", "sizes", "beam", "top_k"), [(40, (4, 5, 6), 8, 5), (12, (3, 3, 3), 20, 10)])
def test_code_normalisation_matches_hf_generate_and_teacher_forcing(num_items, sizes, beam, top_k):
    """Scores normalised over each level's code tokens: fast (decoder + code rows only) == HF generate
    with the level renormalisation == exhaustive teacher forcing through the full head; and the
    ranking differs from the full-vocabulary normalisation (else the test could not fail)."""
    model, tokenizer, codes, _, vocabulary, prompts = make_setup(num_items, sizes, seed=num_items + 1)
    with torch.no_grad():  # text tokens get large logits, so that the two normalisations disagree
        model.lm_head.weight[: min(t.min() for t in vocabulary.level_token_ids)].mul_(3.0)
    trie = CodeTrie.from_codes(codes, sizes)
    reference = reference_beam_search(model, prompts, codes, vocabulary, beam, top_k, tokenizer.pad_token_id,
                                      tokenizer.eos_token_id, normalisation="code")
    full = constrained_beam_search(model, prompts, trie, vocabulary, beam, top_k, tokenizer.pad_token_id)
    for share in (True, False):
        fast = constrained_beam_search(model, prompts, trie, vocabulary, beam, top_k, tokenizer.pad_token_id,
                                       share_prompt_cache=share, normalisation="code")
        assert torch.equal(fast.items, reference.items), share
        torch.testing.assert_close(fast.scores, reference.scores, rtol=0, atol=1e-4)
    assert not torch.allclose(fast.scores, full.scores, atol=1e-3)
    wide = constrained_beam_search(model, prompts, trie, vocabulary, num_items, top_k, tokenizer.pad_token_id,
                                   normalisation="code")
    for row, prompt in enumerate(prompts):
        best = exhaustive_code_scores(model, prompt, codes, vocabulary).topk(top_k)
        assert wide.items[row].tolist() == best.indices.tolist()
        torch.testing.assert_close(wide.scores[row], best.values, rtol=0, atol=1e-4)
    # every level's code log-probabilities sum to one over that level: scores are log-probabilities
    assert (wide.scores <= 0).all()


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_shared_prompt_cache_with_grouped_query_attention(kv_heads):
    from alignrec.llm.shared_prefix import supports_shared_prefix

    model, tokenizer, codes, _, vocabulary, prompts = make_setup(40, (4, 5, 6), seed=11, kv_heads=kv_heads)
    assert supports_shared_prefix(model)
    trie = CodeTrie.from_codes(codes, (4, 5, 6))
    shared = constrained_beam_search(model, prompts, trie, vocabulary, 10, 10, tokenizer.pad_token_id, share_prompt_cache=True)
    plain = constrained_beam_search(model, prompts, trie, vocabulary, 10, 10, tokenizer.pad_token_id, share_prompt_cache=False)
    reference = reference_beam_search(model, prompts, codes, vocabulary, 10, 10, tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert torch.equal(shared.items, reference.items) and torch.equal(plain.items, reference.items)
    torch.testing.assert_close(shared.scores, reference.scores, rtol=0, atol=1e-4)
    assert model.config._attn_implementation != "alignrec_shared_prefix"  # switched back after the search
    for row in (0, 3):  # one user alone (a batch of one has its own tensor layouts)
        alone = constrained_beam_search(model, prompts[row : row + 1], trie, vocabulary, 10, 10, tokenizer.pad_token_id, share_prompt_cache=True)
        assert torch.equal(alone.items[0], reference.items[row])


def test_wide_beam_is_exact_and_scores_are_teacher_forced_log_probs():
    # With a beam at least as wide as the number of items no prefix is ever pruned, so beam
    # search must return exactly the top-K of the exhaustive ranking, with the same scores.
    model, tokenizer, codes, _, vocabulary, prompts = make_setup(24, (3, 4, 5), seed=3)
    trie = CodeTrie.from_codes(codes, (3, 4, 5))
    fast = constrained_beam_search(model, prompts, trie, vocabulary, 24, 10, tokenizer.pad_token_id)
    for row, prompt in enumerate(prompts):
        scores = exhaustive_scores(model, prompt, codes, vocabulary)
        best = scores.topk(10)
        assert fast.items[row].tolist() == best.indices.tolist()
        torch.testing.assert_close(fast.scores[row], best.values, rtol=0, atol=1e-4)


def test_batching_and_padding_do_not_change_the_answer():
    model, tokenizer, codes, _, vocabulary, prompts = make_setup(40, (4, 5, 6), seed=5)
    trie = CodeTrie.from_codes(codes, (4, 5, 6))
    together = constrained_beam_search(model, prompts, trie, vocabulary, 10, 10, tokenizer.pad_token_id)
    for row, prompt in enumerate(prompts):
        alone = constrained_beam_search(model, [prompt], trie, vocabulary, 10, 10, tokenizer.pad_token_id)
        assert alone.items[0].tolist() == together.items[row].tolist()
        torch.testing.assert_close(alone.scores[0], together.scores[row], rtol=0, atol=1e-4)


def test_fewer_items_than_top_k_pads_with_minus_one():
    model, tokenizer, codes, _, vocabulary, prompts = make_setup(3, (2, 2), seed=1)
    out = constrained_beam_search(model, prompts[:2], CodeTrie.from_codes(codes, (2, 2)), vocabulary, 5, 5, tokenizer.pad_token_id)
    for row in range(2):
        assert sorted(out.items[row, :3].tolist()) == [0, 1, 2]
        assert out.items[row, 3:].tolist() == [-1, -1]
        assert torch.isinf(out.scores[row, 3:]).all() and torch.isfinite(out.scores[row, :3]).all()
    check_recommendations(out.items, 3)


def test_recommender_fast_and_reference_agree_on_the_tiny_run(tiny_recommender):
    histories = [[0, 1, 2], [5], [7, 8, 9, 10, 11, 3], [23, 22]]
    fast = tiny_recommender.recommend(histories, 10, 12, batch_size=3, method="fast", show_progress=False)
    reference = tiny_recommender.recommend(histories, 10, 12, batch_size=4, method="reference", show_progress=False)
    assert torch.equal(fast.items, reference.items)
    torch.testing.assert_close(fast.scores, reference.scores, rtol=0, atol=1e-4)


def test_prompt_ids_are_built_like_training(tiny_recommender):
    codes = tiny_recommender.codes
    expected = encode_prompt(tiny_recommender.tokenizer, sequential_prompt([codes.item_string(4), codes.item_string(1)]))
    assert tiny_recommender.prompt_ids([4, 1]) == expected
    # the code tokens are single tokens inside the prompt
    for level in range(codes.num_levels):
        assert int(tiny_recommender.vocabulary.level_token_ids[level][codes.codes[4, level]]) in expected


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError):
        left_pad([[1], []], 0)


def test_missing_code_tokens_are_a_clear_error():
    _, tokenizer = build_tiny_backbone(code_tokens=ItemCodes(np.array([[0, 0]]), [2, 2]).vocabulary())
    with pytest.raises(InputError, match=r"no token for 2 item code\(s\) \(first: <a_2>\)"):
        CodeVocabulary.from_tokenizer(tokenizer, [4, 2])


def test_bad_beam_settings():
    model, tokenizer, codes, _, vocabulary, prompts = make_setup(5, (2, 3), seed=0)
    with pytest.raises(ValueError, match="top_k <= beam_size"):
        constrained_beam_search(model, prompts, CodeTrie.from_codes(codes, (2, 3)), vocabulary, 3, 4, 0)


@pytest.mark.parametrize(
    ("items", "message"),
    [([[0, 1, 1]], "same item twice"), ([[0, 9, 1]], "outside the catalogue"), ([[0, -1, 1]], "gap")],
)
def test_check_recommendations_catches_invalid_lists(items, message):
    with pytest.raises(AssertionError, match=message):
        check_recommendations(torch.tensor(items), 5)
    check_recommendations(torch.tensor([[0, 1, -1]]), 5)


@pytest.mark.parametrize("share", [True, False])
def test_exclusion_gives_the_best_allowed_items_and_spends_no_beam_on_excluded_ones(share):
    """With exclusion, the wide search returns exactly the best K *allowed* items of the exhaustive
    ranking (no excluded item, no hole); a narrow search still returns K allowed items; and
    whole excluded subtrees (every item under a first-level code) are never entered."""
    num_items, sizes, top_k = 40, (4, 5, 6), 8
    model, tokenizer, codes, _, vocabulary, prompts = make_setup(num_items, sizes, seed=17)
    trie = CodeTrie.from_codes(codes, sizes)
    plain = constrained_beam_search(model, prompts, trie, vocabulary, num_items, top_k, tokenizer.pad_token_id)
    # user 0: its plain top 3; user 1: every item under its best item's first code (a whole subtree);
    # user 2: nothing; users 3, 4: a random half of the catalogue
    rng = np.random.default_rng(0)
    subtree = set(np.nonzero(codes[:, 0] == codes[int(plain.items[1, 0]), 0])[0].tolist())
    exclude = [set(plain.items[0, :3].tolist()), subtree, set(),
               set(rng.choice(num_items, 20, replace=False).tolist()), set(rng.choice(num_items, 20, replace=False).tolist())]
    wide = constrained_beam_search(model, prompts, trie, vocabulary, num_items, top_k, tokenizer.pad_token_id,
                                   share_prompt_cache=share, exclude=exclude)
    for row, prompt in enumerate(prompts):
        scores = exhaustive_scores(model, prompt, codes, vocabulary)
        scores[sorted(exclude[row])] = float("-inf")
        best = scores.topk(top_k)
        assert wide.items[row].tolist() == best.indices.tolist(), row
        torch.testing.assert_close(wide.scores[row], best.values, rtol=0, atol=1e-4)
    assert wide.items[2].tolist() == plain.items[2].tolist()  # no exclusion: the plain list
    assert wide.items[0, :top_k - 3].tolist() == plain.items[0, 3:].tolist()  # the next ones move up
    # A beam as narrow as the list: filtering a finished top-K would leave holes; here every slot is an allowed item.
    narrow = constrained_beam_search(model, prompts, trie, vocabulary, top_k, top_k, tokenizer.pad_token_id,
                                     share_prompt_cache=share, exclude=exclude)
    for row in range(len(prompts)):
        items = narrow.items[row].tolist()
        assert -1 not in items and not set(items) & exclude[row]
        assert torch.isfinite(narrow.scores[row]).all()
    # the first-level prefix of user 1's excluded subtree is dead for user 1 only
    masks = trie.excluded_nodes(torch.tensor([[i in subtree for i in range(num_items)], [False] * num_items]))
    first = int(trie.item_prefix[0][next(iter(subtree))])
    assert masks[0][0].nonzero().flatten().tolist() == [first] and not masks[0][1].any()
    assert masks[1][0].sum() == sum(1 for p in range(len(trie.leaves[1])) if trie.leaves[1][p] > 0 and all(
        int(trie.item_prefix[0][i]) == first for i in np.nonzero(trie.item_prefix[1].numpy() == p)[0]))


def test_exclusion_of_everything_but_two_items_pads_the_list():
    model, tokenizer, codes, _, vocabulary, prompts = make_setup(12, (3, 4), seed=2)
    trie = CodeTrie.from_codes(codes, (3, 4))
    exclude = [set(range(12)) - {4, 9}] * len(prompts)
    out = constrained_beam_search(model, prompts, trie, vocabulary, 6, 5, tokenizer.pad_token_id, exclude=exclude)
    for row in out.items.tolist():
        assert sorted(row[:2]) == [4, 9] and row[2:] == [-1, -1, -1]
    with pytest.raises(ValueError, match="excluded item indices"):
        constrained_beam_search(model, prompts[:1], trie, vocabulary, 6, 5, tokenizer.pad_token_id, exclude=[{12}])
