"""Distillation into the item head: the teacher's soft targets against scoring each history by
hand, the loss against a brute-force soft cross-entropy with its gradients, and the checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from finetune_helpers import NUM_ITEMS, cyclic_codes, tiny_backbone

from alignrec.collab.data import TrainingData
from alignrec.collab.registry import build_model, get_model_spec
from alignrec.data import load_dataset
from alignrec.data.synthetic import write_synthetic
from alignrec.errors import InputError
from alignrec.finetune.config import FinetuneConfig
from alignrec.finetune.data import PaddingCollator
from alignrec.finetune.distill import Teacher, soft_cross_entropy
from alignrec.finetune.recipe import CodeOnlyLoss, prepare_model
from alignrec.llm.format import IGNORE_INDEX
from alignrec.llm.item_head import ItemCatalogue, item_boundaries
from alignrec.llm.vocab import CodeVocabulary

X = IGNORE_INDEX


@pytest.fixture(scope="module")
def cyclic_data(tmp_path_factory) -> TrainingData:
    run = tmp_path_factory.mktemp("distill")
    write_synthetic(run, num_users=20, num_items=NUM_ITEMS, groups=4, length=8, kind="cyclic", seed=0)
    return TrainingData.from_dataset(load_dataset(run))


def untrained(name: str, data: TrainingData, max_len: int):
    spec = get_model_spec(name)
    config = dataclasses.replace(spec.config_class(), embedding_dim=8, max_len=max_len, dropout=0.0)
    torch.manual_seed(0)
    return build_model(name, config, data)


def code_ids(item: int) -> list[int]:
    """The cyclic codes' token ids in the vocabulary below: item i = (i // 4, i % 4) -> (100 + i // 4, 200 + i % 4)."""
    return [100 + item // 4, 200 + item % 4]


VOCABULARY = CodeVocabulary.build([list(range(100, 106)), list(range(200, 204))], 300)


@pytest.mark.parametrize("name, max_len", [("sasrec", 3), ("sasrec", 8), ("fmlp", 3)])
def test_teacher_targets_are_its_scores_of_each_history(cyclic_data, name: str, max_len: int) -> None:
    model = untrained(name, cyclic_data, max_len)
    teacher = Teacher(model, temperature=2.0)
    catalogue = ItemCatalogue(cyclic_codes().codes, [6, 4])
    rows = [
        # a prompt of two text tokens, then items 3, 9, 22, 5, 17: items 9.. are targets (item 3 context only)
        ([1, 7, *code_ids(3), *code_ids(9), *code_ids(22), *code_ids(5), *code_ids(17)],
         [X, X, X, X, *code_ids(9), *code_ids(22), *code_ids(5), *code_ids(17)]),
        # items 4, 13: both supervised; item 4 has nothing before it (no target), then padding
        ([1, 7, *code_ids(4), *code_ids(13)], [X, X, *code_ids(4), *code_ids(13)]),
    ]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [X] * (width - len(lab)) for _, lab in rows])
    boundary_rows, positions, items = item_boundaries(labels, VOCABULARY, catalogue)
    assert items.tolist() == [9, 22, 5, 17, 4, 13]
    probs, keep = teacher.targets(input_ids, boundary_rows, positions, VOCABULARY, catalogue)
    assert keep.tolist() == [True, True, True, True, False, True]
    # the items before each kept target (score() keeps the newest max_len of them, as the teacher must)
    histories = [[3], [3, 9], [3, 9, 22], [3, 9, 22, 5], [4]]
    with torch.no_grad():
        want = torch.cat([F.softmax(model.score(torch.zeros(1), torch.tensor([h])) / 2.0, dim=-1) for h in histories])
    torch.testing.assert_close(probs, want)


