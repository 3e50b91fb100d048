"""The stage end to end on a tiny run: outputs, selection, resume after a kill, no leakage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from alignrec.errors import InputError
from alignrec.prefer.config import PreferConfig
from alignrec.prefer.prompts import epoch_prompts
from alignrec.prefer.recipe import PreferJob


def _config(**changes: object) -> PreferConfig:
    settings = dict(objective="listwise", beams=4, batch_size=4, max_steps=4, eval_steps=2, eval_beam=10,
                    learning_rate=5e-3, evaluate_test=False, seed=1)
    settings.update(changes)
    return PreferConfig(**settings)  # type: ignore[arg-type]


def _weights(job: PreferJob) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in job.model.named_parameters() if v.requires_grad}


@pytest.mark.parametrize("objective", ["grpo", "listwise", "sft"])
def test_the_stage_writes_a_model_that_evaluate_reads(tiny_run: Path, tmp_path: Path, objective: str) -> None:
    from alignrec.llm.finetuned import FinetunedRun

    out = tmp_path / "prefer"
    job = PreferJob(_config(objective=objective, evaluate_test=True, max_steps=2), tiny_run, out)
    metrics = job.run()
    assert [v["step"] for v in metrics["validation"]] == [0, 2]
    assert metrics["selected_step"] in (0, 2)
    assert metrics["timing"]["prompts"] == 8
    assert set(metrics["test"]) >= {"hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10"}
    assert FinetunedRun.locate(out).finetune_dir == out


def test_the_item_residual_passes_through_the_stage_unchanged(residual_run: Path, tmp_path: Path) -> None:
    """The stage trains LoRA and the code rows; the item head's residual is carried to its model as it was."""
    from safetensors.torch import load_file

    from alignrec.finetune.recipe import merge
    from alignrec.llm.finetuned import load_finetuned, write_model
    from alignrec.llm.item_head import RESIDUAL_FILE, item_residual_of

    run = residual_run
    source = load_file(str(run / "finetune" / "model" / RESIDUAL_FILE))
    job = PreferJob(_config(max_steps=2), run, tmp_path / "prefer")
    job.run()
    assert not item_residual_of(job.model).vectors.requires_grad  # frozen: not the stage's to train
    for folder in (tmp_path / "prefer" / "model", tmp_path / "merged"):  # the selected model; a merge after updates
        if folder.name == "merged":
            write_model(merge(job.model), job.tokenizer, folder)
        written = load_file(str(folder / RESIDUAL_FILE))
        assert torch.equal(written["vectors"], source["vectors"]) and torch.equal(written["bias"], source["bias"])
    loaded = load_finetuned(tmp_path / "prefer").model
    assert torch.equal(item_residual_of(loaded).vectors.detach(), source["vectors"])


def test_step_zero_is_the_fine_tuned_model_and_the_reference_stays_it(tiny_run: Path, tmp_path: Path) -> None:
    job = PreferJob(_config(), tiny_run, tmp_path / "p")
    job.prepare()
    prompts = job.batch(0)
    ids = [job.format.prompt_ids(job.tokenizer, job.vocabulary, job.codes, p.history) for p in prompts]
    codes = job.code_table[torch.tensor([[p.target] for p in prompts])]
    from alignrec.prefer.scoring import completion_log_probs

    with torch.no_grad():
        before = completion_log_probs(job.model, ids, codes, job.vocabulary, job.pad_token_id)
        reference = completion_log_probs(job.reference, ids, codes, job.vocabulary, job.pad_token_id)
    assert torch.allclose(before, reference, atol=1e-5)  # a fresh adapter is the identity
    job.update(prompts)
    job.update(job.batch(1))
    with torch.no_grad():
        after = completion_log_probs(job.model, ids, codes, job.vocabulary, job.pad_token_id)
        reference_after = completion_log_probs(job.reference, ids, codes, job.vocabulary, job.pad_token_id)
    assert not torch.allclose(after, before, atol=1e-4)  # the policy (LoRA and code rows) moved
    assert torch.equal(reference_after, reference)  # the reference, code rows included, did not


def test_selection_keeps_step_zero_when_nothing_beats_it(tiny_run: Path, tmp_path: Path) -> None:
    job = PreferJob(_config(max_steps=2), tiny_run, tmp_path / "p")
    job.prepare()
    _keep_step_zero(job)
    job.train()
    metrics = job.save()
    assert metrics["selected_step"] == 0
    source = tiny_run / "finetune" / "model" / "model.safetensors"
    assert (tmp_path / "p" / "model" / "model.safetensors").read_bytes() == source.read_bytes()


def _keep_step_zero(job: PreferJob) -> None:
    from alignrec.prefer.recipe import Validation

    job.validate = lambda: Validation(job.step, 0.5 if job.step == 0 else 0.4, 0.5, np.zeros(3))  # type: ignore[method-assign]


