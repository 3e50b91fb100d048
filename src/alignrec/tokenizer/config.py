"""The tokenizer stage's one typed configuration (``alignrec tokenize train`` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TokenizerConfig:
    """Settings of ``alignrec tokenize train``. Flags: ``--levels 4 --codebook-size 256 ...``."""

    method: str = field(
        default="alignment",
        metadata={"help": "tokenizer kind: alignment (ours), rqvae (LC-Rec/TIGER encoder-decoder), rqkmeans (plain floor)"},
    )
    levels: int = field(default=4, metadata={"help": "number of codebook levels L"})
    codebook_size: int = field(default=256, metadata={"help": "codes per level K"})
    distance: Literal["l2", "cosine"] = field(
        default="l2", metadata={"help": "behaviour-alignment distance D and assignment metric"}
    )
    input: Literal["behaviour", "text"] = field(
        default="behaviour",
        metadata={"help": "what is quantised: behaviour item embeddings (the paper) or LLM text embeddings (LC-Rec)"},
    )
    normalize_rows: bool = field(
        default=False, metadata={"help": "L2-normalise each input vector before centring and scaling"}
    )
    seed: int = field(default=0, metadata={"help": "random seed (k-means seeding, batches, projections)"})

    # -- initialisation and balancing (alignment; k-means seeding is shared) --------------------
    init_batch_size: int = field(
        default=16384, metadata={"help": "items in the batch that k-means initialises each level from (0 = all)"}
    )
    kmeans_iterations: int = field(default=50, metadata={"help": "Lloyd iterations per level"})
    balance: Literal["optimal", "none"] = field(
        default="optimal",
        metadata={"help": "alignment: capacity-constrained assignment per prefix group (optimal) or plain nearest code"},
    )
    capacity_factor: float = field(
        default=1.0,
        metadata={"help": "a code may take ceil(capacity_factor * n_prefix / K) items of its prefix group (>= 1)"},
    )
    auction_epsilon: float = field(
        default=3e-4,
        metadata={"help": "final auction epsilon, relative to the cost spread (large groups only; 10x during training)"},
    )

    # -- alignment training -------------------------------------------------------------------
    rounds: int = field(default=8, metadata={"help": "alignment: assignment/update rounds (E/M)"})
    steps_per_round: int = field(
        default=20, metadata={"help": "alignment: gradient steps per round (only when the LLM term is on)"}
    )
    batch_size: int = field(
        default=1024, metadata={"help": "items per gradient step (0 = all); the batch InfoNCE costs O(batch^2)"}
    )
    learning_rate: float = field(default=5e-3, metadata={"help": "Adam learning rate (alignment)"})

    # -- LLM alignment --------------------------------------------------------------------------
    llm: str = field(
        default="smollm2",
        metadata={"help": "backbone whose input embeddings give item text vectors; 'none' = behaviour only"},
    )
    llm_weight: float = field(default=0.1, metadata={"help": "lambda of the LLM alignment loss (0 = the 'w/o LA' ablation)"})
    llm_loss: Literal["infonce", "cosine"] = field(
        default="infonce", metadata={"help": "LLM alignment objective between projected text and quantised codes"}
    )
    llm_projection: Literal["linear", "mlp"] = field(
        default="linear", metadata={"help": "map from LLM embedding space to code space"}
    )
    llm_temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature"})
    max_text_tokens: int = field(default=512, metadata={"help": "tokens of title + description that are mean-pooled"})

    # -- rqvae (LC-Rec / TIGER) -----------------------------------------------------------------
    rqvae_hidden: list[int] = field(
        default_factory=lambda: [256, 128, 64], metadata={"help": "rqvae encoder hidden sizes (decoder mirrors them)"}
    )
    rqvae_latent_dim: int = field(default=32, metadata={"help": "rqvae latent (code) dimension"})
    rqvae_epochs: int = field(default=100, metadata={"help": "rqvae training epochs"})
    rqvae_batch_size: int = field(default=1024, metadata={"help": "rqvae batch size"})
    rqvae_learning_rate: float = field(default=1e-3, metadata={"help": "rqvae AdamW learning rate"})
    rqvae_beta: float = field(default=0.25, metadata={"help": "rqvae commitment weight"})
    sk_epsilon: float = field(default=0.003, metadata={"help": "rqvae Sinkhorn-Knopp epsilon on the last level (0 = off)"})
    sk_iterations: int = field(default=50, metadata={"help": "Sinkhorn-Knopp iterations"})
    sk_collision_rounds: int = field(
        default=20, metadata={"help": "rqvae: re-assign colliding items with Sinkhorn up to this many times"}
    )

    # -- collisions, descriptions, cold start ---------------------------------------------------
    resolution: Literal["last_level", "extra_level"] = field(
        default="last_level",
        metadata={"help": "make codes unique: move colliding items to the cheapest free code path, or append a level"},
    )
    keywords_per_code: int = field(default=8, metadata={"help": "keywords kept per code token in code_descriptions.json"})
    coldstart_holdout: float = field(
        default=0.05,
        metadata={"help": "fraction of items with text whose text a separate evaluation fit holds out, to score "
                  "text-only cold start (0 = skip); the tokenizer itself always trains on every item"},
    )

    def __post_init__(self) -> None:
        from alignrec.tokenizer.methods import TOKENIZERS

        if self.method not in TOKENIZERS:
            raise ValueError(f"method: expected one of {sorted(TOKENIZERS)}, got {self.method!r}")
        if not 1 <= self.levels <= 16:
            raise ValueError(f"levels: expected 1..16, got {self.levels}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size: expected >= 2, got {self.codebook_size}")
        if self.capacity_factor < 1.0:
            raise ValueError(f"capacity_factor: expected >= 1, got {self.capacity_factor}")
        for name in ("rounds", "kmeans_iterations", "rqvae_epochs", "rqvae_batch_size", "rqvae_latent_dim", "max_text_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("steps_per_round", "batch_size", "init_batch_size", "sk_iterations", "sk_collision_rounds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "rqvae_learning_rate", "llm_temperature", "auction_epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        if self.llm_weight < 0 or self.sk_epsilon < 0 or self.rqvae_beta < 0:
            raise ValueError("llm_weight, sk_epsilon and rqvae_beta must be >= 0")
        if not 0 <= self.coldstart_holdout < 0.5:
            raise ValueError(f"coldstart_holdout: expected 0 <= x < 0.5, got {self.coldstart_holdout}")
        if any(h < 1 for h in self.rqvae_hidden):
            raise ValueError(f"rqvae_hidden: sizes must be >= 1, got {self.rqvae_hidden}")
        if self.keywords_per_code < 0:
            raise ValueError("keywords_per_code must be >= 0")

    @property
    def uses_llm(self) -> bool:
        """Whether item text vectors are needed at all (LLM loss, text input or cold start)."""
        return self.llm.lower() != "none"
