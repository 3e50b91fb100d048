"""``alignrec finetune``: LoRA fine-tuning of a causal LM on the alignment tasks.

Recipe (one process, or one per device under ``torchrun`` / ``accelerate launch``):

1. load the backbone (:mod:`alignrec.llm.backbone`), keep its first ``llm_layers`` decoder
   layers (a shallow backbone), add every code token of the item codes to the tokenizer and the
   embedding/output matrices (:func:`alignrec.llm.vocab.add_code_tokens`), initialise their
   rows (:mod:`alignrec.llm.init`: default / sa_init / mlp);
2. wrap it with peft LoRA on the attention and MLP projections; the code-token rows are trained
   through peft's trainable tokens (only those rows, not the whole matrices; with tied input and
   output embeddings — SmolLM2 — one set of rows serves both, peft keeps the tie; the forward
   reads those rows alone, never a copy of the whole matrix: :mod:`alignrec.llm.code_rows`);
3. train with the Hugging Face Trainer (gradient accumulation, gradient checkpointing, bf16 on
   GPUs, DDP/DeepSpeed through the launcher, resumable checkpoints in ``OUT/trainer_state``).
   With ``head: code`` (the default) the loss at a code position is the softmax over that
   level's code tokens only (:mod:`alignrec.llm.code_head`); text positions keep the full head.
   With ``rank_eval_steps`` the Trainer's evaluation also runs constrained beam search on a
   fixed validation sample (HR@10, NDCG@10), keeps the best checkpoint by NDCG@10 and can stop
   early;
4. on the main process: merge LoRA into the weights and write ``OUT/model`` (a plain Hugging
   Face folder with the code tokens in its tokenizer), ``OUT/adapter`` (unmerged adapter),
   ``OUT/item_codes.parquet`` + ``codes_meta.json``, ``loss_curve.png``/``.json``,
   ``metrics.json`` and ``config.json`` (resolved config, inputs, seed). The model's
   config.json records how it was trained (head, prompt format, depth:
   :class:`alignrec.llm.finetuned.ModelSettings`), which evaluation and serving repeat.

Resuming (``--resume``) continues from the newest checkpoint in ``OUT/trainer_state`` (and
starts from the beginning when there is none yet). The
config the run started with is stored there; a resumed run must use the same settings except
the ones in :data:`alignrec.finetune.config.RESUMABLE_CHANGES` (how long, how often to log/save).
The hashes of its inputs (the tasks, the codes) are stored beside it: a resume on changed inputs
is refused (the checkpoints learnt from the old ones).
``metrics.json`` counts every session: ``steps``, ``train_loss`` (the mean over every step) and
``train_seconds_total``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignrec.config import from_mapping, to_dict, write_run_record
from alignrec.errors import InputError
from alignrec.finetune.config import RESUMABLE_CHANGES, FinetuneConfig
from alignrec.finetune.trainer import (
    TRAIN_TIME_FILE,
    CodeOnlyLoss,
    ValidationRanker,
    earlier_train_seconds,
    log_at_checkpoints_callback,
    loss_curve_callback,
    plot_loss_curve,
    progress_lines_callback,
    ranking_trainer_class,
    run_train_loss,
    time_budget_callback,
    train_time_callback,
    training_arguments,
)
from alignrec.llm.finetuned import ModelSettings, codes_fingerprint, write_model
from alignrec.llm.format import SequenceFormat
from alignrec.llm.vocab import CodeVocabulary
from alignrec.utils.io import atomic_directory, atomic_write_json, read_json, sha256_file
from alignrec.utils.log import get_logger, progress_draws, progress_enabled

log = get_logger(__name__)

TRAINER_DIR = "trainer_state"
START_CONFIG = "finetune_config.json"


@dataclass
class RecipePaths:
    """Where a fine-tuning run reads and writes."""

    run_dir: Path
    out_dir: Path
    tasks_dir: Path
    codes_dir: Path
    code_descriptions: Path
    codebooks: Path

    @property
    def trainer_dir(self) -> Path:
        return self.out_dir / TRAINER_DIR

    @classmethod
    def resolve(cls, config: FinetuneConfig, run_dir: str | os.PathLike[str],
                out_dir: str | os.PathLike[str] | None = None) -> RecipePaths:
        run = Path(run_dir)
        codes = Path(config.codes) if config.codes else run / "tokenizer"
        return cls(
            run_dir=run,
            out_dir=Path(out_dir) if out_dir else run / "finetune",
            tasks_dir=Path(config.tasks) if config.tasks else run / "tasks",
            codes_dir=codes,
            code_descriptions=Path(config.code_descriptions) if config.code_descriptions else codes / "code_descriptions.json",
            codebooks=Path(config.codebooks) if config.codebooks else codes / "codebooks.safetensors",
        )


def renamed_settings(stored: dict[str, Any]) -> dict[str, Any]:
    """A start record's settings under today's names: ``precision`` (fp32/bf16/fp16) became ``dtype``
    (float32/bfloat16/float16, the value set of every dtype setting)."""
    if "precision" not in stored:
        return stored
    names = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    renamed = {key: value for key, value in stored.items() if key != "precision"}
    renamed["dtype"] = names.get(str(stored["precision"]), str(stored["precision"]))
    return renamed


# ----------------------------------------------------------------------------- model


@dataclass
class PreparedModel:
    """A LoRA-wrapped model ready to train, its tokenizer and what was done to the vocabulary."""

    model: Any  # peft.PeftModel
    tokenizer: Any
    code_token_ids: list[int]  # every code token, in ItemCodes.vocabulary() order
    vocabulary: CodeVocabulary  # the same tokens by level and code: the one the loss, ranker and search use
    init_report: dict[str, Any]
    tied_embeddings: bool
    backbone: str


def module_name_of(model: Any, module: Any) -> str:
    """The attribute name (last path component) of ``module`` inside ``model``."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    raise ValueError("module not found in model")


