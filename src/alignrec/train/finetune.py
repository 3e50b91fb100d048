"""``alignrec finetune``: LoRA fine-tuning of a causal LM on the alignment tasks.

Recipe (one process, or one per device under ``torchrun`` / ``accelerate launch``):

1. load the backbone (:mod:`alignrec.llm.backbone`), add every code token of the item codes to
   the tokenizer and the embedding/output matrices (:func:`alignrec.llm.vocab.add_code_tokens`),
   initialise their rows (:mod:`alignrec.llm.init`: default / sa_init / mlp);
2. wrap it with peft LoRA on the attention and MLP projections; the code-token rows are trained
   through peft's trainable tokens (only those rows, not the whole matrices; with tied input and
   output embeddings — SmolLM2 — one set of rows serves both, peft keeps the tie);
3. train with the Hugging Face Trainer (gradient accumulation, gradient checkpointing, bf16 on
   GPUs, DDP/DeepSpeed through the launcher, resumable checkpoints in ``OUT/trainer_state``);
4. on the main process: merge LoRA into the weights and write ``OUT/model`` (a plain Hugging
   Face folder with the code tokens in its tokenizer), ``OUT/adapter`` (unmerged adapter),
   ``OUT/item_codes.parquet`` + ``codes_meta.json``, ``loss_curve.png``/``.json``,
   ``metrics.json`` and ``config.json`` (resolved config, inputs, seed).

Resuming (``--resume``) continues from the newest checkpoint in ``OUT/trainer_state`` (and
starts from the beginning when there is none yet). The
config the run started with is stored there; a resumed run must use the same settings except
the ones in :data:`alignrec.train.config.RESUMABLE_CHANGES` (how long, how often to log/save).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignrec.config import from_mapping, to_dict, write_run_record
from alignrec.errors import InputError
from alignrec.train.config import RESUMABLE_CHANGES, FinetuneConfig
from alignrec.utils.io import atomic_directory, atomic_path, atomic_write_json, read_json
from alignrec.utils.log import get_logger, progress_enabled

log = get_logger(__name__)

TRAINER_DIR = "trainer_state"
START_CONFIG = "finetune_config.json"


@dataclass
class FinetunePaths:
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
                out_dir: str | os.PathLike[str] | None = None) -> FinetunePaths:
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


# ----------------------------------------------------------------------------- model


@dataclass
class PreparedModel:
    """A LoRA-wrapped model ready to train, its tokenizer and what was done to the vocabulary."""

    model: Any  # peft.PeftModel
    tokenizer: Any
    code_token_ids: list[int]
    init_report: dict[str, Any]
    tied_embeddings: bool
    backbone: str


def module_name_of(model: Any, module: Any) -> str:
    """The attribute name (last path component) of ``module`` inside ``model``."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    raise ValueError("module not found in model")


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 on a GPU that supports it, else fp32; refuse fp16 without a GPU."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise InputError("precision fp16 needs a CUDA GPU (use fp32 or bf16 on a CPU)")
    return precision


def apply_lora(model: Any, config: FinetuneConfig, code_token_ids: list[int]) -> Any:
    """Wrap ``model`` with LoRA adapters and (optionally) trainable code-token rows."""
    from peft import LoraConfig, TaskType, get_peft_model

    from alignrec.llm.init import output_matrix_is_tied

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
    )
    peft_model = get_peft_model(model, lora)
    # Checkpoints hold the adapter and the trained code rows; without a base id peft does not
    # look the base up (a hub call for GGUF folders) nor save the whole resized matrices.
    peft_model.peft_config["default"].base_model_name_or_path = None
    return peft_model


