"""The Trainer glue of ``alignrec finetune``: what the recipe (:mod:`alignrec.finetune.recipe`)
hands the Hugging Face Trainer.

- :func:`training_arguments`: ``TrainingArguments`` from the config, with the shims that keep
  one config across transformers 4.x and 5;
- callbacks: the loss curve (JSON at every log, PNG at every save), training time across resumes,
  a wall-clock budget, a log at every checkpoint (:func:`run_train_loss`: the mean loss over every session);
- :class:`CodeOnlyLoss`: the Trainer's ``compute_loss_func`` for the code-only head;
- :class:`ValidationRanker` and the ranking trainer: HR@10 / NDCG@10 of constrained beam search
  on validation users at every evaluation, for checkpoint selection and early stopping.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignrec.errors import InputError
from alignrec.finetune.config import FinetuneConfig
from alignrec.utils.io import atomic_path, atomic_write_json, read_json
from alignrec.utils.log import get_logger, progress_draws, progress_enabled, progress_step

log = get_logger(__name__)


def training_arguments(config: FinetuneConfig, output_dir: Path, has_eval: bool) -> Any:
    """``TrainingArguments`` for ``config`` (keyword names checked against the installed version)."""
    import torch
    from transformers import TrainingArguments

    from alignrec.llm.backbone import resolve_dtype

    cuda = torch.cuda.is_available()
    # Weights stay float32; bfloat16/float16 is the Trainer's mixed precision (autocast).
    dtype = resolve_dtype(config.dtype, "cuda" if cuda else "cpu")
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
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "report_to": "none",
        "seed": config.seed,
        "data_seed": config.seed,
        "dataloader_num_workers": config.dataloader_workers,
        "remove_unused_columns": False,
        "label_names": ["labels"],
        "prediction_loss_only": True,  # evaluation needs the loss only; never gather (B, T, V) logits
        "use_cpu": not cuda,
        "disable_tqdm": not progress_draws(),  # in a log file: progress_lines_callback instead
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
    if config.rank_eval_steps and has_eval:
        # The ranking evaluation rides on the Trainer's evaluation; the best checkpoint by it is kept.
        kwargs.update(eval_strategy="steps", eval_steps=config.rank_eval_steps, save_steps=config.rank_eval_steps,
                      load_best_model_at_end=True, metric_for_best_model="eval_ndcg@10", greater_is_better=True)
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
    ranking = [(e["step"], e["eval_ndcg@10"], e["eval_hr@10"]) for e in log_history if "eval_ndcg@10" in e and "step" in e]
    figure, axes = plt.subplots(1, 2 if ranking else 1, figsize=(12 if ranking else 7, 4), squeeze=False)
    axis = axes[0][0]
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
    if ranking:
        metric_axis = axes[0][1]
        steps, ndcg, hr = zip(*ranking)
        metric_axis.plot(steps, ndcg, "o-", label="valid NDCG@10", color="tab:green")
        metric_axis.plot(steps, hr, "s--", label="valid HR@10", color="tab:purple")
        metric_axis.set_xlabel("optimizer step")
        metric_axis.set_title("validation ranking (constrained beam search)")
        metric_axis.grid(alpha=0.3)
        metric_axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)


def loss_curve_callback(out_dir: Path) -> Any:
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


TRAIN_TIME_FILE = "alignrec_train_seconds.json"  # in each checkpoint: training seconds up to it, all sessions


def train_time_callback(earlier_seconds: float) -> Any:
    from transformers import TrainerCallback

    class TrainTime(TrainerCallback):
        """Writes, into every checkpoint, the training seconds up to it over every session (resumes add up)."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                seconds = earlier_seconds + time.perf_counter() - self.started
                atomic_write_json(folder / TRAIN_TIME_FILE, {"train_seconds": round(seconds, 2)})

    return TrainTime()