def apply_lora(model: Any, config: FinetuneConfig, code_token_ids: list[int]) -> Any:
    """Wrap ``model`` with LoRA adapters and (optionally) trainable code-token rows."""
    from peft import LoraConfig, TaskType, get_peft_model

    from alignrec.llm.code_rows import use_row_forward
    from alignrec.llm.init import output_matrix_is_tied
    from alignrec.llm.item_head import RESIDUAL_MODULE, item_residual_of

    trainable_tokens = None
    if config.train_code_tokens and code_token_ids:
        embedding_name = module_name_of(model, model.get_input_embeddings())
        trainable_tokens = {embedding_name: list(code_token_ids)}
        output = model.get_output_embeddings()
        if output is not None and not output_matrix_is_tied(model):
            # Untied output layer: its code rows are separate parameters and must learn too
            # (the logits of the code tokens come from them).
            trainable_tokens[module_name_of(model, output)] = list(code_token_ids)
    targets: Any = "all-linear" if config.lora_target_modules == ["all-linear"] else list(config.lora_target_modules)
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        trainable_token_indices=trainable_tokens,
        # the item head's residual (finetune.item_residual): trained, checkpointed and merged with the adapter
        modules_to_save=[RESIDUAL_MODULE] if config.item_residual and item_residual_of(model) is not None else None,
    )
    peft_model = get_peft_model(model, lora)
    # peft's trainable tokens copy the whole V x D matrix at every forward; ours read the rows alone.
    use_row_forward(peft_model)
    # Checkpoints hold the adapter and the trained code rows; without a base id peft does not
    # look the base up (a hub call for GGUF folders) nor save the whole resized matrices.
    peft_model.peft_config["default"].base_model_name_or_path = None
    return peft_model