@pytest.mark.parametrize("same_search", [True, False])
def test_step_zero_reuses_the_fine_tuned_runs_test_search_when_it_matches(
        tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_search: bool) -> None:
    """Step 0 kept: the fine-tuned run's own test shards are the stage's (no search) when the search settings
    match; with another beam they are discarded and the stage's model is searched."""
    from alignrec.evaluate.recipe import EvaluateConfig, evaluate
    from alignrec.llm.recommender import GenerativeRecommender

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    source = evaluate(EvaluateConfig(beam_size=10, batch_size=8), run)
    searches = []
    original = GenerativeRecommender.recommend

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        searches.append(len(args[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerativeRecommender, "recommend", counted)
    job = PreferJob(_config(max_steps=2, evaluate_test=True, eval_batch_size=8, eval_beam=10 if same_search else 12),
                    run, tmp_path / "p")
    job.prepare()
    _keep_step_zero(job)
    job.train()
    metrics = job.save()
    assert metrics["selected_step"] == 0
    predictions = (tmp_path / "p" / "evaluate" / "predictions.jsonl").read_text()
    if same_search:
        assert searches == []
        assert metrics["test"] == source["metrics"]
        assert predictions == (run / "evaluate" / "predictions.jsonl").read_text()
    else:
        assert sum(searches) == 30  # every test user searched again with the stage's beam
        assert predictions != (run / "evaluate" / "predictions.jsonl").read_text()


def test_resume_after_a_kill_makes_the_same_updates(tiny_run: Path, tmp_path: Path) -> None:
    straight = PreferJob(_config(), tiny_run, tmp_path / "straight")
    straight.prepare()
    straight.train()

    class Killed(Exception):
        pass

    def kill(step: int) -> None:
        if step == 3:  # after the checkpoint of step 2 and one more update that is lost
            raise Killed

    killed = PreferJob(_config(), tiny_run, tmp_path / "killed")
    killed.on_step = kill
    killed.prepare()
    with pytest.raises(Killed):
        killed.train()
    with pytest.raises(InputError, match="--resume"):
        PreferJob(_config(), tiny_run, tmp_path / "killed").prepare()
    resumed = PreferJob(_config(), tiny_run, tmp_path / "killed", resume=True)
    resumed.prepare()
    assert resumed.step == 2
    resumed.train()
    assert resumed.step == 4
    for name, value in _weights(straight).items():
        assert torch.allclose(_weights(resumed)[name], value, atol=1e-6), name
    assert [v.record() for v in resumed.history] == [v.record() for v in straight.history]


def test_resume_refuses_changed_settings(tiny_run: Path, tmp_path: Path) -> None:
    job = PreferJob(_config(max_steps=2), tiny_run, tmp_path / "p")
    job.prepare()
    job.train()
    with pytest.raises(InputError, match="learning_rate"):
        PreferJob(_config(max_steps=4, learning_rate=1e-3), tiny_run, tmp_path / "p", resume=True).prepare()
    longer = PreferJob(_config(max_steps=4), tiny_run, tmp_path / "p", resume=True)
    longer.prepare()
    assert longer.step == 2


def test_training_prompts_never_hold_validation_or_test_items(tiny_run: Path) -> None:
    from alignrec.data.dataset import load_dataset

    dataset = load_dataset(tiny_run)
    sequences = dataset.sequences
    for mode, count in (("last", 1), ("last", 3), ("uniform", 5)):
        for epoch in range(2):
            prompts = epoch_prompts(dataset.training_sequences(), 20, count, mode, 0, epoch)
            assert prompts
            for prompt in prompts:
                training = sequences[prompt.user][:-2].tolist()
                # history + target are a contiguous piece of the training part (the sequence minus
                # its validation and test items), so neither held-out position is ever used
                t = len(prompt.history)
                window = prompt.history + [prompt.target]
                assert any(training[i : i + t + 1] == window for i in range(len(training) - t))


def test_last_positions_are_the_newest_training_targets(tiny_run: Path) -> None:
    from alignrec.data.dataset import load_dataset

    dataset = load_dataset(tiny_run)
    prompts = epoch_prompts(dataset.training_sequences(), 20, 1, "last", 0, 0)
    for prompt in prompts:
        training = dataset.training_sequences()[prompt.user]
        assert prompt.target == int(training[-1]) and prompt.history == [int(i) for i in training[-21:-1]]


def test_a_run_into_a_used_folder_needs_resume_or_overwrite(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(InputError, match="--overwrite"):
        PreferJob(_config(), tiny_run, out).prepare()
    PreferJob(_config(), tiny_run, out, overwrite=True).prepare()
    shutil.rmtree(out)


def test_the_stage_refuses_to_write_into_the_fine_tuned_run(tiny_run: Path) -> None:
    with pytest.raises(InputError, match="must not write"):
        PreferJob(_config(), tiny_run, tiny_run / "finetune")


def test_negatives_above_target_select_the_items_that_beat_it(tiny_run: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from alignrec.prefer import objectives

    seen = {}
    original = objectives.listwise_loss

    def spy(target, items, negative, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen["negative"] = negative.clone()
        return original(target, items, negative, *args, **kwargs)

    monkeypatch.setattr(objectives, "listwise_loss", spy)
    job = PreferJob(_config(negatives_above_target=True, beams=8), tiny_run, tmp_path / "p")
    job.prepare()
    prompts = job.batch(0)
    job.update(prompts)
    from alignrec.prefer.scoring import rollouts

    ids = [job.format.prompt_ids(job.tokenizer, job.vocabulary, job.codes, p.history) for p in prompts]
    # the rollout of the update used the weights before it: recompute with the reference (= step 0)
    items = rollouts(job.reference, ids, job.trie, job.vocabulary, 8, job.pad_token_id).items
    for row, prompt in enumerate(prompts):
        listed = items[row].tolist()
        expected = [False] * 8
        if prompt.target in listed:
            expected = [i < listed.index(prompt.target) for i in range(8)]
        assert seen["negative"][row].tolist() == expected
