"""The CPU training path: dense sequence windows, the code-only head, a shallow backbone, the
validation ranking with best-checkpoint selection — trained on tiny cyclic data, then reloaded
and evaluated the way `alignrec evaluate` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from finetune_helpers import tiny_backbone, write_cyclic_run

from alignrec.errors import InputError
from alignrec.evaluate.recipe import EvaluateConfig, evaluate
from alignrec.llm import load_finetuned
from alignrec.llm.backbone import keep_first_layers
from alignrec.llm.finetuned import ModelSettings
from alignrec.finetune.config import FinetuneConfig
from alignrec.finetune.recipe import FinetuneJob


def test_dense_code_head_shallow_run_learns_and_reloads_at_its_depth(tmp_path: Path) -> None:
    run = write_cyclic_run(tmp_path / "run", sequential_format="dense")
    model, tokenizer = tiny_backbone()  # 2 decoder layers; the run keeps 1
    config = FinetuneConfig(max_steps=60, learning_rate=1e-2, lr_scheduler="constant", batch_size=16,
                            lora_dropout=0.0, logging_steps=10, save_steps=1000, warmup_ratio=0.0,
                            llm_layers=1, rank_eval_steps=20, rank_eval_users=30)
    result = FinetuneJob(config, run, backbone=(model, tokenizer)).run()
    metrics = result.metrics
    codes_version = metrics["settings"].pop("codes_version")
    assert metrics["settings"] == {"head": "code", "sequential_format": "dense", "llm_layers": 1, "max_history": 20,
                                   "item_loss_weight": 0.0, "ranker": "beam", "fusion_weight": 0.0, "item_residual": False}
    assert "ranker_choice" not in metrics  # no item head: beam search, nothing to choose
    assert metrics["padding_share"] == 0.0  # every dense window of the cyclic data has the same length
    assert metrics["code_tokens_per_second"] > 0
    ranking = metrics["validation_ranking"]
    assert [e["step"] for e in ranking["history"]] == [20, 40, 60]
    assert ranking["best_ndcg@10"] == max(e["ndcg@10"] for e in ranking["history"]) >= 0.8
    curve = json.loads((run / "finetune" / "loss_curve.json").read_text())
    assert sum("eval_ndcg@10" in e for e in curve) == 3

    loaded, _, _ = load_finetuned(run)
    assert loaded.config.num_hidden_layers == 1 and len(loaded.get_decoder().layers) == 1
    assert ModelSettings.of(loaded) == ModelSettings("code", "dense", 1, codes_version, max_history=20)
    report = evaluate(EvaluateConfig(beam_size=10), run)
    assert report["metrics"]["hr@10"] >= 0.9  # the next item of the cycle, from the dense prompt
    reference = evaluate(EvaluateConfig(beam_size=10, method="reference"), run, out=tmp_path / "reference")
    assert reference["metrics"] == report["metrics"]

    with pytest.raises(InputError, match=r"llm_layers=2 was asked for, but this fine-tuned model has 1 decoder layers"):
        evaluate(EvaluateConfig(beam_size=10, llm_layers=2), run, out=tmp_path / "bad")
    # a config.json edited after fine-tuning no longer matches the depth it was trained at
    path = run / "finetune" / "model" / "config.json"
    edited = json.loads(path.read_text())
    edited["num_hidden_layers"] = 2
    path.write_text(json.dumps(edited))
    with pytest.raises(InputError, match=r"llm_layers=1 but its config.json has num_hidden_layers=2"):
        load_finetuned(run)


def test_item_head_run_chooses_its_ranker_on_validation_and_evaluation_follows(tmp_path: Path) -> None:
    run = write_cyclic_run(tmp_path / "run", sequential_format="dense")
    model, tokenizer = tiny_backbone()
    config = FinetuneConfig(max_steps=40, learning_rate=1e-2, lr_scheduler="constant", batch_size=16,
                            lora_dropout=0.0, logging_steps=10, save_steps=1000, warmup_ratio=0.0, llm_layers=1,
                            item_loss_weight=1.0, rank_eval_users=30)  # no ranking check during training: the choice still runs
    metrics = FinetuneJob(config, run, backbone=(model, tokenizer)).run().metrics
    choice = metrics["ranker_choice"]
    assert choice["users"] == 30
    assert [(c["ranker"], c["fusion_weight"]) for c in choice["candidates"]] == \
        [("beam", 0.0), ("item", 0.0)] + [("fused", w) for w in (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)]
    best = max(c["ndcg@10"] for c in choice["candidates"])
    first_best = next(c for c in choice["candidates"] if c["ndcg@10"] == best)
    assert (choice["ranker"], choice["fusion_weight"]) == (first_best["ranker"], first_best["fusion_weight"])
    settings = ModelSettings.of(load_finetuned(run).model)
    assert (settings.item_loss_weight, settings.ranker, settings.fusion_weight) == (1.0, choice["ranker"], choice["fusion_weight"])

    chosen = evaluate(EvaluateConfig(beam_size=10, split="valid", users=30, seed=config.seed), run, out=tmp_path / "chosen")
    assert chosen["ranker"] == choice["ranker"]
    # the evaluation of the validation users repeats the choice's figure for the chosen ranker
    assert chosen["metrics"]["ndcg@10"] == pytest.approx(first_best["ndcg@10"], abs=1e-6)
    item = evaluate(EvaluateConfig(beam_size=10, ranker="item", exclude="both"), run, out=tmp_path / "item")
    assert item["ranker"] == "item" and item["metrics"]["hr@10"] >= 0.9  # the head alone learnt the cycle
    assert "seen_excluded" in item


def residual_in_checkpoint(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The item residual's tables as the adapter checkpoint holds them (peft's modules_to_save)."""
    from safetensors.torch import load_file

    tensors = load_file(str(checkpoint / "adapter_model.safetensors"))
    found = {name.rsplit(".", 1)[-1]: value for name, value in tensors.items() if ".alignrec_item_residual." in name}
    assert sorted(found) == ["bias", "vectors"], sorted(tensors)
    return found