def prepare_model(config: FinetuneConfig, codes: Any, paths: RecipePaths | None = None,
                  item_texts: list[str] | None = None, backbone: tuple[Any, Any] | None = None) -> PreparedModel:
    """Load (or take) the backbone, add and initialise the code tokens, apply LoRA.

    ``backbone`` = (model, tokenizer) skips loading ``config.llm`` (tests pass tiny models).
    """
    import torch

    from alignrec.llm.backbone import keep_first_layers, load_backbone
    from alignrec.llm.init import InitInputs, initialise_new_tokens, output_matrix_is_tied
    from alignrec.llm.vocab import add_code_tokens

    torch.manual_seed(config.seed)  # the resize init draws random numbers: same rows on every rank/resume
    if backbone is None:
        model, tokenizer, _ = load_backbone(config.llm)
        name = config.llm
    else:
        model, tokenizer = backbone
        name = "<in-memory model>"
    if config.llm_layers:
        keep_first_layers(model, config.llm_layers)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokens = codes.vocabulary()
    token_ids = add_code_tokens(tokenizer, model, tokens)
    vocabulary = CodeVocabulary.from_tokenizer(tokenizer, codes.codebook_sizes)
    inputs = InitInputs(
        tokens=tokens,
        token_ids=token_ids,
        code_descriptions=paths.code_descriptions if paths else None,
        codebooks=paths.codebooks if paths else None,
        item_codes=codes,
        item_texts=item_texts,
        mlp_layers=config.mlp_layers,
        mlp_hidden=config.mlp_hidden,
        mlp_steps=config.mlp_steps,
        seed=config.seed,
    )
    report = initialise_new_tokens(config.new_token_init, model, tokenizer, inputs)
    tied = output_matrix_is_tied(model)
    model.config.use_cache = False  # no KV cache while training (saved back to True in the merged model)
    if config.item_residual:
        from alignrec.llm.item_head import ItemResidual, attach_item_residual

        attach_item_residual(model, ItemResidual(codes.num_items, int(model.get_output_embeddings().weight.shape[1])))
    peft_model = apply_lora(model, config, token_ids)
    return PreparedModel(peft_model, tokenizer, token_ids, vocabulary, report, tied, name)


def merge(prepared_model: Any) -> Any:
    """The plain model with LoRA and the trained code rows merged in (modifies ``prepared_model``)."""
    merged = prepared_model.merge_and_unload()
    merged.config.use_cache = True
    return merged


def trainable_parameter_counts(model: Any) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total)}


# ----------------------------------------------------------------------------- the job


@dataclass
class FinetuneResult:
    out_dir: Path
    metrics: dict[str, Any]
    trainer: Any = field(repr=False, default=None)


