"""The item head: the catalogue lookup, its loss against a brute-force softmax, the fusion on a
hand-computed case, and the rankers of the recommender against scoring every item by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
from finetune_helpers import cyclic_codes, tiny_backbone  # noqa: E402

from alignrec.errors import InputError  # noqa: E402
from alignrec.finetune.config import FinetuneConfig  # noqa: E402
from alignrec.finetune.data import PaddingCollator  # noqa: E402
from alignrec.finetune.recipe import CodeOnlyLoss, prepare_model  # noqa: E402
from alignrec.llm.finetuned import ModelSettings  # noqa: E402
from alignrec.llm.format import IGNORE_INDEX, DENSE_INSTRUCTION, encode_prompt  # noqa: E402
from alignrec.llm.item_head import (  # noqa: E402
    ItemCatalogue,
    ItemResidual,
    attach_item_residual,
    beam_scores_of_items,
    fuse,
    item_boundaries,
    item_residual_of,
    top_items,
)
from alignrec.llm.recommender import GenerativeRecommender  # noqa: E402
from alignrec.llm.tiny import build_tiny_backbone  # noqa: E402
from alignrec.llm.tiny_run import random_unique_codes  # noqa: E402
from alignrec.llm.vocab import CodeVocabulary  # noqa: E402
from alignrec.tokenizer.codes import ItemCodes  # noqa: E402


def test_catalogue_finds_every_item_and_nothing_else() -> None:
    codes = random_unique_codes(20, [4, 3, 5], seed=3)
    catalogue = ItemCatalogue(codes, [4, 3, 5])
    assert catalogue.lookup(torch.as_tensor(codes)).tolist() == list(range(20))
    taken = {tuple(row) for row in codes.tolist()}
    missing = next((a, b, c) for a in range(4) for b in range(3) for c in range(5) if (a, b, c) not in taken)
    assert catalogue.lookup(torch.tensor([missing, codes[7].tolist()])).tolist() == [-1, 7]
    with pytest.raises(InputError, match="collisions"):
        ItemCatalogue(np.array([[0, 1], [0, 1]]), [2, 2])


def test_boundaries_are_whole_items_in_level_order() -> None:
    codes = cyclic_codes()  # item i = (i // 4, i % 4), levels of sizes 6 and 4
    vocabulary = CodeVocabulary.build([list(range(100, 106)), list(range(200, 204))], 300)
    catalogue = ItemCatalogue(codes.codes, codes.codebook_sizes)
    x = IGNORE_INDEX
    labels = torch.tensor([
        # prompt, item 9 = (2, 1), item 22 = (5, 2), then a lone level-0 code at the end (not an item)
        [x, x, 102, 201, 105, 202, 103],
        # a text token, then level 1 before level 0 (not an item), then item 4 = (1, 0)
        [x, 7, 201, 101, 200, x, x],
    ])
    rows, positions, items = item_boundaries(labels, vocabulary, catalogue)
    # position p predicts labels[:, p + 1]
    assert list(zip(rows.tolist(), positions.tolist(), items.tolist())) == [(0, 1, 9), (0, 3, 22), (1, 2, 4)]


def brute_force_item_loss(model, vocabulary, codes: ItemCodes, hidden, labels) -> torch.Tensor:
    """The catalogue cross-entropy at every whole item of the labels, one position at a time."""
    weight = model.get_output_embeddings().weight  # peft's merged matrix: the trained code rows in place
    vectors = torch.stack([sum(weight[vocabulary.level_token_ids[l][c]] for l, c in enumerate(row))
                           for row in codes.codes.tolist()])  # (N, D)
    bias = torch.zeros(len(vectors))
    residual = item_residual_of(model)
    if residual is not None:  # the adapter's trained copy: a vector and a bias per item
        vectors = vectors + residual.modules_to_save["default"].vectors
        bias = residual.modules_to_save["default"].bias
    item_of = {tuple(row): i for i, row in enumerate(codes.codes.tolist())}
    total = hidden.new_zeros(())
    levels = codes.num_levels
    for b in range(labels.shape[0]):
        for p in range(labels.shape[1] - levels):
            tokens = labels[b, p + 1 : p + 1 + levels].tolist()
            found = [int(vocabulary.level_of[t]) if t >= 0 else -9 for t in tokens]
            if found != list(range(levels)):
                continue
            item = item_of[tuple(int(vocabulary.code_of[t]) for t in tokens)]
            total = total + F.cross_entropy((hidden[b, p] @ vectors.T + bias)[None], torch.tensor([item]))
    return total


@pytest.mark.parametrize("tied, residual", [(False, False), (True, False), (False, True), (True, True)])
def test_item_loss_adds_the_weighted_catalogue_softmax_with_its_gradients(tied: bool, residual: bool) -> None:
    codes = cyclic_codes()
    config = FinetuneConfig(lora_dropout=0.0, item_loss_weight=0.5, item_residual=residual)
    prepared = prepare_model(config, codes, backbone=tiny_backbone(tied=tied))
    model, tokenizer, vocabulary = prepared.model, prepared.tokenizer, prepared.vocabulary
    if residual:  # peft trains a copy of it (modules_to_save); the frozen original stays zero
        wrapper = item_residual_of(model)
        assert wrapper.modules_to_save["default"].vectors.requires_grad
        assert not wrapper.original_module.vectors.requires_grad
    with torch.no_grad():  # trained rows differ from the base matrix: the head must read the trained ones
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    ids = tokenizer.convert_tokens_to_ids
    item_9, item_22, item_4 = ids(["<a_2>", "<b_1>"]), ids(["<a_5>", "<b_2>"]), ids(["<a_1>", "<b_0>"])
    features = [
        {"input_ids": [1, 5, *item_9, *item_22], "labels": [IGNORE_INDEX, IGNORE_INDEX, *item_9, *item_22]},
        {"input_ids": [1, 7, *item_4, 2], "labels": [IGNORE_INDEX, IGNORE_INDEX, *item_4, 2]},
    ]
    batch = PaddingCollator(0, hidden_states=True)(features)
    labels = batch.pop("labels")
    trainable = [p for p in model.parameters() if p.requires_grad]
    catalogue = ItemCatalogue(codes.codes, codes.codebook_sizes)

    outputs = model(**batch)
    plain = CodeOnlyLoss(model, vocabulary)(outputs, labels, num_items_in_batch=7)
    with_head = CodeOnlyLoss(model, vocabulary, catalogue, item_loss_weight=0.5)(outputs, labels, num_items_in_batch=7)
    reference = brute_force_item_loss(model, vocabulary, codes, outputs.hidden_states[-1], labels)
    torch.testing.assert_close(with_head - plain, 0.5 * reference / 7, atol=1e-5, rtol=1e-5)
    got = torch.autograd.grad(with_head - plain, trainable, retain_graph=True, allow_unused=True)
    if residual:  # the residual learns from the item loss, and only from it
        copy = item_residual_of(model).modules_to_save["default"]
        named = dict(zip([id(p) for p in trainable], got))
        assert named[id(copy.vectors)].abs().sum() > 0 and named[id(copy.bias)].abs().sum() > 0
        code_loss_grads = torch.autograd.grad(plain, [copy.vectors, copy.bias], allow_unused=True, retain_graph=True)
        assert all(g is None or not g.any() for g in code_loss_grads)
    want = torch.autograd.grad(0.5 * reference / 7, trainable, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in got)
    for g, w in zip(got, want, strict=True):
        if g is None or w is None:
            assert (g is None or not g.any()) and (w is None or not w.any())
        else:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_fuse_on_a_hand_computed_case() -> None:
    item_log_probs = torch.log(torch.tensor([[0.1, 0.4, 0.3, 0.2]]))
    beam_items, beam_scores = torch.tensor([[2, 0, -1]]), torch.tensor([[-1.0, -3.0, float("-inf")]])
    # item 2 and 0 reached by the beam; items 1 and 3 count the lowest beam score, -3
    assert beam_scores_of_items(beam_items, beam_scores, 4).tolist() == [[-3.0, -3.0, -1.0, -3.0]]
    # weight 1: log 0.1 - 3 = -5.30, log 0.4 - 3 = -3.92, log 0.3 - 1 = -2.20, log 0.2 - 3 = -4.61
    items, scores = fuse(item_log_probs, beam_items, beam_scores, 1.0, 4)
    assert items.tolist() == [[2, 1, 3, 0]]
    torch.testing.assert_close(scores, torch.log(torch.tensor([[0.3, 0.4, 0.2, 0.1]])) + torch.tensor([[-1.0, -3, -3, -3]]))
    # weight 0.1: the head decides (log 0.4 - 0.3 > log 0.3 - 0.1)
    assert fuse(item_log_probs, beam_items, beam_scores, 0.1, 2)[0].tolist() == [[1, 2]]
    # exclusion: never listed; a short list is padded
    items, scores = top_items(item_log_probs, 4, torch.tensor([[False, True, True, False]]))
    assert items.tolist() == [[3, 0, -1, -1]] and scores[0, 2:].tolist() == [float("-inf")] * 2


def recommender_for(ranker: str, fusion_weight: float = 0.0, seed: int = 0) -> GenerativeRecommender:
    codes = ItemCodes(random_unique_codes(30, [4, 4, 4], seed=seed), [4, 4, 4])
    model, tokenizer = build_tiny_backbone(words=DENSE_INSTRUCTION.split(), code_tokens=codes.vocabulary(), seed=seed)
    settings = ModelSettings(head="code", sequential_format="dense", item_loss_weight=1.0, ranker=ranker,
                             fusion_weight=fusion_weight)
    return GenerativeRecommender(model, tokenizer, codes, settings=settings)


def hand_item_log_probs(recommender: GenerativeRecommender, history: list[int],
                        residual: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Every item's head score for one history, from the model's hidden states of the unpadded prompt;
    ``residual`` = (vectors, bias) of the model's item residual, for the items it covers."""
    model, vocabulary = recommender.model, recommender.vocabulary
    prompt = torch.tensor([recommender.prompt_ids(history)])
    with torch.no_grad():
        hidden = model(input_ids=prompt, output_hidden_states=True).hidden_states[-1][0, -1]
        weight = model.get_output_embeddings().weight
        vectors = torch.stack([sum(weight[vocabulary.level_token_ids[l][c]] for l, c in enumerate(row))
                               for row in recommender.codes.codes.tolist()])
        logits = hidden @ vectors.T
        if residual is not None:
            covered = len(residual[1])
            logits[:covered] += hidden @ residual[0].T + residual[1]
    return torch.log_softmax(logits, dim=-1)