def test_item_residual_is_trained_checkpointed_saved_and_read_back(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from alignrec.llm.item_head import RESIDUAL_FILE, item_residual_of

    run = write_cyclic_run(tmp_path / "run", sequential_format="dense")
    config = FinetuneConfig(max_steps=40, learning_rate=1e-2, lr_scheduler="constant", batch_size=16, lora_dropout=0.0,
                            logging_steps=10, save_steps=1000, warmup_ratio=0.0, llm_layers=1, item_loss_weight=1.0,
                            item_residual=True, rank_eval_steps=20, rank_eval_users=30)
    metrics = FinetuneJob(config, run, backbone=tiny_backbone()).run().metrics
    assert metrics["settings"]["item_residual"] is True
    assert len(metrics["ranker_choice"]["candidates"]) == 8  # the choice on validation scored the head with it
    best = metrics["validation_ranking"]["best_step"]
    # the saved residual is the best checkpoint's (the Trainer reloads the adapter with it at the end)
    saved = load_file(str(run / "finetune" / "model" / RESIDUAL_FILE))
    kept = residual_in_checkpoint(run / "finetune" / "trainer_state" / f"checkpoint-{best}")
    model, _, codes = load_finetuned(run)
    assert saved["vectors"].shape == (codes.num_items, model.config.hidden_size)
    assert saved["vectors"].abs().sum() > 0 and saved["bias"].abs().sum() > 0
    torch.testing.assert_close(saved["vectors"], kept["vectors"])
    torch.testing.assert_close(saved["bias"], kept["bias"])
    assert ModelSettings.of(model).item_residual
    assert torch.equal(item_residual_of(model).vectors.detach(), saved["vectors"])
    assert not any(".alignrec_item_residual." in k for k in load_file(str(run / "finetune" / "model" / "model.safetensors")))
    report = evaluate(EvaluateConfig(beam_size=10, ranker="item"), run, out=tmp_path / "eval")
    assert report["ranker"] == "item" and report["metrics"]["hr@10"] >= 0.9

    (run / "finetune" / "model" / RESIDUAL_FILE).unlink()
    with pytest.raises(InputError, match=f"{RESIDUAL_FILE}: missing; the model was fine-tuned with item_residual"):
        load_finetuned(run)


def test_a_resumed_run_takes_its_item_residual_from_the_checkpoint(tmp_path: Path) -> None:
    """Two steps, a stop, two more: the same residual as four steps in one go."""
    from safetensors.torch import load_file

    from alignrec.llm.item_head import RESIDUAL_FILE

    def config(steps: int) -> FinetuneConfig:
        return FinetuneConfig(max_steps=steps, batch_size=4, save_steps=2, logging_steps=1, lora_dropout=0.0,
                              learning_rate=1e-2, lr_scheduler="constant", warmup_ratio=0.0,
                              item_loss_weight=1.0, item_residual=True, ranker="item")

    straight = write_cyclic_run(tmp_path / "straight", users=8, sequential_format="dense")
    FinetuneJob(config(4), straight, backbone=tiny_backbone()).run()
    resumed = write_cyclic_run(tmp_path / "resumed", users=8, sequential_format="dense")
    FinetuneJob(config(2), resumed, backbone=tiny_backbone()).run()
    FinetuneJob(config(4), resumed, resume=True, backbone=tiny_backbone()).run()
    want = load_file(str(straight / "finetune" / "model" / RESIDUAL_FILE))
    got = load_file(str(resumed / "finetune" / "model" / RESIDUAL_FILE))
    assert want["vectors"].abs().sum() > 0
    torch.testing.assert_close(got["vectors"], want["vectors"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["bias"], want["bias"], atol=1e-5, rtol=1e-4)


def test_keep_first_layers_checks_the_depth() -> None:
    model, _ = tiny_backbone()
    ids = torch.tensor([[1, 5, 9]])
    first = model.get_decoder().layers[0]
    with pytest.raises(InputError, match=r"llm_layers=3: the backbone has 2 decoder layers; give 1..2"):
        keep_first_layers(model, 3)
    with pytest.raises(InputError, match=r"llm_layers=0"):
        keep_first_layers(model, 0)
    assert keep_first_layers(model, 1) == 2
    assert model.get_decoder().layers[0] is first and model.config.num_hidden_layers == 1
    assert model(input_ids=ids).logits.shape == (1, 3, model.config.vocab_size)


def test_a_model_beside_other_codes_is_refused(tmp_path: Path) -> None:
    """Issue 13.14: a kill between writing model/ and the codes pairs a new model with old codes."""
    import numpy as np

    from alignrec.llm.recommender import load_recommender
    from alignrec.llm.finetuned import FinetunedRun
    from alignrec.tokenizer.codes import ItemCodes

    run = write_cyclic_run(tmp_path / "run", users=8, sequential_format="dense")
    FinetuneJob(FinetuneConfig(max_steps=1, batch_size=4, save_steps=1000, logging_steps=1), run,
                backbone=tiny_backbone()).run()
    folder = run / "finetune"
    FinetunedRun.locate(folder).codes()  # the pair as written
    old = ItemCodes.load(folder)
    swapped = ItemCodes(np.roll(old.codes, 1, axis=0), old.codebook_sizes, old.item_ids)  # the "old" codes
    swapped.save(folder)
    for load in (lambda: load_finetuned(run), lambda: load_recommender(run), lambda: FinetunedRun.locate(folder).codes()):
        with pytest.raises(InputError, match="mixes two runs"):
            load()


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(tmp_path: Path) -> None:
    """Issue 13.13: a kill during a checkpoint save leaves a newer, incomplete checkpoint folder."""
    import shutil

    run = write_cyclic_run(tmp_path / "run", users=8, sequential_format="dense")
    config = FinetuneConfig(max_steps=2, batch_size=4, save_steps=2, logging_steps=1, lora_dropout=0.0)
    FinetuneJob(config, run, backbone=tiny_backbone()).run()
    state = run / "finetune" / "trainer_state"
    complete = state / "checkpoint-2"
    adapter_only = state / "checkpoint-4"  # killed right after the adapter was written
    adapter_only.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy(complete / name, adapter_only / name)
    truncated = state / "checkpoint-6"  # killed while writing trainer_state.json
    shutil.copytree(complete, truncated)
    (truncated / "trainer_state.json").write_text('{"global_step": 6, "log_hist')
    longer = FinetuneConfig(max_steps=4, batch_size=4, save_steps=2, logging_steps=1, lora_dropout=0.0)
    result = FinetuneJob(longer, run, resume=True, backbone=tiny_backbone()).run()
    assert result.metrics["steps"] == 4
    record = json.loads((run / "finetune" / "config.json").read_text())
    assert record["resumed_from"].endswith("checkpoint-2")
    assert not truncated.exists()


def test_early_stopping_follows_the_validation_ranking(tmp_path: Path) -> None:
    """A constant learning rate of 0 never improves NDCG@10: patience 1 stops after the second evaluation."""
    run = write_cyclic_run(tmp_path / "run", users=12, sequential_format="dense")
    config = FinetuneConfig(max_steps=40, batch_size=4, learning_rate=1e-9, lr_scheduler="constant", warmup_ratio=0.0,
                            logging_steps=5, save_steps=1000, rank_eval_steps=5, rank_eval_users=12,
                            early_stopping_patience=1, lora_dropout=0.0)
    result = FinetuneJob(config, run, backbone=tiny_backbone()).run()
    assert result.metrics["steps"] == 10
    assert [e["step"] for e in result.metrics["validation_ranking"]["history"]] == [5, 10]
