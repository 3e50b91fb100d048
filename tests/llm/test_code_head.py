"""The code-only loss against its definition: full-vocabulary cross-entropy with every logit
outside the label's level set to -inf (text labels: plain full-vocabulary cross-entropy)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
from finetune_helpers import cyclic_codes, tiny_backbone  # noqa: E402

from alignrec.llm.code_head import code_only_loss, output_rows  # noqa: E402
from alignrec.llm.vocab import CodeVocabulary  # noqa: E402
from alignrec.llm.format import IGNORE_INDEX  # noqa: E402
from alignrec.finetune.config import FinetuneConfig  # noqa: E402
from alignrec.finetune.data import PaddingCollator  # noqa: E402
from alignrec.finetune.recipe import CodeOnlyLoss, prepare_model  # noqa: E402


def masked_full_loss(logits: torch.Tensor, labels: torch.Tensor, vocabulary: CodeVocabulary) -> torch.Tensor:
    """The reference: per supervised position, CE over the full logits with disallowed ones at -inf."""
    total = logits.new_zeros(())
    count = 0
    for row in range(labels.shape[0]):
        for position in range(labels.shape[1] - 1):
            target = int(labels[row, position + 1])
            if target == IGNORE_INDEX:
                continue
            scores = logits[row, position].float().clone()
            level = int(vocabulary.level_of[target])
            if level >= 0:  # a code label: only its level's code tokens stay
                allowed = torch.zeros_like(scores, dtype=torch.bool)
                allowed[vocabulary.level_token_ids[level]] = True
                scores = scores.masked_fill(~allowed, float("-inf"))
            total = total + F.cross_entropy(scores[None], torch.tensor([target]))
            count += 1
    return total / count


def _perturb(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("tied", [False, True])
def test_restricted_loss_equals_masked_full_loss_with_its_gradients(tied: bool) -> None:
    codes = cyclic_codes()
    prepared = prepare_model(FinetuneConfig(lora_dropout=0.0), codes, backbone=tiny_backbone(tied=tied))
    model, tokenizer = prepared.model, prepared.tokenizer
    _perturb(model)  # trained code rows differ from the base matrix: the loss must read the trained ones
    vocabulary = prepared.vocabulary  # the one the job builds
    a0, b1, a3, b2 = tokenizer.convert_tokens_to_ids(["<a_0>", "<b_1>", "<a_3>", "<b_2>"])
    text = tokenizer.convert_tokens_to_ids(["item"])[0]
    features = [  # code labels of both levels and a text label (which keeps the full head)
        {"input_ids": [1, 5, a0, b1, a3, b2], "labels": [IGNORE_INDEX, IGNORE_INDEX, a0, b1, a3, b2]},
        {"input_ids": [1, 7, text, a3], "labels": [IGNORE_INDEX, IGNORE_INDEX, text, a3]},
    ]
    batch = PaddingCollator(0, hidden_states=True)(features)
    labels = batch.pop("labels")
    trainable = [p for p in model.parameters() if p.requires_grad]

    reference = masked_full_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                 labels, vocabulary)
    reference_grads = torch.autograd.grad(reference, trainable)
    restricted = CodeOnlyLoss(model, vocabulary)(model(**batch), labels)
    grads = torch.autograd.grad(restricted, trainable)
    torch.testing.assert_close(restricted, reference, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, reference_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # the restriction matters: the plain full-vocabulary loss is larger (text tokens compete there)
    plain = F.cross_entropy(model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits[:, :-1].reshape(-1, len(tokenizer)),
                            labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    assert plain > restricted + 0.1
    # the Trainer's token count divides the summed loss (gradient accumulation / DDP)
    torch.testing.assert_close(CodeOnlyLoss(model, vocabulary)(model(**batch), labels, num_items_in_batch=14),
                               reference * 6 / 14, atol=1e-5, rtol=1e-5)  # 6 supervised labels


def test_output_rows_read_the_trained_rows_not_the_base_matrix() -> None:
    codes = cyclic_codes()
    prepared = prepare_model(FinetuneConfig(lora_dropout=0.0), codes, backbone=tiny_backbone(tied=False))
    model = prepared.model
    ids = torch.tensor(prepared.code_token_ids[:3])
    _perturb(model)
    rows, bias = output_rows(model, ids)
    merged_weight = model.get_output_embeddings().weight  # peft's merged matrix (a full copy)
    torch.testing.assert_close(rows, merged_weight[ids])
    base = model.get_output_embeddings().token_adapter.base_layer.weight
    assert not torch.allclose(rows, base[ids])
    assert bias is None
    assert rows.requires_grad  # gradients reach the trainable rows


def test_parts_count_code_and_text_positions() -> None:
    vocabulary = CodeVocabulary.build([torch.tensor([10, 11]), torch.tensor([12, 13, 14])], 16)
    assert vocabulary.level_of.tolist()[9:15] == [-1, 0, 0, 1, 1, 1]
    assert vocabulary.code_of.tolist()[9:15] == [-1, 0, 1, 0, 1, 2]

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 16, bias=False)

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.linear

    head = Head()
    hidden = torch.randn(1, 4, 4)
    labels = torch.tensor([[IGNORE_INDEX, 10, 13, 3]])
    parts = code_only_loss(head, vocabulary, hidden, labels)
    assert (parts.count, parts.code_positions) == (3, 2)
    logits = head.linear(hidden[0, :3])
    want = (F.cross_entropy(logits[0, 10:12][None], torch.tensor([0]), reduction="sum")
            + F.cross_entropy(logits[1, 12:15][None], torch.tensor([1]), reduction="sum")
            + F.cross_entropy(logits[2][None], torch.tensor([3]), reduction="sum"))
    torch.testing.assert_close(parts.total, want)
