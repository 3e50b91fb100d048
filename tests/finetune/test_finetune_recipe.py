"""Fine-tuning on tiny random Llamas: data collation, LoRA merge, tied embeddings, learning, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_helpers import cyclic_codes, greedy_constrained, tiny_backbone, write_cyclic_run

from alignrec.cli import main
from alignrec.config import ConfigError, from_mapping
from alignrec.data import load_dataset
from alignrec.errors import InputError
from alignrec.llm import load_finetuned
from alignrec.llm.format import IGNORE_INDEX
from alignrec.finetune.config import FinetuneConfig
from alignrec.finetune.data import PaddingCollator, answer_loss, encode_records
from alignrec.finetune.recipe import TRAIN_TIME_FILE, FinetuneJob, merge, prepare_model

FAST = {"lora_dropout": 0.0, "logging_steps": 1, "save_steps": 1000, "warmup_ratio": 0.0, "batch_size": 8}


def test_collator_pads_right_and_masks_labels() -> None:
    batch = PaddingCollator(pad_id=0)([
        {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]},
        {"input_ids": [8], "labels": [8]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert PaddingCollator(0, multiple_of=4)([{"input_ids": [1], "labels": [1]}])["input_ids"].shape == (1, 4)


def test_collator_keeps_only_answer_positions() -> None:
    batch = PaddingCollator(pad_id=0, answer_logits_only=True)([
        {"input_ids": [5, 6, 7, 8], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8]},
        {"input_ids": [9, 4], "labels": [IGNORE_INDEX, 4]},
    ])
    # position p predicts token p + 1: row 0 needs positions 1, 2; row 1 needs position 0
    assert batch["logits_to_keep"].tolist() == [0, 1, 2]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [-100, 4, -100, -100]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 4, 0, 0]]


@pytest.mark.parametrize("tied", [False, True])
def test_answer_only_logits_give_the_full_loss_and_gradients(tied: bool) -> None:
    """Fast path (logits at answer positions) vs reference (the model's own loss over all logits)."""
    from alignrec.llm.tiny import build_tiny_tokenizer
    from alignrec.llm.format import encode_example, sequential_prompt

    codes = cyclic_codes()
    prepared = prepare_model(FinetuneConfig(lora_dropout=0.0), codes, backbone=tiny_backbone(tied=tied))
    model = prepared.model
    _perturb_trainables(model)
    tokenizer = prepared.tokenizer
    assert len(tokenizer) == len(build_tiny_tokenizer()) + 10
    features = [dict(zip(("input_ids", "labels"), encode_example(tokenizer, sequential_prompt(h), a)))
                for h, a in [(["<a_0><b_1>"], "<a_1><b_1>"), (["<a_2><b_0>", "<a_3><b_0>", "<a_4><b_0>"], "<a_5><b_0>"),
                             ([], "long answer <a_0><b_0>")]]
    reference_batch = PaddingCollator(0)(features)
    fast_batch = PaddingCollator(0, answer_logits_only=True)(features)
    assert len(fast_batch["logits_to_keep"]) < reference_batch["input_ids"].shape[1] // 2
    reference = model(**reference_batch).loss
    grads_reference = torch.autograd.grad(reference, [p for p in model.parameters() if p.requires_grad])
    labels = fast_batch.pop("labels")
    fast = answer_loss(model(**fast_batch), labels)
    grads_fast = torch.autograd.grad(fast, [p for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fast, grads_reference):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    items = (labels[:, 1:] != IGNORE_INDEX).sum()
    torch.testing.assert_close(answer_loss(model(**fast_batch), labels, num_items_in_batch=2 * items), reference / 2)


def test_encode_records_masks_prompt_and_drops_long_examples() -> None:
    from alignrec.llm.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(code_tokens=["<a_0>", "<b_1>"])
    records = [{"prompt": "Describe item <a_0><b_1>.", "answer": "<a_0>"},
               {"prompt": "Describe item <a_0><b_1>. " * 20, "answer": "<b_1>"}]
    data = encode_records(tokenizer, records, max_length=10)
    assert len(data) == 1 and data.dropped_too_long == 1
    ids, labels = data[0]["input_ids"], data[0]["labels"]
    # <s> Describe item <a_0> <b_1> .  | <a_0> </s>
    assert len(ids) == 8 and labels[:6] == [IGNORE_INDEX] * 6
    assert labels[6:] == [tokenizer.convert_tokens_to_ids("<a_0>"), tokenizer.eos_token_id]
    assert data.answer_tokens == 2 and data.total_tokens == 8


def _perturb_trainables(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every trainable tensor (LoRA A/B, code rows) random values, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("tied", [False, True])
def test_lora_merged_equals_unmerged_and_reloads(tmp_path: Path, tied: bool) -> None:
    from transformers import AutoModelForCausalLM

    codes = cyclic_codes()
    prepared = prepare_model(FinetuneConfig(lora_dropout=0.0), codes, backbone=tiny_backbone(tied=tied))
    model = prepared.model
    assert prepared.tied_embeddings is tied
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    code_rows = [n for n in trainable if "trainable_tokens_delta" in n]
    # tied: one set of code rows serves input and output; untied: embedding rows + output rows
    assert len(code_rows) == (1 if tied else 2)
    _perturb_trainables(model)
    model.eval()
    ids = torch.tensor([[1, 5, 9, *prepared.code_token_ids[:4], 7]])
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
    merged = merge(model)
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
    torch.testing.assert_close(merged_logits, unmerged, atol=1e-5, rtol=1e-5)
    assert not any("lora" in name or "trainable_tokens" in name for name, _ in merged.named_parameters())
    if tied:
        assert merged.get_output_embeddings().weight.data_ptr() == merged.get_input_embeddings().weight.data_ptr()
    merged.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, unmerged, atol=1e-5, rtol=1e-5)


def test_only_code_rows_and_lora_train() -> None:
    prepared = prepare_model(FinetuneConfig(), cyclic_codes(), backbone=tiny_backbone())
    trainable = {n: p for n, p in prepared.model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "trainable_tokens_delta" in n for n in trainable)
    rows = [p for n, p in trainable.items() if "trainable_tokens_delta" in n]
    assert all(p.shape == (10, 32) for p in rows)  # 6 + 4 code tokens, hidden 32
    off = prepare_model(FinetuneConfig(train_code_tokens=False), cyclic_codes(), backbone=tiny_backbone())
    assert not any("trainable_tokens" in n for n, p in off.model.named_parameters() if p.requires_grad)


def test_finetuning_makes_greedy_constrained_decoding_find_the_next_item(tmp_path: Path) -> None:
    """Cyclic data: the next item is a fixed function of the last one. Train the sequential task,
    then decode greedily under the item trie on the held-out test targets: >= 90% must be right."""
    run = write_cyclic_run(tmp_path / "run")
    # A decaying, moderate rate and enough steps: at 1e-2 the tiny model kept bouncing, so the final
    # accuracy hung on float summation order (200 cosine steps at 1e-2 gave 0.72 on 1 thread and 1.0 on 2
    # threads of the same machine); 400 steps at 3e-3 or 5e-3 gave 1.0 with 1 and 2 threads.
    config = FinetuneConfig(max_steps=400, learning_rate=3e-3, lr_scheduler="cosine", batch_size=16,
                            lora_dropout=0.0, logging_steps=20, save_steps=1000, warmup_ratio=0.0)
    result = FinetuneJob(config, run, backbone=tiny_backbone()).run()
    out = tmp_path / "run" / "finetune"
    for name in ("model/config.json", "model/tokenizer.json", "adapter/adapter_config.json", "item_codes.parquet",
                 "codes_meta.json", "loss_curve.png", "loss_curve.json", "metrics.json", "config.json"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    losses = [e["loss"] for e in json.loads((out / "loss_curve.json").read_text()) if "loss" in e]
    assert losses[-1] < 0.5 * losses[0]
    record = json.loads((out / "config.json").read_text())
    assert record["stage"] == "finetune" and record["config"]["max_steps"] == 400
    assert result.metrics["steps"] == 400 and result.metrics["eval_loss"] is not None

    model, tokenizer, codes = load_finetuned(run)
    assert np.array_equal(codes.codes, cyclic_codes().codes)
    test = load_dataset(run).split("test")
    hits = [greedy_constrained(model, tokenizer, codes, test.history(r).tolist()) == int(test.targets[r])
            for r in range(len(test))]
    assert np.mean(hits) >= 0.9, np.mean(hits)


def test_resume_continues_and_refuses_changed_settings(tmp_path: Path) -> None:
    run = write_cyclic_run(tmp_path / "run", users=12)
    config = FinetuneConfig(max_steps=4, **{**FAST, "save_steps": 2})
    FinetuneJob(config, run, resume=True, backbone=tiny_backbone()).run()  # nothing to resume yet: a fresh start
    state = tmp_path / "run" / "finetune" / "trainer_state"
    assert sorted(p.name for p in state.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    with pytest.raises(InputError, match="--resume"):  # checkpoints exist: say what to do
        FinetuneJob(config, run, backbone=tiny_backbone()).prepare()
    changed = FinetuneConfig(max_steps=6, **{**FAST, "save_steps": 2, "learning_rate": 1e-3})
    with pytest.raises(InputError, match="learning_rate"):
        FinetuneJob(changed, run, resume=True, backbone=tiny_backbone()).prepare()

    # each checkpoint records the training seconds up to it; a resume adds its own to them
    times = [json.loads((state / f"checkpoint-{n}" / TRAIN_TIME_FILE).read_text())["train_seconds"] for n in (2, 4)]
    assert 0 < times[0] <= times[1]
    (state / "checkpoint-4" / TRAIN_TIME_FILE).write_text('{"train_seconds": 1000.0}')

    longer = FinetuneConfig(max_steps=6, **{**FAST, "save_steps": 2})
    result = FinetuneJob(longer, run, resume=True, backbone=tiny_backbone()).run()
    assert result.metrics["steps"] == 6
    assert result.metrics["train_seconds_total"] == pytest.approx(1000.0 + result.metrics["train_seconds"], abs=0.02)
    assert json.loads((state / "checkpoint-6" / TRAIN_TIME_FILE).read_text())["train_seconds"] > 1000.0
    history = json.loads((tmp_path / "run" / "finetune" / "loss_curve.json").read_text())
    assert [e["step"] for e in history if "loss" in e] == [1, 2, 3, 4, 5, 6]  # the resumed run kept the log
    record = json.loads((tmp_path / "run" / "finetune" / "config.json").read_text())
    assert record["resumed_from"].endswith("checkpoint-4")

    fresh = FinetuneJob(config, run, overwrite=True, backbone=tiny_backbone()).run()
    assert fresh.metrics["steps"] == 4


def test_a_resumed_run_trains_max_steps_and_reports_the_loss_of_every_session(tmp_path: Path) -> None:
    """60 examples in batches of 8 make 8 steps an epoch: a run of 6 steps ends inside its first epoch, which a
    resume from any of its checkpoints re-enters."""
    import shutil

    run = write_cyclic_run(tmp_path / "run", users=12)
    out = tmp_path / "run" / "finetune"
    config = FinetuneConfig(max_steps=6, **{**FAST, "save_steps": 2, "logging_steps": 5})
    whole = FinetuneJob(config, run, backbone=tiny_backbone()).run().metrics
    assert whole["train_examples"] == 60 and whole["steps"] == 6
    logged = [(e["step"], e["loss"]) for e in json.loads((out / "loss_curve.json").read_text()) if "loss" in e]
    assert [step for step, _ in logged] == [1, 2, 4, 5, 6]  # every 5 steps, the first, and every checkpoint

    # resumed from its final checkpoint: nothing is left to train (the Trainer used to run a 7th step at lr 0)
    again = FinetuneJob(config, run, resume=True, backbone=tiny_backbone()).run().metrics
    assert again["steps"] == 6
    assert [e["step"] for e in json.loads((out / "loss_curve.json").read_text()) if "loss" in e] == [1, 2, 4, 5, 6]
    assert json.loads((out / "metrics.json").read_text())["train_loss"] == pytest.approx(whole["train_loss"], abs=1e-6)

    # killed after checkpoint-4: the resume trains steps 5 and 6, and the mean still covers steps 1 to 6
    shutil.rmtree(out / "trainer_state" / "checkpoint-6")
    resumed = FinetuneJob(config, run, resume=True, backbone=tiny_backbone()).run().metrics
    assert resumed["steps"] == 6
    assert json.loads((out / "metrics.json").read_text())["train_loss"] == pytest.approx(whole["train_loss"], abs=1e-5)


def test_run_train_loss_weighs_each_log_by_its_steps() -> None:
    from alignrec.finetune.trainer import run_train_loss

    history = [{"loss": 4.0, "step": 1}, {"loss": 2.0, "step": 4}, {"eval_loss": 9.0, "step": 4}, {"loss": 7.0, "step": 6}]
    # resumed from checkpoint-4: steps 1-4 from the log (4 x 1 + 2 x 3), steps 5-8 from the session (1.5 x 4);
    # the log at step 6 came after the checkpoint and is this session's
    assert run_train_loss(history, 4, 1.5, 8) == pytest.approx((4.0 + 6.0 + 6.0) / 8)
    assert run_train_loss(history, 0, 3.0, 6) == pytest.approx(3.0)  # a fresh start: the session alone
    assert run_train_loss(history, 6, 0.0, 6) == pytest.approx((4.0 + 6.0 + 14.0) / 6)  # resumed at the end
    assert run_train_loss(history, 5, 1.0, 6) == pytest.approx((4.0 + 6.0 + 1.0) / 5)  # step 5 never logged: left out
    assert run_train_loss([], 0, 0.0, 0) is None


def test_resume_refuses_changed_inputs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Checkpoints learnt from the tasks and codes the run started with: a resume on other ones is refused."""
    from alignrec.finetune.recipe import START_CONFIG

    run = write_cyclic_run(tmp_path / "run", users=8)
    config = FinetuneConfig(max_steps=2, **{**FAST, "save_steps": 2})
    FinetuneJob(config, run, backbone=tiny_backbone()).run()
    start_file = run / "finetune" / "trainer_state" / START_CONFIG
    inputs = json.loads(start_file.read_text())["inputs"]
    assert sorted(inputs) == ["codes", "codes_meta", "format", "train", "valid"]

    train = run / "tasks" / "train.jsonl"
    original = train.read_bytes()
    train.write_bytes(b"".join(reversed(original.splitlines(keepends=True))))  # the same examples, reordered
    with pytest.raises(InputError, match="train") as refused:
        FinetuneJob(config, run, resume=True, backbone=tiny_backbone()).prepare()
    assert f"train ({train}) changed" in str(refused.value) and "--overwrite" in str(refused.value)
    assert "codes (" not in str(refused.value)
    train.write_bytes(original)

    codes = cyclic_codes()
    codes.codes[[0, 1]] = codes.codes[[1, 0]]  # two items swap their codes
    codes.item_ids = list(load_dataset(run).item_ids)
    codes.save(run / "tokenizer")
    with pytest.raises(InputError, match="--resume") as refused:
        FinetuneJob(config, run, resume=True, backbone=tiny_backbone()).prepare()
    assert f"codes ({run / 'tokenizer' / 'item_codes.parquet'}) changed" in str(refused.value)
    assert "train (" not in str(refused.value)
    codes.codes[[0, 1]] = codes.codes[[1, 0]]
    codes.save(run / "tokenizer")
    FinetuneJob(config, run, resume=True, backbone=tiny_backbone()).prepare()  # the inputs it started with: resumes

    # a start record of an older alignrec has no hashes: the resume goes on, with a warning, and records them now
    start_file.write_text(json.dumps({"config": json.loads(start_file.read_text())["config"]}))
    train.write_bytes(b"".join(reversed(original.splitlines(keepends=True))))
    with caplog.at_level("WARNING", logger="alignrec"):
        FinetuneJob(config, run, resume=True, backbone=tiny_backbone()).prepare()
    assert any("records no input hashes" in r.getMessage() for r in caplog.records)
    assert json.loads(start_file.read_text())["inputs"]["train"]["sha256"] != inputs["train"]["sha256"]


def test_cli_with_a_backbone_folder(tmp_path: Path) -> None:
    run = write_cyclic_run(tmp_path / "run", users=8, tasks=("sequential", "negative"))
    model, tokenizer = tiny_backbone(tied=True)
    model.save_pretrained(tmp_path / "backbone")
    tokenizer.save_pretrained(tmp_path / "backbone")
    code = main(["finetune", "--data", str(run), "--out", str(tmp_path / "ft"), "--llm", str(tmp_path / "backbone"),
                 "--max-steps", "2", "--batch-size", "4", "--logging-steps", "1", "--no-save-adapter",
                 "--lora-target-modules", "q_proj", "v_proj"])
    assert code == 0
    model, tokenizer, codes = load_finetuned(tmp_path / "ft")
    assert model.config.tie_word_embeddings and codes.num_items == 24
    assert not (tmp_path / "ft" / "adapter").exists()
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["tied_embeddings"] is True
    # LoRA only where asked: q and v of 2 layers, r=8, width 32 -> 4 x (32x8 + 8x32) + 10 code rows x 32
    assert metrics["parameters"]["trainable"] == 4 * (32 * 8 + 8 * 32) + 10 * 32


def test_tasks_made_with_other_codes_are_refused(tmp_path: Path) -> None:
    run = write_cyclic_run(tmp_path / "run", users=8)
    from alignrec.tokenizer.codes import ItemCodes

    i = np.arange(24)
    ItemCodes(np.stack([i // 6, i % 6], axis=1), [4, 6]).save(run / "tokenizer")  # <a_5> no longer exists
    with pytest.raises(InputError, match="outside the item codes"):
        FinetuneJob(FinetuneConfig(max_steps=1), run, backbone=tiny_backbone()).prepare()


def test_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="run `alignrec tokenize train` first"):
        FinetuneJob(FinetuneConfig(max_steps=1), tmp_path, backbone=tiny_backbone()).prepare()
    with pytest.raises(InputError, match="no fine-tuned model"):
        load_finetuned(tmp_path)


def test_config_validation() -> None:
    for bad, match in [({"lora_r": 0}, "lora_r"), ({"mlp_layers": 4}, "mlp_layers"),
                       ({"lora_target_modules": ["all-linear", "q_proj"]}, "all-linear"),
                       ({"epochs": 0}, "epochs"), ({"new_token_init": "random"}, "new_token_init"),
                       ({"lora": 8}, "unknown key")]:
        with pytest.raises(ConfigError, match=match):
            from_mapping(FinetuneConfig, bad)


def test_one_dtype_setting_and_old_start_records_read_under_its_name() -> None:
    import torch

    from alignrec.finetune.recipe import renamed_settings
    from alignrec.llm.backbone import resolve_dtype

    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(InputError, match="float16 needs a CUDA GPU"):
        resolve_dtype("float16", torch.device("cpu"))
    with pytest.raises(InputError, match="expected one of auto, float32, bfloat16, float16"):
        resolve_dtype("fp32", "cpu")
    # a start record written when the setting was called precision resumes under dtype
    assert renamed_settings({"precision": "bf16", "lora_r": 8}) == {"lora_r": 8, "dtype": "bfloat16"}
    assert renamed_settings({"dtype": "float32"}) == {"dtype": "float32"}
    assert FinetuneConfig(dtype="bfloat16").dtype == "bfloat16"