class FinetuneJob:
    """One fine-tuning run, in steps: :meth:`prepare`, :meth:`train`, :meth:`save` (or :meth:`run`)."""

    def __init__(self, config: FinetuneConfig, run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                 resume: bool = False, overwrite: bool = False, backbone: tuple[Any, Any] | None = None):
        self.paths = RecipePaths.resolve(config, run_dir, out_dir)
        self.config = config
        self.resume = resume
        self.overwrite = overwrite
        self.backbone = backbone
        self.trainer: Any = None
        self.prepared: PreparedModel | None = None
        self.metrics: dict[str, Any] = {}
        self._inputs: dict[str, dict[str, str]] | None = None

    # -- checks ---------------------------------------------------------------------------
    def _checkpoint(self) -> str | None:
        """The newest *complete* checkpoint; newer incomplete ones (a kill during a save) are removed.

        The Trainer writes ``trainer_state.json`` last, after the adapter, optimizer, scheduler and
        RNG states, so a checkpoint is whole exactly when that file is there and parses.
        """
        trainer_dir = self.paths.trainer_dir
        if not trainer_dir.is_dir():
            return None
        steps = sorted((int(p.name.split("-")[1]), p) for p in trainer_dir.glob("checkpoint-*")
                       if p.is_dir() and p.name.split("-")[1].isdigit())
        for _, folder in reversed(steps):
            try:
                json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.warning("%s is incomplete (interrupted while saving); removing it", folder)
                if self._is_main():
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            return str(folder)
        return None

    def _check_resume(self) -> str | None:
        checkpoint = self._checkpoint()
        start_file = self.paths.trainer_dir / START_CONFIG
        if self.resume:
            if checkpoint is None:
                # Nothing saved yet (e.g. stopped before the first checkpoint): a fresh start is the resume.
                log.warning("--resume: no checkpoint in %s yet; starting from the beginning", self.paths.trainer_dir)
                return None
            saved = from_mapping(FinetuneConfig, renamed_settings(read_json(start_file)["config"]), source=str(start_file))
            changed = sorted(k for k, v in to_dict(saved).items()
                             if to_dict(self.config)[k] != v and k not in RESUMABLE_CHANGES)
            if changed:
                detail = ", ".join(f"{k}: {to_dict(saved)[k]!r} -> {to_dict(self.config)[k]!r}" for k in changed)
                raise InputError(
                    f"--resume: settings differ from the run being resumed ({start_file}): {detail}; only "
                    f"{sorted(RESUMABLE_CHANGES)} may change"
                )
            self._check_inputs_unchanged(read_json(start_file).get("inputs"), start_file)
            log.info("resuming from %s", checkpoint)
            return checkpoint
        if checkpoint is not None:
            if not self.overwrite:
                raise InputError(
                    f"{self.paths.trainer_dir} holds checkpoints of an earlier run; pass --resume to continue it "
                    "or --overwrite to start again"
                )
            if self._is_main():
                shutil.rmtree(self.paths.trainer_dir)
        return None

    def _input_hashes(self) -> dict[str, dict[str, str]]:
        """``{name: {"path", "sha256"}}`` of the inputs the checkpoints learn from (the files present; hashed once)."""
        from alignrec.tasks.build import FORMAT_FILE

        if self._inputs is None:
            tasks, codes = self.paths.tasks_dir, self.paths.codes_dir
            files = {"train": tasks / "train.jsonl", "valid": tasks / "valid.jsonl", "format": tasks / FORMAT_FILE,
                     "codes": codes / "item_codes.parquet", "codes_meta": codes / "codes_meta.json"}
            self._inputs = {name: {"path": str(path), "sha256": sha256_file(path)}
                            for name, path in files.items() if path.is_file()}
        return self._inputs

    def _check_inputs_unchanged(self, started: dict[str, dict[str, str]] | None, start_file: Path) -> None:
        """Refuse a resume whose tasks or codes differ from the ones the run started with."""
        if started is None:
            log.warning("--resume: %s was written by an older alignrec and records no input hashes; "
                        "cannot check that the tasks and codes are the ones the run started with", start_file)
            return
        now = self._input_hashes()
        changed = []
        for name in sorted(set(started) | set(now)):
            if name not in now:
                changed.append(f"{name} ({started[name]['path']}) is gone")
            elif name not in started:
                changed.append(f"{name} ({now[name]['path']}) is new")
            elif now[name]["sha256"] != started[name]["sha256"]:
                changed.append(f"{name} ({now[name]['path']}) changed")
        if changed:
            raise InputError(
                f"--resume: the inputs differ from the ones the run started with ({start_file}): {'; '.join(changed)}; "
                "its checkpoints learnt from the old ones. Run again with --overwrite instead of --resume to start "
                "again on these inputs, or restore the old ones to continue"
            )

    @staticmethod
    def _is_main() -> bool:
        return int(os.environ.get("RANK", "0")) == 0

    # -- steps ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Read codes and tasks, build the model and the tokenised data sets."""
        import torch

        from alignrec.finetune.data import encode_records
        from alignrec.tasks.build import read_examples, read_format
        from alignrec.tokenizer.codes import ItemCodes

        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        self.resume_from = self._check_resume()
        codes = ItemCodes.load(self.paths.codes_dir)
        self.codes = codes
        train_records = read_examples(self.paths.tasks_dir / "train.jsonl")
        valid_path = self.paths.tasks_dir / "valid.jsonl"
        valid_records = read_examples(valid_path) if valid_path.is_file() else []
        self._check_codes_cover(train_records, codes)
        if self.config.max_train_examples and len(train_records) > self.config.max_train_examples:
            import numpy as np

            chosen = np.sort(np.random.default_rng(self.config.seed).choice(
                len(train_records), self.config.max_train_examples, replace=False))
            train_records = [train_records[i] for i in chosen]
        valid_records = valid_records[: self.config.max_eval_examples]

        item_texts = self._item_texts() if self.config.new_token_init == "mlp" else None
        self.prepared = prepare_model(self.config, codes, self.paths, item_texts, self.backbone)
        tokenizer = self.prepared.tokenizer
        sequence_format = read_format(self.paths.tasks_dir, train_records)
        self.settings = ModelSettings(
            head=self.config.head,
            sequential_format=sequence_format.kind,
            max_history=sequence_format.max_history,
            llm_layers=int(self.prepared.model.get_base_model().config.num_hidden_layers),
            codes_version=codes_fingerprint(codes),
            item_loss_weight=float(self.config.item_loss_weight),
            item_residual=bool(self.config.item_residual),
        )
        self.train_data = encode_records(tokenizer, train_records, self.config.max_length)
        self.valid_data = encode_records(tokenizer, valid_records, self.config.max_length)
        if len(self.train_data) == 0:
            raise InputError(f"{self.paths.tasks_dir / 'train.jsonl'}: no example fits in max_length={self.config.max_length}")
        if self.train_data.dropped_too_long:
            log.warning("%d training examples longer than max_length=%d dropped",
                        self.train_data.dropped_too_long, self.config.max_length)
        self.metrics.update(
            train_examples=len(self.train_data),
            train_dropped_too_long=self.train_data.dropped_too_long,
            train_tokens_per_epoch=self.train_data.total_tokens,
            answer_tokens_per_epoch=self.train_data.answer_tokens,
            valid_examples=len(self.valid_data),
            code_tokens=len(self.prepared.code_token_ids),
            code_label_tokens_per_epoch=self._code_labels(self.train_data),
            settings=dataclasses.asdict(self.settings),
            tied_embeddings=self.prepared.tied_embeddings,
            new_token_init=self.prepared.init_report,
            parameters=trainable_parameter_counts(self.prepared.model),
        )
        if self._is_main():
            # The input hashes are the same as at the start (a resume refuses others), or recorded now when an
            # older alignrec started the run without them.
            atomic_write_json(self.paths.trainer_dir / START_CONFIG,
                              {"config": to_dict(self.config), "inputs": self._input_hashes()})

    def _code_labels(self, data: Any) -> int:
        """Supervised tokens that are code tokens (what the code-only head learns from)."""
        codes = set(self.prepared.code_token_ids) if self.prepared else set()
        return sum(sum(1 for label in f["labels"] if label in codes) for f in data.features)

    def _check_codes_cover(self, records: list[dict[str, Any]], codes: Any) -> None:
        """Every code token in the tasks must belong to the codes in use (else they were built from other codes)."""
        from alignrec.tokenizer.codes import ItemCodes

        sizes = codes.codebook_sizes
        for record in records[:2000]:  # a sample is enough to catch mixed-up runs
            for level, code in ItemCodes.parse(record["answer"]) + ItemCodes.parse(record["prompt"]):
                if level >= len(sizes) or code >= sizes[level]:
                    raise InputError(
                        f"{self.paths.tasks_dir / 'train.jsonl'}: code token level {level} code {code} is outside the "
                        f"item codes in {self.paths.codes_dir} (sizes {sizes}); rebuild the tasks with these codes"
                    )

    def _item_texts(self) -> list[str] | None:
        try:
            from alignrec.data import load_dataset

            return load_dataset(self.paths.run_dir).item_texts()
        except InputError as error:
            log.warning("mlp init: no data set to read item texts from (%s)", error)
            return None

    def train(self) -> None:
        """Run the Trainer (resuming when asked)."""
        from transformers import EarlyStoppingCallback

        from alignrec.finetune.data import PaddingCollator, answer_loss

        if self.prepared is None:
            self.prepare()
        assert self.prepared is not None
        import torch

        config = self.config
        has_eval = len(self.valid_data) > 0
        args = training_arguments(config, self.paths.trainer_dir, has_eval=has_eval)
        code_head = config.head == "code"
        collator = PaddingCollator(int(self.prepared.tokenizer.pad_token_id), 8 if torch.cuda.is_available() else None,
                                   answer_logits_only=config.answer_logits_only and not code_head,
                                   hidden_states=code_head)
        if code_head:
            catalogue = None
            if config.item_loss_weight:
                from alignrec.llm.item_head import ItemCatalogue

                catalogue = ItemCatalogue(self.codes.codes, self.codes.codebook_sizes)
            teacher = None
            if config.distill_weight:
                from alignrec.finetune.distill import Teacher

                if not config.distill_from:
                    raise InputError("distill_weight > 0: give distill_from, the collab run folder of the teacher")
                teacher = Teacher.load(config.distill_from, data=self.paths.run_dir, temperature=config.distill_temperature)
                log.info("distilling %s (%d items) into the item head, weight %g, temperature %g",
                         config.distill_from, teacher.num_items, config.distill_weight, config.distill_temperature)
            loss_function: Any = CodeOnlyLoss(self.prepared.model, self.prepared.vocabulary, catalogue, config.item_loss_weight,
                                              teacher=teacher, distill_weight=config.distill_weight)
        else:
            loss_function = answer_loss if config.answer_logits_only else None
        earlier = earlier_train_seconds(self.resume_from)
        if earlier is None:
            log.warning("%s has no record of its training time (%s); the total counts this session only",
                        self.resume_from, TRAIN_TIME_FILE)
        callbacks: list[Any] = [loss_curve_callback(self.paths.out_dir), train_time_callback(earlier or 0.0)]
        if config.max_train_minutes:
            callbacks.append(time_budget_callback(config.max_train_minutes))
        if config.early_stopping_patience and has_eval:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
        if progress_enabled() and not progress_draws():
            callbacks.append(progress_lines_callback())
        callbacks.append(log_at_checkpoints_callback())  # last: after the time budget asks for a save
        self.trainer = ranking_trainer_class()(
            model=self.prepared.model,
            args=args,
            data_collator=collator,
            train_dataset=self.train_data,
            eval_dataset=self.valid_data if has_eval else None,
            callbacks=callbacks,
            compute_loss_func=loss_function,
        )
        if not progress_draws():
            from transformers import PrinterCallback

            self.trainer.remove_callback(PrinterCallback)  # a dict per log; progress_lines_callback logs instead
        validation = (self._validation_ranker(required=bool(config.rank_eval_steps))
                      if has_eval and (config.rank_eval_steps or config.item_loss_weight) else None)
        if config.rank_eval_steps and has_eval:
            self.trainer.ranker = validation
        elif config.rank_eval_steps:
            log.warning("rank_eval_steps: no validation examples (tasks/valid.jsonl); the ranking evaluation is off")
        started = time.perf_counter()
        output = self.trainer.train(resume_from_checkpoint=self.resume_from)
        wall = time.perf_counter() - started
        state = self.trainer.state
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        this_session = wall > 0 and not self.resume_from  # a resumed run counts from where it resumed
        epochs = float(state.epoch or 0)
        code_labels = int(self.metrics.get("code_label_tokens_per_epoch", 0) * epochs)
        resumed_step = int(read_json(Path(self.resume_from) / "trainer_state.json")["global_step"]) if self.resume_from else 0
        train_loss = run_train_loss(state.log_history, resumed_step, float(output.training_loss), int(state.global_step))
        self.metrics.update(
            steps=int(state.global_step),
            epochs=round(epochs, 4),
            train_loss=round(train_loss, 6) if train_loss is not None else None,  # every session of this run
            train_seconds=round(wall, 2),  # this session
            # every session of this run (resumes add up); None when a checkpoint had no record
            train_seconds_total=round(earlier + wall, 2) if earlier is not None else None,
            world_size=int(args.world_size),
            input_tokens_seen=tokens,
            train_tokens_per_second=round(tokens / wall, 1) if tokens and this_session else None,
            # Code labels learnt per second (an epoch's code labels x epochs done / wall time).
            code_tokens_per_second=round(code_labels / wall, 1) if code_labels and this_session else None,
            padding_share=round(collator.padding_share, 4) if collator.padding_share is not None else None,
        )
        ranking = [e for e in state.log_history if "eval_ndcg@10" in e]
        if ranking:
            best = max(ranking, key=lambda e: (e["eval_ndcg@10"], -e["step"]))
            self.metrics["validation_ranking"] = {
                "users": len(self.trainer.ranker.histories) if self.trainer.ranker else None,
                "best_step": best["step"], "best_ndcg@10": best["eval_ndcg@10"], "best_hr@10": best["eval_hr@10"],
                "history": [{"step": e["step"], "ndcg@10": e["eval_ndcg@10"], "hr@10": e["eval_hr@10"]} for e in ranking],
            }
        self._choose_ranker(validation)
        last_losses = [e["loss"] for e in state.log_history if "loss" in e]
        if last_losses:
            self.metrics["last_logged_loss"] = last_losses[-1]
        if len(self.valid_data):
            evaluation = self.trainer.evaluate(self.valid_data)  # the loss only (the ranking ran during training)
            loss = evaluation.get("eval_loss")
            self.metrics["eval_loss"] = round(float(loss), 6) if loss is not None and math.isfinite(loss) else None

    def _validation_ranker(self, required: bool) -> ValidationRanker | None:
        """The ranking check on validation users; when not ``required`` (only the ranker's choice needs it),
        None if the run folder has no data set to read them from."""
        from alignrec.data import load_dataset

        try:
            dataset = load_dataset(self.paths.run_dir)
        except InputError as error:
            if required:
                raise
            log.warning("no data set for the ranker's choice on validation users (%s)", error)
            return None
        config = self.config
        return ValidationRanker(dataset, self.codes, self.prepared.tokenizer, self.settings, self.prepared.vocabulary,
                                users=config.rank_eval_users, seed=config.seed, beam=config.rank_eval_beam,
                                batch_size=config.eval_batch_size or 32, mode="training")

    def _choose_ranker(self, validation: ValidationRanker | None) -> None:
        """Record in the model's settings how it ranks (``config.ranker``; auto and fused choose on validation)."""
        config = self.config
        if not config.item_loss_weight:
            return  # no item head: beam search, as every model before it
        allowed = ("beam", "item", "fused") if config.ranker == "auto" else (config.ranker,)
        if config.ranker in ("beam", "item"):
            choice: dict[str, Any] = {"ranker": config.ranker, "fusion_weight": 0.0}
        elif validation is None:  # nothing to choose on: fused at weight 1, auto as every model without the head
            choice = {"ranker": "fused", "fusion_weight": 1.0} if config.ranker == "fused" else {"ranker": "beam", "fusion_weight": 0.0}
            log.warning("ranker %s: no validation users to choose on; using %s", config.ranker, choice)
        else:
            started = time.perf_counter()
            choice = validation.choose_ranker(self.trainer.accelerator.unwrap_model(self.trainer.model), allowed)
            choice["seconds"] = round(time.perf_counter() - started, 2)
            log.info("ranker chosen on %d validation users: %s (fusion weight %g), NDCG@10 %s", choice["users"],
                     choice["ranker"], choice["fusion_weight"],
                     ", ".join(f"{c['ranker']}{'' if c['ranker'] != 'fused' else ' ' + format(c['fusion_weight'], 'g')} "
                               f"{c['ndcg@10']:.4f}" for c in choice["candidates"]))
        self.settings = dataclasses.replace(self.settings, ranker=choice["ranker"], fusion_weight=float(choice["fusion_weight"]))
        self.metrics["settings"] = dataclasses.asdict(self.settings)
        self.metrics["ranker_choice"] = choice

    def save(self) -> Path:
        """Main process: merged model, adapter, codes, loss curve, metrics, run record."""
        if self.trainer is None:
            raise RuntimeError("train() first")
        self.trainer.accelerator.wait_for_everyone()
        out = self.paths.out_dir
        if not self.trainer.is_world_process_zero():
            return out
        assert self.prepared is not None
        peft_model = self.trainer.model
        tokenizer = self.prepared.tokenizer
        if self.config.save_adapter:
            with atomic_directory(out / "adapter") as tmp:
                peft_model.peft_config["default"].base_model_name_or_path = self.prepared.backbone
                peft_model.save_pretrained(tmp, save_embedding_layers=False)
                tokenizer.save_pretrained(tmp)
        merged = merge(peft_model)
        # The model records the fingerprint of its codes: readers refuse a model/ beside other codes
        # (a kill between the two writes below leaves such a pair; the next run rewrites both).
        self.settings.store(merged)
        with atomic_directory(out / "model") as tmp:
            write_model(merged, tokenizer, tmp)
        self.codes.save(out)
        plot_loss_curve(self.trainer.state.log_history, out / "loss_curve.png")
        atomic_write_json(out / "loss_curve.json", self.trainer.state.log_history)
        atomic_write_json(out / "metrics.json", self.metrics)
        inputs = {"train": self.paths.tasks_dir / "train.jsonl", "codes": self.paths.codes_dir / "item_codes.parquet"}
        if (self.paths.tasks_dir / "valid.jsonl").is_file():
            inputs["valid"] = self.paths.tasks_dir / "valid.jsonl"
        if self.config.new_token_init == "sa_init":
            inputs["code_descriptions"] = self.paths.code_descriptions
        if self.config.new_token_init == "mlp":
            inputs["codebooks"] = self.paths.codebooks
        write_run_record(out, self.config, stage="finetune", seed=self.config.seed, inputs=inputs,
                         extra={"metrics": self.metrics, "resumed_from": self.resume_from})
        log.info("fine-tuned model written to %s (train loss %.4f)", out / "model", self.metrics.get("train_loss", float("nan")))
        return out

    def run(self) -> FinetuneResult:
        self.prepare()
        self.train()
        out = self.save()
        return FinetuneResult(out, self.metrics, self.trainer)


def finetune(config: FinetuneConfig, run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
             resume: bool = False, overwrite: bool = False, backbone: tuple[Any, Any] | None = None) -> FinetuneResult:
    """Fine-tune on ``RUN/tasks`` with the codes in ``RUN/tokenizer``; write ``OUT`` (default RUN/finetune)."""
    return FinetuneJob(config, run_dir, out_dir, resume=resume, overwrite=overwrite, backbone=backbone).run()
