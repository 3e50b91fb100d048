"""``alignrec prefer``: preference alignment of a fine-tuned model on its own ranked beams.

Recipe:

1. load the merged fine-tuned model (``RUN/finetune/model``), keep a frozen copy of it as the
   reference, and put a fresh LoRA adapter + trainable code-token rows on the other copy (the
   same wrapping as fine-tuning, :func:`alignrec.finetune.recipe.apply_lora`); a fresh adapter
   starts as the identity, so step 0 *is* the fine-tuned model, whatever the backbone;
2. each update takes ``batch_size`` training prompts (:mod:`alignrec.prefer.prompts`), rolls out
   ``beams`` items per prompt with the evaluation's constrained beam search, scores the target
   and the beam items from one pass over each prompt (:mod:`alignrec.prefer.scoring`), and
   applies the objective (:mod:`alignrec.prefer.objectives`) plus the anchor;
3. every ``eval_steps`` updates: NDCG@10 of constrained beam search on the validation users
   (all by default) and a checkpoint. Step 0 is a candidate, so the selected model is never worse
   on validation than the fine-tuned one;
4. writes ``OUT/model`` (merged, the layout of ``RUN/finetune``: ``alignrec evaluate --model
   OUT`` reads it), ``OUT/item_codes.parquet`` + ``codes_meta.json``, ``metrics.json`` (validation
   history, the selected step, time split into rollout / scoring / update, prompts/s),
   ``config.json``, and with ``evaluate_test`` the test evaluation in ``OUT/evaluate``.

Resume (``--resume``): from the newest checkpoint in ``OUT/state`` (trainable weights, optimizer,
scheduler, step, validation history, best weights). The prompt stream is a pure function of the
seed and the step, and rollouts are deterministic, so a resumed run makes the same updates as an
uninterrupted one (a test checks).
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from alignrec.config import to_dict, write_run_record
from alignrec.errors import InputError
from alignrec.layout import stage_dir
from alignrec.prefer.config import RESUMABLE_CHANGES, PreferConfig
from alignrec.prefer.prompts import Prompt, epoch_prompts
from alignrec.utils.io import atomic_directory, atomic_write_json, read_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

STATE_DIR = "state"
BEST_FILE = "best.safetensors"


@dataclass
class Validation:
    step: int
    ndcg: float
    hr: float
    per_user_ndcg: np.ndarray = field(repr=False)

    def record(self) -> dict[str, Any]:
        return {"step": self.step, "ndcg@10": round(self.ndcg, 6), "hr@10": round(self.hr, 6)}


def trainable_state(model: Any) -> dict[str, Any]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    import torch

    parameters = dict(model.named_parameters())
    missing = sorted(set(n for n, p in parameters.items() if p.requires_grad) - set(state))
    if missing:
        raise InputError(f"checkpoint lacks trainable weights: {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


def cosine_factor(step: int, total: int, kind: str) -> float:
    """Learning-rate multiplier after ``step`` of ``total`` updates (no warm-up: the adapter starts at identity)."""
    if kind == "constant" or total <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


class PreferJob:
    """One preference-alignment run: :meth:`prepare`, :meth:`train`, :meth:`save` (or :meth:`run`)."""

    def __init__(self, config: PreferConfig, model: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 data: str | os.PathLike[str] | None = None, resume: bool = False, overwrite: bool = False,
                 baseline_validation: Validation | None = None):
        from alignrec.llm.finetuned import FinetunedRun

        self.config = config
        self.source = FinetunedRun.locate(model)
        self.out = Path(out) if out else stage_dir(self.source.run_dir, "prefer")
        if self.out.resolve() == self.source.finetune_dir.resolve():
            raise InputError(f"{self.out}: the stage must not write into the fine-tuned run it reads")
        self.data = Path(data) if data else self.source.dataset_dir
        self.resume = resume
        self.overwrite = overwrite
        self.baseline_validation = baseline_validation  # the step-0 validation, when the caller already has it
        self.history: list[Validation] = []
        self.step = 0
        self.best: Validation | None = None
        self.timing = {"rollout_s": 0.0, "scoring_s": 0.0, "update_s": 0.0, "prompts": 0, "validation_s": 0.0}
        self.losses: list[dict[str, float]] = []
        self.on_step: Callable[[int], None] | None = None  # test hook: called after every update

    @property
    def state_dir(self) -> Path:
        return self.out / STATE_DIR

    # ------------------------------------------------------------------------- preparation
    def _check_out(self) -> str | None:
        checkpoint = self._newest_checkpoint()
        start = self.state_dir / "start.json"
        if self.resume and checkpoint is not None:
            saved = read_json(start)["config"]
            now = to_dict(self.config)
            changed = sorted(k for k, v in saved.items() if now.get(k) != v and k not in RESUMABLE_CHANGES)
            if changed:
                raise InputError(f"--resume: settings differ from the run being resumed ({start}): {', '.join(changed)}; "
                                 f"only {sorted(RESUMABLE_CHANGES)} may change")
            if read_json(start).get("source_version") != self.source.version():
                raise InputError(f"--resume: {self.source.model_dir} changed since the run started; use --overwrite")
            return checkpoint
        if self.out.exists() and any(self.out.iterdir()) and not self.resume:
            if not self.overwrite:
                raise InputError(f"{self.out} holds an earlier run; pass --resume to continue it or --overwrite")
            shutil.rmtree(self.out)
        return None

    def _newest_checkpoint(self) -> str | None:
        if not self.state_dir.is_dir():
            return None
        steps = sorted((int(p.name.split("-")[1]), p) for p in self.state_dir.glob("checkpoint-*")
                       if p.name.split("-")[1].isdigit() and (p / "state.json").is_file())
        return str(steps[-1][1]) if steps else None

    def prepare(self) -> None:
        import torch

        from alignrec.data.dataset import load_dataset
        from alignrec.finetune.config import FinetuneConfig
        from alignrec.finetune.recipe import apply_lora
        from alignrec.finetune.trainer import ValidationRanker
        from alignrec.llm.finetuned import ModelSettings, load_finetuned
        from alignrec.llm.trie import CodeTrie
        from alignrec.llm.vocab import CodeVocabulary

        config = self.config
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.checkpoint = self._check_out()
        self.dataset = load_dataset(self.data)
        model, tokenizer, codes = load_finetuned(self.source.finetune_dir, device="cpu")
        self.source.check_catalogue(codes, self.dataset)
        self.settings = ModelSettings.of(model)
        if self.settings.head != "code":
            raise InputError(f"{self.source.model_dir}: alignrec prefer scores with the code-only head; this model was "
                             f"fine-tuned with head={self.settings.head!r}")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.codes = tokenizer, codes
        self.vocabulary = CodeVocabulary.from_tokenizer(tokenizer, codes.codebook_sizes)
        self.trie = CodeTrie.from_codes(codes.codes, codes.codebook_sizes)
        self.code_table = torch.as_tensor(np.asarray(codes.codes), dtype=torch.long)  # (items, L)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.format = self.settings.format
        # The reference: the fine-tuned model itself, frozen (its code rows included).
        self.reference = copy.deepcopy(model).eval()
        for parameter in self.reference.parameters():
            parameter.requires_grad_(False)
        torch.manual_seed(config.seed)
        lora = FinetuneConfig(lora_r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                              train_code_tokens=config.train_code_tokens)
        token_ids = [int(t) for t in tokenizer.convert_tokens_to_ids(codes.vocabulary())]
        self.model = apply_lora(model, lora, token_ids)
        self.model.train()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, weight_decay=0.0)
        self.training_sequences = self.dataset.training_sequences()
        self.prompts_per_epoch = len(self._epoch(0))
        if self.prompts_per_epoch == 0:
            raise InputError(f"{self.dataset.path}: no user has two training items; nothing to train on")
        self.total_steps = config.max_steps or math.ceil(config.epochs * self.prompts_per_epoch / config.batch_size)
        self.ranker = ValidationRanker(self.dataset, self.codes, self.tokenizer, self.settings, self.vocabulary,
                                       users=config.eval_users, seed=config.seed, beam=config.eval_beam,
                                       batch_size=config.eval_batch_size, mode="prefer")
        if self.checkpoint is not None:
            self._load_checkpoint(Path(self.checkpoint))
        else:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.state_dir / "start.json", {"config": to_dict(config),
                                                              "source_version": self.source.version()})

    def _epoch(self, epoch: int) -> list[Prompt]:
        cache = self.__dict__.setdefault("_epoch_cache", {})  # the current epoch's prompts only
        if epoch not in cache:
            cache.clear()
            cache[epoch] = epoch_prompts(self.training_sequences, self.format.max_history, self.config.prompts_per_user,
                                       self.config.positions, self.config.seed, epoch)
        return cache[epoch]

    def batch(self, step: int) -> list[Prompt]:
        """The prompts of update ``step`` (0-based): a slice of the seeded stream of epochs."""
        size = self.config.batch_size
        out = []
        for k in range(step * size, (step + 1) * size):
            out.append(self._epoch(k // self.prompts_per_epoch)[k % self.prompts_per_epoch])
        return out

    # ------------------------------------------------------------------------- one update
    def update(self, prompts: list[Prompt]) -> dict[str, float]:
        """One rollout + one optimizer step on ``prompts``; returns the losses and the seconds of each part."""
        import torch

        from alignrec.prefer import objectives
        from alignrec.prefer.scoring import completion_log_probs, rollouts

        config = self.config
        prompt_ids = [self.format.prompt_ids(self.tokenizer, self.vocabulary, self.codes, p.history) for p in prompts]
        targets = torch.tensor([p.target for p in prompts], dtype=torch.long)  # (B,)
        began, began_cpu = time.perf_counter(), time.process_time()
        needs_beams = config.objective != "sft"
        if needs_beams:
            items = rollouts(self.model, prompt_ids, self.trie, self.vocabulary, config.beams, self.pad_token_id).items
        else:
            items = torch.empty((len(prompts), 0), dtype=torch.long)
        rolled = time.perf_counter()
        live = items >= 0  # (B, G)
        is_target = items == targets[:, None]
        has_target = is_target.any(dim=1)
        candidates = torch.cat([targets[:, None], items.clamp(min=0)], dim=1)  # (B, 1+G)
        completion_codes = self.code_table[candidates]  # (B, 1+G, L)
        log_probs = completion_log_probs(self.model, prompt_ids, completion_codes, self.vocabulary, self.pad_token_id)
        reference = None
        if needs_beams and (config.kl_beta > 0 or config.sdpo_beta > 0):
            with torch.no_grad():
                reference = completion_log_probs(self.reference, prompt_ids, completion_codes, self.vocabulary,
                                                 self.pad_token_id)
        target_tokens, item_tokens = log_probs[:, 0], log_probs[:, 1:]  # (B, L), (B, G, L)
        stats: dict[str, float] = {}
        anchor = objectives.anchor_loss(target_tokens)
        loss = config.sft_weight * anchor
        if config.objective == "grpo":
            rewards = objectives.grpo_rewards(is_target)
            policy, stats = objectives.grpo_loss(item_tokens, rewards, live, has_target,
                                                 None if reference is None else reference[:, 1:], config.kl_beta)
            loss = loss + policy
        elif config.objective == "listwise":
            negative = live & ~is_target
            if config.negatives:
                negative = negative & (negative.long().cumsum(dim=1) <= config.negatives)
            if config.negatives_above_target:  # ranks before the target's, where the beam holds it
                above = is_target.long().cumsum(dim=1) == 0  # (B, G) True up to the target's rank
                negative = negative & above & has_target[:, None]
            ref_target = ref_items = None
            if reference is not None:
                ref_target, ref_items = reference[:, 0].sum(-1), reference[:, 1:].sum(-1)
            policy, stats = objectives.listwise_loss(target_tokens.sum(-1), item_tokens.sum(-1), negative,
                                                     ref_target, ref_items, config.sdpo_beta)
            # a prompt without negatives has nothing to rank (its term is -log 1 = 0, no gradient)
            loss = loss + policy
            if reference is not None and config.kl_beta > 0:
                kl = objectives.k3_kl(item_tokens, reference[:, 1:]).mean(-1)  # (B, G)
                kl = (kl * live.float()).sum() / live.float().sum().clamp(min=1)
                loss = loss + config.kl_beta * kl
                stats["kl"] = float(kl)
        scored = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, config.max_grad_norm)
        factor = cosine_factor(self.step, self.total_steps, config.lr_scheduler)
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate * factor
        self.optimizer.step()
        done = time.perf_counter()
        self.timing["rollout_s"] += rolled - began
        self.timing["scoring_s"] += scored - rolled
        self.timing["update_s"] += done - scored
        self.timing["prompts"] += len(prompts)
        self.timing["train_cpu_s"] = self.timing.get("train_cpu_s", 0.0) + time.process_time() - began_cpu
        return {"loss": float(loss.detach()), "anchor": float(anchor.detach()), "target_in_beam": float(has_target.float().mean()),
                "lr": config.learning_rate * factor, **stats}

    # ------------------------------------------------------------------------- validation
    def validate(self) -> Validation:
        began = time.perf_counter()
        metrics = self.ranker.per_user(self.model)
        self.timing["validation_s"] += time.perf_counter() - began
        return Validation(self.step, float(metrics["ndcg@10"].mean()), float(metrics["hr@10"].mean()), metrics["ndcg@10"])

    def _consider(self, validation: Validation) -> None:
        from safetensors.torch import save_file

        self.history.append(validation)
        log.info("step %d: validation NDCG@10 %.4f HR@10 %.4f", validation.step, validation.ndcg, validation.hr)
        if self.best is None or validation.ndcg > self.best.ndcg:  # ties keep the earlier (step 0 first)
            self.best = validation
            best = self.out / BEST_FILE
            if validation.step == 0:
                best.unlink(missing_ok=True)
            else:
                tmp = best.with_suffix(".tmp")
                save_file({k: v.contiguous() for k, v in trainable_state(self.model).items()}, str(tmp))
                os.replace(tmp, best)

    # ------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self) -> None:
        import torch
        from safetensors.torch import save_file

        target = self.state_dir / f"checkpoint-{self.step}"
        with atomic_directory(target) as tmp:
            save_file({k: v.contiguous() for k, v in trainable_state(self.model).items()}, str(tmp / "trainable.safetensors"))
            torch.save({"optimizer": self.optimizer.state_dict()}, tmp / "optimizer.pt")
            atomic_write_json(tmp / "state.json", {
                "step": self.step, "history": [v.record() for v in self.history],
                "history_per_user": {str(v.step): v.per_user_ndcg.tolist() for v in self.history},
                "best_step": self.best.step if self.best else None, "timing": self.timing, "losses": self.losses})
        for older in self.state_dir.glob("checkpoint-*"):
            if older != target:
                shutil.rmtree(older, ignore_errors=True)

    def _load_checkpoint(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file

        load_trainable_state(self.model, load_file(str(folder / "trainable.safetensors")))
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True)["optimizer"])
        state = read_json(folder / "state.json")
        self.step = int(state["step"])
        per_user = state.get("history_per_user", {})
        self.history = [Validation(r["step"], r["ndcg@10"], r["hr@10"], np.asarray(per_user.get(str(r["step"]), [])))
                        for r in state["history"]]
        self.best = next((v for v in self.history if v.step == state["best_step"]), None)
        self.timing.update(state["timing"])
        self.losses = state.get("losses", [])
        log.info("resuming from %s (step %d)", folder, self.step)

    # ------------------------------------------------------------------------- the loop
    def train(self) -> None:
        config = self.config
        if not self.history:
            baseline = self.baseline_validation or self.validate()
            self._consider(Validation(0, baseline.ndcg, baseline.hr, baseline.per_user_ndcg))
        began = time.perf_counter()
        spent_before = self.timing["rollout_s"] + self.timing["scoring_s"] + self.timing["update_s"]
        while self.step < self.total_steps:
            parts = self.update(self.batch(self.step))
            self.step += 1
            if self.step % 10 == 0 or self.step == 1:
                self.losses.append({"step": self.step, **{k: round(v, 6) for k, v in parts.items()}})
                log.info("step %d/%d loss %.4f anchor %.4f target in beam %.2f", self.step, self.total_steps,
                         parts["loss"], parts["anchor"], parts["target_in_beam"])
            spent = spent_before + time.perf_counter() - began  # training seconds, validation excluded
            out_of_time = bool(config.max_train_minutes) and spent >= config.max_train_minutes * 60
            last = self.step >= self.total_steps or out_of_time
            if config.eval_minutes:
                due = spent >= (len(self.history)) * config.eval_minutes * 60
            else:
                due = self.step % config.eval_steps == 0
            if due or last:
                self._consider(self.validate())
                self._save_checkpoint()
            if due or last:
                began, spent_before = time.perf_counter(), spent  # the validation's time is not training time
            if self.on_step is not None:
                self.on_step(self.step)
            if out_of_time:
                log.info("max_train_minutes reached at step %d", self.step)
                break

    # ------------------------------------------------------------------------- outputs
    def save(self) -> dict[str, Any]:
        from safetensors.torch import load_file

        from alignrec.finetune.recipe import merge
        from alignrec.llm.finetuned import write_model

        assert self.best is not None
        with atomic_directory(self.out / "model") as tmp:
            if self.best.step == 0:
                _copy_files(self.source.model_dir, tmp)
            else:
                load_trainable_state(self.model, load_file(str(self.out / BEST_FILE)))
                write_model(merge(self.model), self.tokenizer, tmp)
        for name in ("item_codes.parquet", "codes_meta.json"):
            shutil.copy2(self.source.finetune_dir / name, self.out / name)
        step_seconds = self.timing["rollout_s"] + self.timing["scoring_s"] + self.timing["update_s"]
        baseline = self.history[0]
        metrics = {
            "objective": self.config.objective,
            "steps": self.step,
            "total_steps": self.total_steps,
            "prompts_per_epoch": self.prompts_per_epoch,
            "selected_step": self.best.step,
            "validation": [v.record() for v in self.history],
            "validation_gain": round(self.best.ndcg - baseline.ndcg, 6),
            "timing": {k: round(v, 3) for k, v in self.timing.items()},
            "prompts_per_s": round(self.timing["prompts"] / step_seconds, 3) if step_seconds else None,
            # per CPU-second of this process (all its threads): the figure a busy machine changes least
            "prompts_per_cpu_s": round(self.timing["prompts"] / self.timing["train_cpu_s"], 3)
            if self.timing.get("train_cpu_s") else None,
            "losses": self.losses,
            "source": str(self.source.finetune_dir),
        }
        atomic_write_json(self.out / "validation_per_user.json",
                          {str(v.step): [round(x, 6) for x in v.per_user_ndcg.tolist()] for v in self.history})
        if self.config.evaluate_test:
            from alignrec.evaluate.recipe import EvaluateConfig, evaluate

            if self.best.step == 0:
                self._reuse_source_shards(self.out / "evaluate")
            # Shards are trusted only when their manifest matches the model version (a content hash), users and
            # search settings, so resuming keeps nothing that this model and search would not have written.
            report = evaluate(EvaluateConfig(beam_size=self.config.eval_beam, batch_size=self.config.eval_batch_size),
                              self.out, data=self.data, out=self.out / "evaluate", resume=True, on_mismatch="restart")
            metrics["test"] = report["metrics"]
        atomic_write_json(self.out / "metrics.json", metrics)
        write_run_record(self.out, self.config, stage="prefer", seed=self.config.seed,
                         inputs={"model_config": self.source.model_dir / "config.json",
                                 "item_codes": self.source.finetune_dir / "item_codes.parquet"},
                         extra={"source": str(self.source.finetune_dir), "source_version": self.source.version()})
        return metrics

    def _reuse_source_shards(self, evaluate_dir: Path) -> None:
        """Step 0 selected: OUT/model is a copy of the fine-tuned model, so the fine-tuned run's own test
        shards are this model's search results when their settings match (evaluate checks; on a mismatch it
        discards them and searches). Saves a full test search (about 8 min on Instruments' 24,772 users, one thread)."""
        from alignrec.layout import existing_stage_dir

        source = existing_stage_dir(self.source.run_dir, "evaluate") / "shards"
        target = evaluate_dir / "shards"
        if source.is_dir() and not target.exists():
            log.info("step 0 selected: offering the fine-tuned run's test shards (%s) to the evaluation", source)
            with atomic_directory(target) as tmp:
                _copy_files(source, tmp)

    def run(self) -> dict[str, Any]:
        self.prepare()
        self.train()
        return self.save()


def _copy_files(source: Path, target: Path) -> None:
    """Copy the files directly in ``source`` (not its sub-folders) into ``target``."""
    for file in source.iterdir():
        if file.is_file():
            shutil.copy2(file, target / file.name)


def prefer(config: PreferConfig, model: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
           data: str | os.PathLike[str] | None = None, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run the stage on the fine-tuned run ``model`` (``RUN`` or ``RUN/finetune``); returns metrics.json."""
    return PreferJob(config, model, out, data, resume, overwrite).run()
