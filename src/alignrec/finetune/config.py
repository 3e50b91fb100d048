"""The typed configuration of ``alignrec finetune``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Settings that may change when a run is resumed (how long to train, how often to log/save);
# everything else must match the checkpoint's config (see alignrec.finetune.recipe).
RESUMABLE_CHANGES = frozenset(
    {"epochs", "max_steps", "logging_steps", "save_steps", "save_total_limit", "eval_steps", "dataloader_workers",
     "torch_threads", "save_adapter", "max_train_minutes", "ranker"}
)


@dataclass
class FinetuneConfig:
    """Settings of ``alignrec finetune`` (LoRA + trainable code-token rows, Hugging Face Trainer).

    Grouped in sections (the comments below; ``alignrec finetune --help`` shows the same groups):
    inputs, the model and LoRA, the initialisation of the code-token rows, the schedule, batches
    and speed, the validation ranking that selects the checkpoint, checkpoints and outputs, and
    several processes. Every key is documented by its help text.
    """

    # -- inputs ------------------------------------------------------------------------------
    llm: str = field(
        default="smollm2",
        metadata={"section": "inputs", "help": "backbone: 'smollm2' (offline GGUF), a .gguf file, a local HF folder or a hub id"},
    )
    tasks: str | None = field(default=None, metadata={"section": "inputs", "help": "folder with train.jsonl/valid.jsonl (default: RUN/tasks)"})
    codes: str | None = field(default=None, metadata={"section": "inputs", "help": "item codes folder (default: RUN/tokenizer)"})
    max_train_examples: int = field(default=0, metadata={"section": "inputs", "help": "use at most this many training examples (0 = all)"})
    max_eval_examples: int = field(default=200, metadata={"section": "inputs", "help": "validation examples for the evaluation loss"})
    max_length: int = field(
        default=1024, metadata={"section": "inputs", "help": "examples with more tokens are dropped (counted), never truncated"}
    )
    seed: int = field(default=42, metadata={"section": "inputs", "help": "random seed"})

    # -- model and LoRA ----------------------------------------------------------------------
    llm_layers: int = field(
        default=0,
        metadata={"section": "model and LoRA", "help": "keep the first N decoder layers of the backbone (plus its final norm and head); 0 = all"},
    )
    head: Literal["code", "full"] = field(
        default="code",
        metadata={"section": "model and LoRA", "help": "loss at code positions: code (softmax over that level's code tokens only; beam search "
                  "scores the same way) or full (the whole vocabulary, the papers' setting)"},
    )
    item_loss_weight: float = field(
        default=0.0,
        metadata={"section": "model and LoRA", "help": "the item head (head: code only): weight of a full-catalogue softmax at every item "
                  "boundary, an item's vector being the sum of its code rows, added to the code loss (0 = off); it gives "
                  "the item and fused rankers"},
    )
    item_residual: bool = field(
        default=False,
        metadata={"section": "model and LoRA", "help": "the item head also learns a free vector and bias per item, added to its code sum "
                  "(trained by the item loss only; needs item_loss_weight > 0); items registered later have none"},
    )
    distill_weight: float = field(
        default=0.0,
        metadata={"section": "model and LoRA", "help": "distillation into the item head (needs item_loss_weight > 0): weight of the soft "
                  "cross-entropy to a trained sequential model's catalogue softmax at every item boundary (0 = off; "
                  "alignrec.finetune.distill)"},
    )
    distill_from: str | None = field(
        default=None,
        metadata={"section": "model and LoRA", "help": "the teacher: a collab run folder of a sequential model (SASRec, FMLP-Rec, BERT4Rec); "
                  "in a pipeline also 'behaviour' (the default) or a baseline's model name"},
    )
    distill_temperature: float = field(
        default=1.0, metadata={"section": "model and LoRA", "help": "temperature of the teacher's softmax (> 1 flattens it)"},
    )
    ranker: Literal["auto", "beam", "item", "fused"] = field(
        default="auto",
        metadata={"section": "model and LoRA", "help": "how the saved model ranks (recorded in it): beam (constrained beam search), item (the "
                  "item head over every item), fused (beam + item head, the weight chosen on validation) or auto (the best "
                  "of these on the validation users; beam when there is no item head)"},
    )
    lora_r: int = field(default=8, metadata={"section": "model and LoRA", "help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"section": "model and LoRA", "help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"section": "model and LoRA", "help": "LoRA dropout"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"section": "model and LoRA", "help": "modules that get LoRA adapters; 'all-linear' = every linear layer but the output layer "
                  "(for Llama/Qwen/Mistral: q,k,v,o,gate,up,down projections)"},
    )
    train_code_tokens: bool = field(
        default=True, metadata={"section": "model and LoRA", "help": "train the embedding (and untied output) rows of the code tokens"}
    )

    # -- code-token initialisation -----------------------------------------------------------
    new_token_init: Literal["default", "sa_init", "mlp"] = field(
        default="default",
        metadata={"section": "code-token initialisation", "help": "code-token rows: default (no codebook copy; the paper), sa_init (TS-Rec keywords), "
                  "mlp (MLP projection of the codebook vectors; the paper's Table 7 ablation)"},
    )
    code_descriptions: str | None = field(
        default=None, metadata={"section": "code-token initialisation", "help": "sa_init keywords (default: CODES/code_descriptions.json)"}
    )
    codebooks: str | None = field(default=None, metadata={"section": "code-token initialisation", "help": "mlp init vectors (default: CODES/codebooks.safetensors)"})
    mlp_layers: int = field(default=2, metadata={"section": "code-token initialisation", "help": "mlp init: number of linear layers (2 or 3)"})
    mlp_hidden: int = field(default=0, metadata={"section": "code-token initialisation", "help": "mlp init: hidden width (0 = the LLM width)"})
    mlp_steps: int = field(default=300, metadata={"section": "code-token initialisation", "help": "mlp init: Adam steps fitting the projection to item text"})

    # -- schedule ----------------------------------------------------------------------------
    learning_rate: float = field(default=2e-4, metadata={"section": "schedule", "help": "peak learning rate"})
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = field(
        default="cosine", metadata={"section": "schedule", "help": "learning-rate schedule"}
    )
    warmup_ratio: float = field(default=0.03, metadata={"section": "schedule", "help": "share of the steps with linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"section": "schedule", "help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"section": "schedule", "help": "gradient clipping norm"})
    epochs: float = field(default=1.0, metadata={"section": "schedule", "help": "passes over train.jsonl (ignored when max_steps > 0)"})
    max_steps: int = field(default=0, metadata={"section": "schedule", "help": "optimizer steps (0 = decided by epochs)"})
    max_train_minutes: float = field(
        default=0.0, metadata={"section": "schedule", "help": "stop training after this many wall-clock minutes (0 = no limit; runs stopped "
                               "by time are not bit-reproducible, use max_steps for that)"}
    )

    # -- batches and speed -------------------------------------------------------------------
    batch_size: int = field(default=8, metadata={"section": "batches and speed", "help": "examples per device per micro-batch"})
    grad_accum: int = field(default=1, metadata={"section": "batches and speed", "help": "gradient accumulation steps"})
    eval_batch_size: int = field(default=0, metadata={"section": "batches and speed", "help": "evaluation batch size (0 = batch_size)"})
    group_by_length: bool = field(
        default=True, metadata={"section": "batches and speed", "help": "batch examples of similar length together (less padding)"}
    )
    answer_logits_only: bool = field(
        default=True,
        metadata={"section": "batches and speed", "help": "compute output logits only where an answer token is predicted (same loss, much less "
                  "work with large vocabularies; off = the model's own loss over full logits)"},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"section": "batches and speed", "help": "recompute activations in backward"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"section": "batches and speed", "help": "mixed precision of training (weights stay "
                                  "float32): auto = bfloat16 on a GPU that supports it, else float32; float16 needs a GPU"}
    )
    dataloader_workers: int = field(default=0, metadata={"section": "batches and speed", "help": "data loader worker processes"})
    torch_threads: int = field(default=0, metadata={"section": "batches and speed", "help": "CPU threads for torch (0 = torch's default)"})

    # -- validation ranking ------------------------------------------------------------------
    eval_steps: int = field(default=0, metadata={"section": "validation ranking", "help": "evaluation loss every N steps (0 = only at the end)"})
    rank_eval_steps: int = field(
        default=0,
        metadata={"section": "validation ranking", "help": "every N steps: HR@10/NDCG@10 by constrained beam search on a fixed validation sample; "
                  "the best checkpoint by NDCG@10 is the one saved (0 = off)"},
    )
    rank_eval_users: int = field(default=200, metadata={"section": "validation ranking", "help": "validation users of the ranking evaluation (seeded)"})
    rank_eval_beam: int = field(default=20, metadata={"section": "validation ranking", "help": "beam size of the ranking evaluation"})
    early_stopping_patience: int = field(
        default=0, metadata={"section": "validation ranking", "help": "stop after N ranking evaluations without a better NDCG@10 (0 = never)"}
    )

    # -- checkpoints and outputs -------------------------------------------------------------
    logging_steps: int = field(default=10, metadata={"section": "checkpoints and outputs", "help": "log the training loss every N steps"})
    save_steps: int = field(default=200, metadata={"section": "checkpoints and outputs", "help": "write a resumable checkpoint every N steps"})
    save_total_limit: int = field(default=2, metadata={"section": "checkpoints and outputs", "help": "checkpoints kept"})
    save_adapter: bool = field(default=True, metadata={"section": "checkpoints and outputs", "help": "also save the unmerged LoRA adapter (OUT/adapter)"})

    # -- several processes -------------------------------------------------------------------
    ddp_backend: str | None = field(
        default=None, metadata={"section": "several processes", "help": "torch.distributed backend (default: nccl on GPUs, gloo on CPUs)"}
    )
    deepspeed: str | None = field(default=None, metadata={"section": "several processes", "help": "DeepSpeed JSON config (optional, GPU only)"})
    def __post_init__(self) -> None:
        positive = {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "batch_size": self.batch_size,
                    "grad_accum": self.grad_accum, "max_length": self.max_length, "logging_steps": self.logging_steps,
                    "save_steps": self.save_steps, "save_total_limit": self.save_total_limit,
                    "mlp_steps": self.mlp_steps}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        non_negative = {"max_steps": self.max_steps, "eval_steps": self.eval_steps, "eval_batch_size": self.eval_batch_size,
                        "max_train_examples": self.max_train_examples, "max_eval_examples": self.max_eval_examples,
                        "dataloader_workers": self.dataloader_workers, "torch_threads": self.torch_threads,
                        "mlp_hidden": self.mlp_hidden, "weight_decay": self.weight_decay, "max_train_minutes": self.max_train_minutes,
                        "llm_layers": self.llm_layers,
                        "rank_eval_steps": self.rank_eval_steps, "early_stopping_patience": self.early_stopping_patience}
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.rank_eval_users < 1 or self.rank_eval_beam < 10:
            raise ValueError("rank_eval_users must be >= 1 and rank_eval_beam >= 10 (HR@10 needs 10 items)")
        if self.early_stopping_patience and not self.rank_eval_steps:
            raise ValueError("early_stopping_patience needs rank_eval_steps > 0 (it stops on the ranking metric)")
        if self.item_loss_weight < 0:
            raise ValueError(f"item_loss_weight must be >= 0, got {self.item_loss_weight}")
        if self.item_loss_weight and self.head != "code":
            raise ValueError("item_loss_weight needs head: code (the item head reads the code-only head's hidden state)")
        if self.item_residual and not self.item_loss_weight:
            raise ValueError("item_residual needs the item head: set item_loss_weight > 0")
        if self.distill_weight < 0 or self.distill_temperature <= 0:
            raise ValueError(f"distill_weight must be >= 0 and distill_temperature > 0, got {self.distill_weight}, "
                             f"{self.distill_temperature}")
        if self.distill_weight and not self.item_loss_weight:
            raise ValueError("distill_weight needs the item head: set item_loss_weight > 0")
        if self.ranker in ("item", "fused") and not self.item_loss_weight:
            raise ValueError(f"ranker {self.ranker!r} needs the item head: set item_loss_weight > 0")
        if self.mlp_layers not in (2, 3):
            raise ValueError(f"mlp_layers must be 2 or 3 (the paper's ablation), got {self.mlp_layers}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps == 0 and self.epochs <= 0:
            raise ValueError("give epochs > 0 or max_steps > 0")
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules: give at least one module name (or all-linear)")
        if "all-linear" in self.lora_target_modules and len(self.lora_target_modules) > 1:
            raise ValueError("lora_target_modules: 'all-linear' cannot be combined with module names")
