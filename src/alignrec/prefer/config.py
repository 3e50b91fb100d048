"""The typed configuration of ``alignrec prefer``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Settings a resumed run may change (how long, how often); everything else must match.
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "max_train_minutes", "torch_threads", "evaluate_test",
                               "eval_batch_size", "eval_minutes"})


@dataclass
class PreferConfig:
    """Settings of ``alignrec prefer``: preference alignment of a fine-tuned model on ranked beams.

    A fresh LoRA adapter (and trainable code-token rows) on top of the merged fine-tuned model;
    the frozen fine-tuned model is the reference of the KL term and of S-DPO's ratio.
    """

    # -- objective ---------------------------------------------------------------------------
    objective: Literal["grpo", "listwise", "sft"] = field(
        default="listwise", metadata={"section": "objective", "help": "grpo (MiniOneRec), listwise (softmax over "
                                      "{target} + beam items) or sft (the anchor alone: a control)"})
    beams: int = field(default=16, metadata={"section": "objective", "help": "rollouts per prompt (constrained beam search)"})
    negatives: int = field(default=0, metadata={"section": "objective", "help": "listwise: keep only the best N beam "
                                                "items as negatives (0 = all)"})
    negatives_above_target: bool = field(
        default=False, metadata={"section": "objective", "help": "listwise: only beam items ranked above the target "
                                 "are negatives, and only when the beam holds the target (the items that cost NDCG); "
                                 "other prompts get the anchor alone"})
    kl_beta: float = field(default=1e-3, metadata={"section": "objective", "help": "weight of the k3 KL to the "
                                                   "fine-tuned model (grpo; listwise adds it on the beam items)"})
    sdpo_beta: float = field(default=0.0, metadata={"section": "objective", "help": "listwise: score items by "
                                                    "beta * log(pi / pi_ref) as S-DPO does (0 = plain log-probs)"})
    sft_weight: float = field(default=1.0, metadata={"section": "objective", "help": "weight of the fine-tuning loss "
                                                     "on the targets of the same prompts (the anchor)"})
    # -- prompts -----------------------------------------------------------------------------
    prompts_per_user: int = field(default=1, metadata={"section": "prompts", "help": "training prompts per user per "
                                                       "epoch, from the newest training positions"})
    positions: Literal["last", "uniform"] = field(
        default="last", metadata={"section": "prompts", "help": "last: the newest training targets of each user "
                                  "(the evaluation's prompt shape); uniform: positions drawn anew each epoch"})
    # -- model and schedule ------------------------------------------------------------------
    lora_r: int = field(default=8, metadata={"section": "schedule", "help": "rank of the stage's LoRA adapter"})
    lora_alpha: int = field(default=16, metadata={"section": "schedule", "help": "LoRA alpha"})
    train_code_tokens: bool = field(default=True, metadata={"section": "schedule", "help": "train the code-token rows too"})
    learning_rate: float = field(default=5e-5, metadata={"section": "schedule", "help": "peak learning rate (AdamW)"})
    lr_scheduler: Literal["cosine", "constant"] = field(default="cosine", metadata={"section": "schedule", "help": "schedule"})
    batch_size: int = field(default=8, metadata={"section": "schedule", "help": "prompts per update"})
    epochs: float = field(default=1.0, metadata={"section": "schedule", "help": "passes over the prompts (max_steps = 0)"})
    max_steps: int = field(default=0, metadata={"section": "schedule", "help": "updates (0 = decided by epochs)"})
    max_grad_norm: float = field(default=1.0, metadata={"section": "schedule", "help": "gradient clipping norm"})
    max_train_minutes: float = field(default=0.0, metadata={"section": "schedule", "help": "stop after this much "
                                                            "training time (0 = no limit; not bit-reproducible)"})
    seed: int = field(default=42, metadata={"section": "schedule", "help": "random seed (prompt order, LoRA init)"})
    torch_threads: int = field(default=0, metadata={"section": "schedule", "help": "torch CPU threads (0 = default)"})
    # -- selection ---------------------------------------------------------------------------
    eval_steps: int = field(default=50, metadata={"section": "selection", "help": "validate (and checkpoint) every N updates"})
    eval_minutes: float = field(default=0.0, metadata={"section": "selection", "help": "validate every N minutes of "
                                                       "training instead of every eval_steps (equal-time comparisons)"})
    eval_users: int = field(default=0, metadata={"section": "selection", "help": "validation users (0 = all; the "
                                                 "step-0 model is always a candidate)"})
    eval_beam: int = field(default=20, metadata={"section": "selection", "help": "beam size of the validation search"})
    eval_batch_size: int = field(default=32, metadata={"section": "selection", "help": "users per validation batch"})
    evaluate_test: bool = field(default=True, metadata={"section": "selection", "help": "evaluate the selected model "
                                                        "on the test users (OUT/evaluate)"})

    def __post_init__(self) -> None:
        for name in ("beams", "prompts_per_user", "lora_r", "lora_alpha", "batch_size", "eval_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("negatives", "kl_beta", "sdpo_beta", "sft_weight", "max_steps", "max_train_minutes",
                     "torch_threads", "eval_users", "eval_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_beam < 10:
            raise ValueError(f"eval_beam must be >= 10 (NDCG@10 needs 10 items), got {self.eval_beam}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps == 0 and self.epochs <= 0:
            raise ValueError("give epochs > 0 or max_steps > 0")