def test_teacher_refuses_a_model_without_a_window_distribution(cyclic_data) -> None:
    with pytest.raises(InputError, match="not a sequential model"):
        Teacher(build_model("pop", get_model_spec("pop").config_class(), cyclic_data))
    teacher = Teacher(untrained("sasrec", cyclic_data, 3))
    with pytest.raises(InputError, match="the teacher knows 24 items, the catalogue has 23"):
        teacher.targets(torch.tensor([[1, *code_ids(3), *code_ids(4)]]), torch.tensor([0]), torch.tensor([2]), VOCABULARY,
                        ItemCatalogue(cyclic_codes().codes[:23], [6, 4]))
    with pytest.raises(InputError, match="no config.json"):
        Teacher.load(Path("/nonexistent-run"), data=Path("."))


def test_distillation_adds_the_weighted_soft_cross_entropy_with_its_gradients(cyclic_data) -> None:
    codes = cyclic_codes()
    config = FinetuneConfig(lora_dropout=0.0, item_loss_weight=1.0)
    prepared = prepare_model(config, codes, backbone=tiny_backbone())
    model, tokenizer, vocabulary = prepared.model, prepared.tokenizer, prepared.vocabulary
    ids = tokenizer.convert_tokens_to_ids
    item = {i: ids([f"<a_{i // 4}>", f"<b_{i % 4}>"]) for i in (3, 9, 22, 4)}
    features = [
        {"input_ids": [1, 5, *item[3], *item[9], *item[22]], "labels": [X, X, *item[3], *item[9], *item[22]]},
        {"input_ids": [1, 7, *item[4], *item[9]], "labels": [X, X, X, X, *item[9]]},
    ]
    batch = PaddingCollator(0, hidden_states=True)(features)
    labels = batch.pop("labels")
    catalogue = ItemCatalogue(codes.codes, codes.codebook_sizes)
    teacher = Teacher(untrained("sasrec", cyclic_data, 4), temperature=0.5)
    with torch.no_grad():  # trained rows differ from the base matrix: the head must read the trained ones
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    outputs = model(**batch)
    plain = CodeOnlyLoss(model, vocabulary, catalogue, 1.0)(outputs, labels, num_items_in_batch=9)
    distilled = CodeOnlyLoss(model, vocabulary, catalogue, 1.0, teacher=teacher, distill_weight=0.3)(
        outputs, labels, num_items_in_batch=9, input_ids=batch["input_ids"])

    # by hand: each target with an item before it, its student logits over every item and the teacher's softmax
    weight = model.get_output_embeddings().weight
    vectors = torch.stack([sum(weight[vocabulary.level_token_ids[lv][c]] for lv, c in enumerate(row))
                           for row in codes.codes.tolist()])
    hidden = outputs.hidden_states[-1]
    cases = [(0, 3, [3]), (0, 5, [3, 9]), (1, 3, [4])]  # (row, position predicting the target's first code, history)
    reference = hidden.new_zeros(())
    for row, position, history in cases:
        with torch.no_grad():
            target = F.softmax(teacher.model.score(torch.zeros(1), torch.tensor([history])) / 0.5, dim=-1)[0]
        reference = reference - (target * F.log_softmax(hidden[row, position] @ vectors.T, dim=-1)).sum()
    torch.testing.assert_close(distilled - plain, 0.3 * reference / 9, atol=1e-5, rtol=1e-5)
    trainable = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(distilled - plain, trainable, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(0.3 * reference / 9, trainable, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in got)
    for g, w in zip(got, want, strict=True):
        if g is None or w is None:
            assert (g is None or not g.any()) and (w is None or not w.any())
        else:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    assert not any(p.grad is not None for p in teacher.model.parameters())  # the teacher stays frozen
    with pytest.raises(ValueError, match="needs the batch's input_ids"):
        CodeOnlyLoss(model, vocabulary, catalogue, 1.0, teacher=teacher, distill_weight=0.3)(outputs, labels)


def test_soft_cross_entropy_of_a_one_hot_teacher_is_the_cross_entropy() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    one_hot = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot), F.cross_entropy(logits, torch.tensor([1, 0]), reduction="sum"))


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="distill_weight needs the item head"):
        FinetuneConfig(distill_weight=0.5)
    with pytest.raises(ValueError, match="distill_temperature > 0"):
        FinetuneConfig(item_loss_weight=1.0, distill_weight=0.5, distill_temperature=0.0)
