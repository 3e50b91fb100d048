"""New code-token rows: default, SA-Init (known means), MLP projection (Table 7 ablation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alignrec.errors import InputError
from alignrec.llm.init import InitInputs, initialise_new_tokens, read_codebooks
from alignrec.llm.tiny import build_tiny_llama, build_tiny_tokenizer
from alignrec.llm.vocab import add_code_tokens
from alignrec.tokenizer.codes import ItemCodes

CODES = ItemCodes(np.array([[0, 0], [0, 1], [1, 0]]), [2, 2])
TOKENS = CODES.vocabulary()  # <a_0> <a_1> <b_0> <b_1>


def backbone(tied: bool) -> tuple[torch.nn.Module, object, list[int]]:
    tokenizer = build_tiny_tokenizer(["guitar", "drum", "piano", "loud", "red"])
    model = build_tiny_llama(len(tokenizer), hidden_size=16, tie_word_embeddings=tied, seed=1)
    ids = add_code_tokens(tokenizer, model, TOKENS)
    return model, tokenizer, ids


def row(matrix: torch.Tensor, tokenizer: object, word: str) -> torch.Tensor:
    return matrix[tokenizer.convert_tokens_to_ids(word)]  # type: ignore[attr-defined]


def test_default_keeps_the_resize_rows() -> None:
    model, tokenizer, ids = backbone(tied=False)
    before = model.get_input_embeddings().weight[ids].clone()
    report = initialise_new_tokens("default", model, tokenizer, InitInputs(TOKENS, ids))
    assert report == {"method": "default", "initialised": 0}
    assert torch.equal(model.get_input_embeddings().weight[ids], before)
    # transformers' mean resizing: every new row is (almost exactly) the mean pretrained row
    old = model.get_input_embeddings().weight[: ids[0]]
    torch.testing.assert_close(before, old.mean(0).expand_as(before), atol=1e-3, rtol=0)


@pytest.mark.parametrize("tied", [False, True])
def test_sa_init_is_the_mean_of_keyword_embeddings(tmp_path: Path, tied: bool) -> None:
    model, tokenizer, ids = backbone(tied)
    path = tmp_path / "code_descriptions.json"
    path.write_text(json.dumps({
        "<a_0>": {"level": 0, "code": 0, "items": 2, "keywords": ["guitar", "drum"], "description": "x"},
        "<a_1>": {"level": 0, "code": 1, "items": 1, "keywords": ["piano guitar", "red"], "description": "y"},
        "<b_0>": {"level": 1, "code": 0, "items": 2, "keywords": [], "description": "z"},
    }))
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings().weight
    untouched = embedding[ids[2:]].clone()
    expected = {}
    for matrix_name, matrix in (("in", embedding), ("out", output)):
        e = {w: row(matrix, tokenizer, w).detach().clone() for w in ("guitar", "drum", "piano", "red")}
        expected[matrix_name] = ((e["guitar"] + e["drum"]) / 2, ((e["piano"] + e["guitar"]) / 2 + e["red"]) / 2)
    report = initialise_new_tokens("sa_init", model, tokenizer, InitInputs(TOKENS, ids, code_descriptions=path))
    assert report["initialised"] == 2 and report["without_keywords"] == 2  # <b_0> (no keywords), <b_1> (absent)
    assert report["output_rows"] is (not tied)
    torch.testing.assert_close(embedding[ids[0]], expected["in"][0])
    torch.testing.assert_close(embedding[ids[1]], expected["in"][1])
    torch.testing.assert_close(embedding[ids[2:]], untouched)
    if not tied:
        torch.testing.assert_close(output[ids[0]], expected["out"][0])
        torch.testing.assert_close(output[ids[1]], expected["out"][1])
    else:
        assert output.data_ptr() == embedding.data_ptr()


def test_sa_init_without_descriptions_is_a_clear_error(tmp_path: Path) -> None:
    model, tokenizer, ids = backbone(False)
    with pytest.raises(InputError, match="sa_init needs the cluster keywords.*code_descriptions.json"):
        initialise_new_tokens("sa_init", model, tokenizer,
                              InitInputs(TOKENS, ids, code_descriptions=tmp_path / "code_descriptions.json"))


def write_codebooks(path: Path, **tensors: torch.Tensor) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


def test_mlp_init_errors_name_file_and_keys(tmp_path: Path) -> None:
    model, tokenizer, ids = backbone(False)
    inputs = InitInputs(TOKENS, ids, codebooks=tmp_path / "codebooks.safetensors", item_codes=CODES)
    with pytest.raises(InputError, match="codebooks.safetensors not found"):
        initialise_new_tokens("mlp", model, tokenizer, inputs)
    write_codebooks(tmp_path / "codebooks.safetensors", centroids=torch.zeros(2, 4))
    with pytest.raises(InputError, match=r"expected keys codebook\.0\.\.codebook\.1.*found \['centroids'\]"):
        initialise_new_tokens("mlp", model, tokenizer, inputs)
    write_codebooks(tmp_path / "codebooks.safetensors", codebook_0=torch.zeros(2, 4), codebook_1=torch.zeros(1, 4))
    with pytest.raises(InputError, match=r"level 1: expected \(2, d\)"):
        initialise_new_tokens("mlp", model, tokenizer, inputs)
    with pytest.raises(InputError, match="unknown new-token init"):
        initialise_new_tokens("copy", model, tokenizer, inputs)


def test_read_codebooks_accepts_a_stacked_tensor(tmp_path: Path) -> None:
    stacked = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    books = read_codebooks(write_codebooks(tmp_path / "c.safetensors", codebooks=stacked), [3, 2])
    assert [tuple(b.shape) for b in books] == [(3, 4), (3, 4)]
    assert torch.equal(books[1], stacked[1])


@pytest.mark.parametrize("layers", [2, 3])
def test_mlp_init_sets_rows_on_the_pretrained_scale(tmp_path: Path, layers: int) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = {"codebook.0": torch.randn(2, 4, generator=generator), "codebook.1": torch.randn(2, 4, generator=generator),
               "input.mean": torch.zeros(4)}  # the tokenizer stage's key names (other tensors are ignored)
    path = write_codebooks(tmp_path / "codebooks.safetensors", **tensors)
    texts = ["loud red guitar", "red drum", "piano"]
    results = []
    for steps in (1, 100, 100):
        model, tokenizer, ids = backbone(False)
        inputs = InitInputs(TOKENS, ids, codebooks=path, item_codes=CODES, item_texts=texts, mlp_layers=layers,
                            mlp_hidden=8, mlp_steps=steps, seed=3)
        report = initialise_new_tokens("mlp", model, tokenizer, inputs)
        embedding = model.get_input_embeddings().weight
        results.append((report, embedding[ids].detach().clone()))
        target = embedding[: ids[0]].norm(dim=1).mean()
        torch.testing.assert_close(embedding[ids].norm(dim=1), target.expand(4), rtol=1e-4, atol=1e-5)
        assert report["initialised"] == 4 and report["fitted_on_items"] == 3 and report["layers"] == layers
    assert results[1][0]["final_mse"] < results[0][0]["final_mse"]  # fitting to the text embeddings helps
    assert torch.equal(results[1][1], results[2][1])  # seeded


def test_mlp_init_without_text_is_a_random_projection(tmp_path: Path) -> None:
    path = write_codebooks(tmp_path / "codebooks.safetensors", codebooks=torch.randn(2, 2, 4))
    model, tokenizer, ids = backbone(False)
    report = initialise_new_tokens("mlp", model, tokenizer, InitInputs(TOKENS, ids, codebooks=path, item_codes=CODES))
    assert report["fitted_on_items"] == 0
    rows = model.get_input_embeddings().weight[ids]
    assert torch.linalg.matrix_rank(rows) == 4  # distinct codebook vectors -> distinct rows