def earlier_train_seconds(checkpoint: str | None) -> float | None:
    """Training seconds recorded in ``checkpoint`` (0 for a fresh start; None when it has no record)."""
    if checkpoint is None:
        return 0.0
    try:
        return float(read_json(Path(checkpoint) / TRAIN_TIME_FILE)["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def log_at_checkpoints_callback() -> Any:
    from transformers import TrainerCallback

    class LogAtCheckpoints(TrainerCallback):
        """Logs the training loss at every step that saves or evaluates (after the callbacks that ask for a save).

        Each logged ``loss`` is the mean over the steps since the previous log; with a log at every
        checkpoint, a checkpoint's log history covers every step up to it, which a resumed run needs for
        its whole-run mean (:func:`run_train_loss`): the steps after the last log are not in the checkpoint.
        """

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if control.should_save or control.should_evaluate:
                control.should_log = True

    return LogAtCheckpoints()


def run_train_loss(log_history: list[dict[str, Any]], resumed_step: int, session_loss: float,
                   global_step: int) -> float | None:
    """Mean training loss over every step of a run, all sessions (the Trainer's own covers its session only).

    The steps up to ``resumed_step`` (the checkpoint this session resumed from; 0 for a fresh start) come
    from the log history: each ``loss`` entry is the mean over the steps since the previous entry. The
    steps of this session (up to ``global_step``) come from the Trainer's mean over them, ``session_loss``.
    Steps that no entry covers (a checkpoint of an older alignrec saved between two logs) are left out.
    """
    total, steps, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry and entry["step"] <= resumed_step:
            total += float(entry["loss"]) * (entry["step"] - previous)
            steps += entry["step"] - previous
            previous = entry["step"]
    if previous < resumed_step:
        log.warning("the loss of steps %d-%d was not logged before checkpoint-%d; train_loss leaves them out",
                    previous + 1, resumed_step, resumed_step)
    session = global_step - resumed_step
    total += session_loss * session
    steps += session
    return total / steps if steps else None


def progress_lines_callback() -> Any:
    """For a log file (stderr not a terminal): one line every few percent of the steps, with the
    latest logged loss, instead of the Trainer's redrawn bar or its dict at every log."""
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started, self.first_step = time.perf_counter(), state.global_step

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            total, step = int(state.max_steps or 0), int(state.global_step)
            if not state.is_local_process_zero or total <= 0:
                return
            if step % progress_step(total) and step != total:
                return
            losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
            elapsed = time.perf_counter() - self.started
            done = step - self.first_step
            eta = elapsed / done * (total - step) if done > 0 else float("nan")
            log.info("finetune: step %d/%d (%d%%), loss %s, %.0f s elapsed, ~%.0f s left", step, total,
                     100 * step // total, f"{losses[-1]:.4g}" if losses else "-", elapsed, eta)

    return ProgressLines()


def time_budget_callback(minutes: float) -> Any:
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Stops training after ``minutes`` of wall-clock time (checked after every step)."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if time.perf_counter() - self.started >= minutes * 60:
                control.should_training_stop = True
                control.should_save = True
                control.should_evaluate = bool(args.load_best_model_at_end)

    return TimeBudget()


class CodeOnlyLoss:
    """``compute_loss_func`` of the Trainer for ``head: code`` (see :mod:`alignrec.llm.code_head`).

    The batch asks the model for its final hidden states (the collator adds
    ``output_hidden_states``); the loss is summed over the supervised positions and divided by
    the Trainer's token count of the whole accumulated batch, like the models' own loss.
    """

    def __init__(self, model: Any, vocabulary: Any, catalogue: Any = None, item_loss_weight: float = 0.0,
                 teacher: Any = None, distill_weight: float = 0.0):
        self.model = model  # the unwrapped (peft) model: its output rows are read directly
        self.vocabulary = vocabulary
        # the item head (alignrec.llm.item_head): its summed catalogue cross-entropy joins the total, weighted
        self.catalogue = catalogue
        self.item_loss_weight = item_loss_weight
        if item_loss_weight and catalogue is None:
            raise ValueError("item_loss_weight > 0 needs the item catalogue")
        # distillation (alignrec.finetune.distill): the teacher's soft targets at the item head's boundaries
        self.teacher = teacher
        self.distill_weight = distill_weight
        if distill_weight and (teacher is None or not item_loss_weight):
            raise ValueError("distill_weight > 0 needs a teacher and the item head")

    @property
    def reads_input_ids(self) -> bool:
        """Whether the Trainer must hand the batch's ``input_ids`` (the teacher reads the window's items)."""
        return bool(self.distill_weight)

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None, input_ids: Any = None) -> Any:
        from alignrec.finetune.distill import soft_cross_entropy
        from alignrec.llm.code_head import code_only_loss
        from alignrec.llm.item_head import item_loss

        hidden = outputs["hidden_states"][-1] if isinstance(outputs, dict) else outputs.hidden_states[-1]  # (B, T, D)
        labels = labels.to(hidden.device)
        parts = code_only_loss(self.model, self.vocabulary, hidden, labels)
        total = parts.total
        if self.item_loss_weight:
            head = item_loss(self.model, self.vocabulary, self.catalogue, hidden, labels)
            total = total + self.item_loss_weight * head.total
            if self.distill_weight and head.logits is not None:
                if input_ids is None:
                    raise ValueError("distillation needs the batch's input_ids (the ranking trainer passes them)")
                probs, keep = self.teacher.targets(input_ids.to(hidden.device), head.rows, head.positions,
                                                   self.vocabulary, self.catalogue)
                if bool(keep.any()):
                    total = total + self.distill_weight * soft_cross_entropy(head.logits[keep], probs)
        if num_items_in_batch is None:
            return total / max(parts.count, 1)
        if hasattr(num_items_in_batch, "to"):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch


class ValidationRanker:
    """HR@10 / NDCG@10 of constrained beam search (the evaluation's) on a fixed sample of validation
    users: fine-tuning's ranking check (early stopping) and the preference stage's choice of its best
    step. ``users``: how many (a seeded sample; 0 or at least the split's size = every user)."""

    def __init__(self, dataset: Any, codes: Any, tokenizer: Any, settings: Any, vocabulary: Any, *, users: int, seed: int,
                 beam: int, batch_size: int, mode: str):
        import numpy as np

        split = dataset.split("valid")
        rows = np.arange(len(split))
        if 0 < users < len(rows):
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), users, replace=False))
        self.histories = [split.history(int(r)).tolist() for r in rows]
        self.targets = split.targets[rows]
        self.codes = codes
        self.tokenizer = tokenizer
        self.settings = settings
        self.vocabulary = vocabulary
        self.beam = beam
        self.batch_size = batch_size
        self.mode = mode

    def per_user(self, model: Any) -> dict[str, Any]:
        """``{"hr@10": (U,), "ndcg@10": (U,)}`` for the model as it is now (left in the mode it was in)."""
        from alignrec.llm.recommender import GenerativeRecommender
        from alignrec.metrics.metrics import per_user_metrics, ranks_in_lists

        was_training = model.training
        recommender = GenerativeRecommender(model, self.tokenizer, self.codes, self.mode, self.settings, self.vocabulary)
        try:
            output = recommender.recommend(self.histories, 10, self.beam, batch_size=self.batch_size, show_progress=False)
        finally:
            model.train(was_training)
        return per_user_metrics(ranks_in_lists(output.items.numpy(), self.targets), [10])

    def __call__(self, model: Any) -> dict[str, float]:
        return {name: float(values.mean()) for name, values in self.per_user(model).items()}

    def choose_ranker(self, model: Any, allowed: Sequence[str]) -> dict[str, Any]:
        """The best ranking of the model on these users by NDCG@10, among ``allowed`` (``beam``, ``item``,
        ``fused``; fused at each of :data:`~alignrec.llm.item_head.FUSION_WEIGHTS`).

        One beam search (its ``beam`` items and scores) and one pass of the item head per batch of users
        score every candidate. Ties go to the earlier candidate: beam, item, then fused by weight.
        Returns ``{"ranker", "fusion_weight", "candidates": [...]}``.
        """
        import numpy as np
        import torch

        from alignrec.llm.item_head import FUSION_WEIGHTS, fuse, prompt_states, top_items
        from alignrec.llm.recommender import GenerativeRecommender
        from alignrec.metrics.metrics import per_user_metrics, ranks_in_lists

        candidates = [("beam", 0.0)] if "beam" in allowed else []
        candidates += [("item", 0.0)] if "item" in allowed else []
        candidates += [("fused", w) for w in FUSION_WEIGHTS] if "fused" in allowed else []
        if not candidates:
            raise ValueError(f"no ranker to choose from in {list(allowed)}")
        was_training = model.training
        recommender = GenerativeRecommender(model, self.tokenizer, self.codes, self.mode, self.settings, self.vocabulary)
        try:
            beam = recommender.recommend(self.histories, self.beam, self.beam, batch_size=self.batch_size,
                                         show_progress=False, ranker="beam")
            lists: dict[tuple[str, float], list[np.ndarray]] = {c: [] for c in candidates}
            for start in range(0, len(self.histories), self.batch_size):
                stop = start + self.batch_size
                prompts = [recommender.prompt_ids(h) for h in self.histories[start:stop]]
                with torch.inference_mode():
                    log_probs = recommender.item_log_probs(prompt_states(model, prompts, recommender.pad_token_id))
                beam_items, beam_scores = beam.items[start:stop], beam.scores[start:stop]
                for name, weight in candidates:
                    if name == "beam":
                        chosen = beam_items[:, :10]
                    elif name == "item":
                        chosen = top_items(log_probs, 10)[0]
                    else:
                        chosen = fuse(log_probs, beam_items.to(log_probs.device), beam_scores.to(log_probs.device),
                                      weight, 10)[0]
                    lists[(name, weight)].append(chosen.cpu().numpy())
        finally:
            model.train(was_training)
        table = []
        for name, weight in candidates:
            metrics = per_user_metrics(ranks_in_lists(np.concatenate(lists[(name, weight)]), self.targets), [10])
            table.append({"ranker": name, "fusion_weight": weight, "ndcg@10": round(float(metrics["ndcg@10"].mean()), 6),
                          "hr@10": round(float(metrics["hr@10"].mean()), 6)})
        best = max(range(len(table)), key=lambda i: (table[i]["ndcg@10"], -i))
        return {"ranker": table[best]["ranker"], "fusion_weight": table[best]["fusion_weight"], "users": len(self.histories),
                "candidates": table}