def prepare_model(config: FinetuneConfig, codes: Any, paths: FinetunePaths | None = None,
                  item_texts: list[str] | None = None, backbone: tuple[Any, Any] | None = None) -> PreparedModel:
    """Load (or take) the backbone, add and initialise the code tokens, apply LoRA.

    ``backbone`` = (model, tokenizer) skips loading ``config.llm`` (tests pass tiny models).
    """
    import torch

    from alignrec.llm.backbone import load_backbone
    from alignrec.llm.init import InitInputs, initialise_new_tokens, output_matrix_is_tied
    from alignrec.llm.vocab import add_code_tokens

    torch.manual_seed(config.seed)  # the resize init draws random numbers: same rows on every rank/resume
    if backbone is None:
        model, tokenizer, _ = load_backbone(config.llm)
        name = config.llm
    else:
        model, tokenizer = backbone
        name = "<in-memory model>"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokens = codes.vocabulary()
    token_ids = add_code_tokens(tokenizer, model, tokens)
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
    peft_model = apply_lora(model, config, token_ids)
    return PreparedModel(peft_model, tokenizer, token_ids, report, tied, name)


def merge(prepared_model: Any) -> Any:
    """The plain model with LoRA and the trained code rows merged in (modifies ``prepared_model``)."""
    merged = prepared_model.merge_and_unload()
    merged.config.use_cache = True
    return merged


def trainable_parameter_counts(model: Any) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total)}


# ----------------------------------------------------------------------------- trainer plumbing


def training_arguments(config: FinetuneConfig, output_dir: Path, has_eval: bool) -> Any:
    """``TrainingArguments`` for ``config`` (keyword names checked against the installed version)."""
    import torch
    from transformers import TrainingArguments

    precision = resolve_precision(config.precision)
    cuda = torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.eval_batch_size or config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps or -1,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "eval_strategy": "steps" if (config.eval_steps and has_eval) else "no",
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "report_to": "none",
        "seed": config.seed,
        "data_seed": config.seed,
        "dataloader_num_workers": config.dataloader_workers,
        "remove_unused_columns": False,
        "label_names": ["labels"],
        "prediction_loss_only": True,  # evaluation needs the loss only; never gather (B, T, V) logits
        "use_cpu": not cuda,
        "disable_tqdm": not progress_enabled(),
        "ddp_find_unused_parameters": False if distributed else None,
        "ddp_backend": config.ddp_backend or (("nccl" if cuda else "gloo") if distributed else None),
        "deepspeed": config.deepspeed,
    }
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA) without enable_input_require_grads.
        name = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
        kwargs[name] = True
        kwargs[f"{name}_kwargs"] = {"use_reentrant": False}
    if config.eval_steps and has_eval:
        kwargs["eval_steps"] = config.eval_steps
    # transformers 5 takes the warm-up ratio as a float warmup_steps; 4.x has warmup_ratio.
    if "warmup_ratio" in known:
        kwargs["warmup_ratio"] = config.warmup_ratio
    else:
        kwargs["warmup_steps"] = config.warmup_ratio
    if config.group_by_length:
        if "train_sampling_strategy" in known:
            kwargs["train_sampling_strategy"] = "group_by_length"
        else:
            kwargs["group_by_length"] = True
    if "include_num_input_tokens_seen" in known:
        kwargs["include_num_input_tokens_seen"] = "non_padding"
    if config.deepspeed and not cuda:
        raise InputError("--deepspeed needs CUDA GPUs; on CPUs run plain DDP through torchrun")
    return TrainingArguments(**{k: v for k, v in kwargs.items() if k in known and v is not None})