def test_item_ranker_is_the_exact_catalogue_ranking_with_exclusion() -> None:
    recommender = recommender_for("item")
    histories = [[3, 7, 1], [12], [5, 6, 7, 8, 9, 10]]
    exclude = [{4, 11}, set(), {0}]
    output = recommender.recommend(histories, 8, 8, batch_size=2, show_progress=False, exclude=exclude)
    for row, history in enumerate(histories):
        scores = hand_item_log_probs(recommender, history)
        scores[list(exclude[row])] = float("-inf")
        want = scores.topk(8)
        assert output.items[row].tolist() == want.indices.tolist()
        torch.testing.assert_close(output.scores[row], want.values, atol=1e-5, rtol=1e-5)


def test_item_residual_joins_the_code_sums_and_items_registered_later_have_none() -> None:
    recommender = recommender_for("item")
    generator = torch.Generator().manual_seed(5)
    residual = ItemResidual(27, recommender.model.config.hidden_size)  # items 27..29 came after fine-tuning
    with torch.no_grad():
        residual.vectors.copy_(torch.randn(residual.vectors.shape, generator=generator))
        residual.bias.copy_(torch.randn(27, generator=generator))
    before = recommender.catalogue.vectors(recommender.model, recommender.vocabulary)[0].clone()
    attach_item_residual(recommender.model, residual)
    vectors, bias = recommender.catalogue.vectors(recommender.model, recommender.vocabulary)
    torch.testing.assert_close(vectors[:27], before[:27] + residual.vectors)
    torch.testing.assert_close(vectors[27:], before[27:])  # the code sums alone
    assert bias[:27].tolist() == residual.bias.tolist() and bias[27:].tolist() == [0.0] * 3
    histories = [[3, 7, 1], [28, 2]]
    output = recommender.recommend(histories, 30, 8, batch_size=2, show_progress=False)
    for row, history in enumerate(histories):
        want = hand_item_log_probs(recommender, history, (residual.vectors, residual.bias)).topk(30)
        assert output.items[row].tolist() == want.indices.tolist()
        torch.testing.assert_close(output.scores[row], want.values, atol=1e-5, rtol=1e-5)
    attach_item_residual(recommender.model, ItemResidual(31, recommender.model.config.hidden_size))
    with pytest.raises(InputError, match="residual has 31 items but the catalogue only 30"):
        recommender.catalogue.vectors(recommender.model, recommender.vocabulary)


