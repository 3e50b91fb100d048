"""The row-only forward of the trained code rows against peft's own (whole-matrix) forward."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
from finetune_helpers import cyclic_codes, tiny_backbone  # noqa: E402

from alignrec.llm.code_rows import use_row_forward  # noqa: E402
from alignrec.finetune.config import FinetuneConfig  # noqa: E402
from alignrec.finetune.recipe import merge, prepare_model  # noqa: E402


def _trained_model(tied: bool):
    prepared = prepare_model(FinetuneConfig(lora_dropout=0.0), cyclic_codes(), backbone=tiny_backbone(tied=tied))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # trained rows and adapters that differ from the base matrix
        for parameter in prepared.model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return prepared


def _patched(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "_alignrec_peft_forward")]


def _loss_and_grads(model: torch.nn.Module, input_ids: torch.Tensor, targets: torch.Tensor):
    trainable = [p for p in model.parameters() if p.requires_grad]
    logits = model(input_ids=input_ids).logits  # (B, T, V)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1))
    return logits.detach(), loss.detach(), torch.autograd.grad(loss, trainable)


@pytest.mark.parametrize("tied", [False, True])
def test_row_forward_equals_peft_forward_with_its_gradients(tied: bool) -> None:
    prepared = _trained_model(tied)
    model, tokenizer = prepared.model, prepared.tokenizer
    patched = _patched(model)
    assert len(patched) == 2  # the embedding and the output layer (its own rows, or peft's tied twin)
    codes = prepared.code_token_ids
    text = tokenizer.convert_tokens_to_ids(["item", "the"])
    input_ids = torch.tensor([[1, text[0], codes[0], codes[7], codes[2], text[1]],
                              [codes[3], codes[3], text[1], codes[9], 1, codes[0]]])
    targets = torch.tensor([[0, codes[7], codes[2], text[1], codes[5], codes[1]],
                            [0, codes[3], codes[8], text[0], codes[4], codes[0]]])

    fast = _loss_and_grads(model, input_ids, targets)
    for module in patched:  # peft's forward: the whole matrix with the rows copied in
        module.forward = module._alignrec_peft_forward
    reference = _loss_and_grads(model, input_ids, targets)

    torch.testing.assert_close(fast[0], reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast[1], reference[1], atol=1e-6, rtol=1e-6)
    assert len(fast[2]) == len(reference[2]) > 2
    for got, want in zip(fast[2], reference[2]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)  # float summation order differs
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    rows = [g for n, g in zip(names, fast[2]) if "trainable_tokens_delta" in n]
    assert rows and all(g.abs().sum() > 0 for g in rows)  # the code rows learn through the row-only path


def test_row_forward_leaves_disabled_and_merged_models_to_peft() -> None:
    prepared = _trained_model(tied=True)
    model = prepared.model
    assert use_row_forward(model) == 0  # already installed: nothing changes twice
    ids = torch.tensor([[1, prepared.code_token_ids[4], prepared.code_token_ids[8]]])
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        with model.disable_adapter():  # the base model: no LoRA, the code rows as initialised
            base = model(input_ids=ids).logits
        assert not torch.allclose(trained, base)
        embedding = next(m for m in _patched(model) if isinstance(m.base_layer, torch.nn.Embedding))
        with model.disable_adapter():
            torch.testing.assert_close(embedding(ids), embedding.base_layer(ids))
        merged = merge(model)(input_ids=ids).logits  # the merged plain model computes what training saw
    torch.testing.assert_close(merged, trained, atol=1e-5, rtol=1e-5)