def plot_loss_curve(log_history: list[dict[str, Any]], path: Path, title: str = "fine-tuning loss") -> None:
    """Training (and evaluation) loss against the optimizer step, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evaluation = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train), label="train loss", color="tab:blue")
    if evaluation:
        axis.plot(*zip(*evaluation), "o-", label="valid loss (inference prompt)", color="tab:orange")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross-entropy on answer tokens")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if train or evaluation:
        axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)


def _loss_callback(out_dir: Path) -> Any:
    from transformers import TrainerCallback

    class LossCurveCallback(TrainerCallback):
        """Keeps ``loss_curve.json`` current at every log and redraws the PNG at every save."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                atomic_write_json(out_dir / "loss_curve.json", state.log_history)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                plot_loss_curve(state.log_history, out_dir / "loss_curve.png")

    return LossCurveCallback()


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
        self.paths = FinetunePaths.resolve(config, run_dir, out_dir)
        self.config = config
        self.resume = resume
        self.overwrite = overwrite
        self.backbone = backbone
        self.trainer: Any = None
        self.prepared: PreparedModel | None = None
        self.metrics: dict[str, Any] = {}

    # -- checks ---------------------------------------------------------------------------
    def _checkpoint(self) -> str | None:
        from transformers.trainer_utils import get_last_checkpoint

        trainer_dir = self.paths.trainer_dir
        return get_last_checkpoint(str(trainer_dir)) if trainer_dir.is_dir() else None

    def _check_resume(self) -> str | None:
        checkpoint = self._checkpoint()
        start_file = self.paths.trainer_dir / START_CONFIG
        if self.resume:
            if checkpoint is None:
                # Nothing saved yet (e.g. stopped before the first checkpoint): a fresh start is the resume.
                log.warning("--resume: no checkpoint in %s yet; starting from the beginning", self.paths.trainer_dir)
                return None
            saved = from_mapping(FinetuneConfig, read_json(start_file)["config"], source=str(start_file))
            changed = sorted(k for k, v in to_dict(saved).items()
                             if to_dict(self.config)[k] != v and k not in RESUMABLE_CHANGES)
            if changed:
                detail = ", ".join(f"{k}: {to_dict(saved)[k]!r} -> {to_dict(self.config)[k]!r}" for k in changed)
                raise InputError(
                    f"--resume: settings differ from the run being resumed ({start_file}): {detail}; only "
                    f"{sorted(RESUMABLE_CHANGES)} may change"
                )
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

    @staticmethod
    def _is_main() -> bool:
        return int(os.environ.get("RANK", "0")) == 0

    # -- steps ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Read codes and tasks, build the model and the tokenised data sets."""
        import torch

        from alignrec.tasks.build import read_examples
        from alignrec.tokenizer.codes import ItemCodes
        from alignrec.train.data import encode_records

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
            tied_embeddings=self.prepared.tied_embeddings,
            new_token_init=self.prepared.init_report,
            parameters=trainable_parameter_counts(self.prepared.model),
        )
        if self._is_main():
            atomic_write_json(self.paths.trainer_dir / START_CONFIG, {"config": to_dict(self.config)})

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
        from transformers import Trainer

        from alignrec.train.data import PaddingCollator, answer_loss

        if self.prepared is None:
            self.prepare()
        assert self.prepared is not None
        import torch

        args = training_arguments(self.config, self.paths.trainer_dir, has_eval=len(self.valid_data) > 0)
        collator = PaddingCollator(int(self.prepared.tokenizer.pad_token_id), 8 if torch.cuda.is_available() else None,
                                   answer_logits_only=self.config.answer_logits_only)
        self.trainer = Trainer(
            model=self.prepared.model,
            args=args,
            data_collator=collator,
            train_dataset=self.train_data,
            eval_dataset=self.valid_data if len(self.valid_data) else None,
            callbacks=[_loss_callback(self.paths.out_dir)],
            compute_loss_func=answer_loss if self.config.answer_logits_only else None,
        )
        started = time.perf_counter()
        output = self.trainer.train(resume_from_checkpoint=self.resume_from)
        wall = time.perf_counter() - started
        state = self.trainer.state
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.metrics.update(
            steps=int(state.global_step),
            epochs=round(float(state.epoch or 0), 4),
            train_loss=round(float(output.training_loss), 6),
            train_seconds=round(wall, 2),
            world_size=int(args.world_size),
            input_tokens_seen=tokens,
            # Over this session only (a resumed run counts from where it resumed).
            train_tokens_per_second=round(tokens / wall, 1) if tokens and wall > 0 and not self.resume_from else None,
        )
        last_losses = [e["loss"] for e in state.log_history if "loss" in e]
        if last_losses:
            self.metrics["last_logged_loss"] = last_losses[-1]
        if len(self.valid_data):
            evaluation = self.trainer.evaluate()
            loss = evaluation.get("eval_loss")
            self.metrics["eval_loss"] = round(float(loss), 6) if loss is not None and math.isfinite(loss) else None

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
        with atomic_directory(out / "model") as tmp:
            merged.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
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