def test_fused_ranker_rescores_the_beam_with_the_head() -> None:
    recommender = recommender_for("fused", fusion_weight=0.5)
    histories = [[3, 7, 1], [12, 2]]
    fused = recommender.recommend(histories, 5, 6, batch_size=2, show_progress=False)
    beam = recommender.recommend(histories, 6, 6, batch_size=2, show_progress=False, ranker="beam")
    for row, history in enumerate(histories):
        items, _ = fuse(hand_item_log_probs(recommender, history)[None], beam.items[row : row + 1],
                        beam.scores[row : row + 1], 0.5, 5)
        assert fused.items[row].tolist() == items[0].tolist()
    # the encode path of the prompt is the one training uses
    assert recommender.prompt_ids([3])[: len(encode_prompt(recommender.tokenizer, DENSE_INSTRUCTION))] == \
        encode_prompt(recommender.tokenizer, DENSE_INSTRUCTION)


def test_head_rankers_need_a_model_trained_with_the_head() -> None:
    recommender = recommender_for("beam")
    recommender.settings = ModelSettings(head="code", sequential_format="dense")
    with pytest.raises(InputError, match="needs a model fine-tuned with the item head"):
        recommender.recommend([[1, 2]], 5, 5, show_progress=False, ranker="item")
    with pytest.raises(InputError, match="ranker 'best'"):
        recommender.recommend([[1, 2]], 5, 5, show_progress=False, ranker="best")
    with pytest.raises(ValueError, match="needs the item head"):
        FinetuneConfig(ranker="fused")
    with pytest.raises(ValueError, match="needs head: code"):
        FinetuneConfig(item_loss_weight=1.0, head="full")
    with pytest.raises(ValueError, match="item_residual needs the item head"):
        FinetuneConfig(item_residual=True)