def ranking_trainer_class() -> Any:
    from transformers import Trainer

    class RankingTrainer(Trainer):
        """The Trainer, whose evaluation adds the validation ranking metrics (``eval_ndcg@10`` ...), and which
        trains no step past ``max_steps`` when it resumes."""

        ranker: ValidationRanker | None = None

        def get_batch_samples(self, *args: Any, **kwargs: Any) -> Any:
            # A resume from a checkpoint at max_steps (the final one) re-enters the unfinished epoch when
            # max_steps is not a whole number of epochs, and the Trainer checks global_step >= max_steps
            # only after an update (DefaultFlowCallback.on_step_end): it fetched and trained one more step
            # (steps=31 of 30, at learning rate 0 on a linear schedule). No batches once the run has all its steps.
            if self.state.global_step >= self.state.max_steps > 0:
                self.control.should_training_stop = True
                return [], None
            return super().get_batch_samples(*args, **kwargs)

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            # a loss that reads the batch's token ids (distillation) gets them bound for this call
            loss_function = self.compute_loss_func
            if getattr(loss_function, "reads_input_ids", False):
                self.compute_loss_func = functools.partial(loss_function, input_ids=inputs["input_ids"])
            try:
                return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            finally:
                self.compute_loss_func = loss_function

        _ranking_this_evaluation = False

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
            self._ranking_this_evaluation = self.ranker is not None and eval_dataset is None
            try:
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            finally:
                self._ranking_this_evaluation = False

        def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                            ignore_keys: Any = None, metric_key_prefix: str = "eval") -> Any:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
            if self._ranking_this_evaluation:
                # joined to the loss here, the ranking metrics reach the log line and every callback
                # (early stopping, the best checkpoint) with the rest of the evaluation
                ranking = self.ranker(self.accelerator.unwrap_model(self.model))
                output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in ranking.items()})
            return output

    return RankingTrainer
