r"""Tokenizer methods behind one interface (a registry): ``alignment``, ``rqvae``, ``rqkmeans``.

Each method turns standardised item vectors z_i (N, e) (plus, optionally, LLM text vectors)
into a :class:`~alignrec.tokenizer.model.ResidualQuantizer` (and, for ``rqvae``, an encoder).

``alignment`` — Alignment Tokenization (seed 001), no encoder/decoder
------------------------------------------------------------------------
Codebooks E^l = {e^l_k} (K x e), l = 1..L. Initialisation: level-wise k-means on a batch
(level l clusters the residuals of level l-1). Training alternates, for ``rounds`` rounds:

*Assignment (E).* Level by level, r^1_i = z_i, each item takes a code among its prefix group
(items with the same codes at levels < l) by the capacity-constrained assignment
``min sum_i D(r^l_i, e^l_{k_i})`` s.t. each code holds at most ceil(c * n_g / K) items of a
group g (``balance="optimal"``; ``balance="none"``: the nearest code), r^{l+1} = r^l - e^l_{k_l}.

*Update (M).* ``steps_per_round`` Adam steps on mini-batches B, codes fixed, minimising

    L = sum_l mean_{i in B} D(sg[r^l_i], e^l_{k^l_i})                      (behaviour alignment)
      + lambda * (1/L) sum_l L_LLM^l                                        (LLM alignment)

with D(r, e) = ||r - e||^2 (``distance="l2"``) or 1 - cos(r, e) (``"cosine"``; then only the
codes' directions are trained, their norms stay at the k-means initialisation). sg[.] stops
the gradient: without an encoder the residuals are data, not parameters, so a commitment term
has nothing to commit and each level's loss moves only its own codebook toward the (balanced)
means of its cells — gradient k-means, with the LLM term as the only other force.

LLM alignment: t_i = the mean of the LLM's input-layer embeddings of the tokens of item i's
title + description (standardised), projected into code space by a learned map
P: R^{D_llm} -> R^e (``linear``: W t + b; ``mlp``: W_2 GELU(W_1 t + b_1) + b_2). The item's
quantised representation after level l is the cumulative sum q^l_i = sum_{j<=l} e^j_{k^j_i}.

- ``infonce`` (default): classification of the item's own level-l prefix among the distinct
  prefixes U^l_B present in the batch (items that share a prefix share its vector, so they are
  not each other's negatives):
      L_LLM^l = - mean_i log( exp(cos(P t_i, q^l_i)/tau) / sum_{u in U^l_B} exp(cos(P t_i, q^l_u)/tau) )
- ``cosine``: L_LLM^l = mean_i (1 - cos(P t_i, q^l_i)).

Gradients reach both P and the codebook vectors, so the codes drift toward positions whose
cells are predictable from text; assignment itself stays behavioural (nearest code + prices).
Items without text are simply absent from the LLM term. lambda = 0 (or no text) is the paper's
"w/o LA" ablation.

*Final.* One last balanced assignment computes the prices p^l[g, k] of every prefix group, and
the codes are those of the rule ``argmin_k D(r^l, e^l_k) + p^l[g, k]`` (see assign.py), which is
also what inference applies to new items.

``rqvae`` — LC-Rec / TIGER indexer (the paper's "ED" ablation)
-----------------------------------------------------------------
Encoder MLP z = f(x), residual quantisation with straight-through gradients, decoder MLP
x' = g(z_q); loss ||x - x'||^2 + sum_l (||sg[r^l] - e^l||^2 + beta ||r^l - sg[e^l]||^2); the last
level assigns codes by Sinkhorn-Knopp uniform mapping during training (epsilon ``sk_epsilon``).
Codes are the nearest codes of the encoded items; colliding items are re-assigned at the last
level with Sinkhorn-Knopp (LC-Rec's indexer) before the generic resolver runs.

``rqkmeans`` — residual k-means on all items, nearest codes: the no-training floor.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from alignrec.tokenizer.assign import (
    assign_with_prices,
    balanced_assign,
    group_capacities,
    pairwise_cost,
    prefix_keys,
    sinkhorn_codes,
)
from alignrec.tokenizer.collisions import colliding_rows
from alignrec.tokenizer.kmeans import kmeans
from alignrec.tokenizer.model import LevelPrices, ResidualQuantizer
from alignrec.utils.log import get_logger

if TYPE_CHECKING:
    from alignrec.tokenizer.config import TokenizerConfig

log = get_logger(__name__)


@dataclass
class TrainingInputs:
    """What a method trains on (all rows are items of the training catalogue)."""

    vectors: np.ndarray  # (N, e) float32, standardised model inputs
    text: np.ndarray | None = None  # (N_t, D) float32, standardised LLM text vectors
    text_rows: np.ndarray | None = None  # (N_t,) int64, the item row of each text vector


@dataclass
class FitResult:
    """A trained quantizer (+ encoder) and what happened while training."""

    quantizer: ResidualQuantizer
    encoder: list[tuple[np.ndarray, np.ndarray]] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    extra_tensors: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class TokenizerMethod(ABC):
    """A way to learn codebooks. Subclasses register with :func:`register_tokenizer`."""

    name: str = ""
    uses_text_loss: bool = False  # whether the LLM alignment term is part of the method

    def __init__(self, config: TokenizerConfig):
        self.config = config

    @abstractmethod
    def fit(self, inputs: TrainingInputs) -> FitResult:
        """Train on ``inputs`` and return the quantizer whose rule gives the items' codes."""

    def refine_collisions(self, result: FitResult, latent: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Method-specific collision handling before the generic resolver (default: none)."""
        return codes


TOKENIZERS: dict[str, type[TokenizerMethod]] = {}


def register_tokenizer(cls: type[TokenizerMethod]) -> type[TokenizerMethod]:
    """Class decorator: make ``cls`` available as ``--method cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    TOKENIZERS[cls.name] = cls
    return cls


def build_tokenizer(config: TokenizerConfig) -> TokenizerMethod:
    return TOKENIZERS[config.method](config)


# ----------------------------------------------------------------------------- shared pieces


def _init_batch(num: int, size: int, rng: np.random.Generator) -> np.ndarray:
    if size <= 0 or size >= num:
        return np.arange(num)
    return np.sort(rng.choice(num, size=size, replace=False))


def levelwise_kmeans(
    vectors: np.ndarray, levels: int, codebook_size: int, distance: str, iterations: int, seed: int
) -> list[np.ndarray]:
    """Codebooks by k-means on ``vectors`` then on the residuals of each level's nearest code."""
    residual = np.asarray(vectors, dtype=np.float32)
    codebooks = []
    for level in range(levels):
        centers, _ = kmeans(residual, codebook_size, iterations=iterations, seed=seed + level)
        nearest = pairwise_cost(residual, centers, distance).argmin(1)  # type: ignore[arg-type]
        codebooks.append(centers)
        residual = (residual - centers[nearest]).astype(np.float32)
    return codebooks


def balanced_codes(
    vectors: np.ndarray,
    codebooks: list[np.ndarray],
    distance: str,
    capacity_factor: float,
    *,
    with_prices: bool,
    auction_epsilon: float,
    warm_prices: list[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, list[LevelPrices | None], list[np.ndarray | None], dict[str, Any]]:
    """Level-by-level capacity-constrained assignment within prefix groups.

    Returns ``(codes (N, L), prices per level (only groups with a non-zero price),
    dense price tables of groups solved by the auction (warm starts), info)``. With
    ``with_prices`` the returned codes follow rule (*) with those prices — exactly what
    :meth:`ResidualQuantizer.quantize` will compute.
    """
    num = vectors.shape[0]
    sizes = [int(c.shape[0]) for c in codebooks]
    residual = np.asarray(vectors, dtype=np.float64)
    codes = np.zeros((num, len(codebooks)), dtype=np.int64)
    level_prices: list[LevelPrices | None] = []
    warm_out: list[np.ndarray | None] = []
    mismatches: list[int] = []
    for level, codebook in enumerate(codebooks):
        # float64 where the result is stored (prices, final codes); float32 inside training
        cost = pairwise_cost(residual, codebook, distance, np.float64 if with_prices else np.float32)  # type: ignore[arg-type]
        keys = prefix_keys(codes[:, :level], sizes)
        unique_keys, groups = np.unique(keys, return_inverse=True)
        group_sizes = np.bincount(groups, minlength=len(unique_keys))
        capacity = group_capacities(group_sizes, sizes[level], capacity_factor)
        warm = None
        if warm_prices is not None and level < len(warm_prices) and warm_prices[level] is not None and level == 0:
            warm = warm_prices[level]
        result = balanced_assign(
            cost, groups, capacity, auction_epsilon=auction_epsilon, warm_prices=warm, with_prices=with_prices
        )
        warm_out.append(result.prices if "auction" in result.solver and level == 0 else None)
        if with_prices:
            chosen = assign_with_prices(cost, groups, result.prices)
            mismatches.append(int((chosen != result.codes).sum()))
            nonzero = np.nonzero(np.abs(result.prices).max(1) > 0)[0]
            level_prices.append(LevelPrices(unique_keys[nonzero].astype(np.int64), result.prices[nonzero]))
        else:
            chosen = result.codes
            level_prices.append(None)
        codes[:, level] = chosen
        residual = residual - codebook[chosen].astype(np.float64)
    return codes, level_prices, warm_out, {"rule_vs_solver_mismatches": mismatches}


def cell_means(
    vectors: np.ndarray, codes: np.ndarray, codebooks: list[np.ndarray], distance: str
) -> tuple[list[np.ndarray], float]:
    """Exact minimiser of the summed behaviour loss for fixed codes, level after level.

    L2: each code becomes the mean of the residuals assigned to it; cosine: the mean
    direction of those residuals, keeping the code's norm. Unused codes stay where they are.
    Returns the new codebooks and the loss they reach.
    """
    residual = np.asarray(vectors, dtype=np.float64)
    updated = []
    loss = 0.0
    for level, codebook in enumerate(codebooks):
        size = codebook.shape[0]
        chosen = codes[:, level]
        counts = np.bincount(chosen, minlength=size)
        source = residual if distance == "l2" else residual / np.maximum(np.linalg.norm(residual, axis=1, keepdims=True), 1e-12)
        sums = np.zeros((size, residual.shape[1]))
        np.add.at(sums, chosen, source)
        new = codebook.astype(np.float64).copy()
        used = counts > 0
        if distance == "l2":
            new[used] = sums[used] / counts[used, None]
        else:
            norms = np.linalg.norm(codebook, axis=1)[used, None]
            new[used] = sums[used] / np.maximum(np.linalg.norm(sums[used], axis=1, keepdims=True), 1e-12) * norms
        new = new.astype(np.float32)
        vectors_chosen = new[chosen].astype(np.float64)
        if distance == "l2":
            loss += float(((residual - vectors_chosen) ** 2).sum(1).mean())
        else:
            cos = (residual * vectors_chosen).sum(1) / np.maximum(
                np.linalg.norm(residual, axis=1) * np.linalg.norm(vectors_chosen, axis=1), 1e-12
            )
            loss += float((1.0 - cos).mean())
        updated.append(new)
        residual = residual - vectors_chosen
    return updated, loss


def nearest_codes(vectors: np.ndarray, codebooks: list[np.ndarray], distance: str) -> np.ndarray:
    return ResidualQuantizer(codebooks, distance=distance).quantize(vectors)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- alignment


@register_tokenizer
class AlignmentTokenizer(TokenizerMethod):
    """Cascaded residual codebooks, balanced assignment, behaviour + LLM alignment losses."""

    name = "alignment"
    uses_text_loss = True

    def fit(self, inputs: TrainingInputs) -> FitResult:
        import torch

        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        z = np.asarray(inputs.vectors, dtype=np.float32)
        num, dim = z.shape
        started = time.perf_counter()
        batch = _init_batch(num, cfg.init_batch_size, rng)
        init = levelwise_kmeans(z[batch], cfg.levels, cfg.codebook_size, cfg.distance, cfg.kmeans_iterations, cfg.seed)
        init_seconds = time.perf_counter() - started
        codebooks = [torch.nn.Parameter(torch.from_numpy(c.copy())) for c in init]
        parameters: list[torch.nn.Parameter] = list(codebooks)

        text_on = cfg.llm_weight > 0 and inputs.text is not None and len(inputs.text) > 0
        projection: torch.nn.Module | None = None
        text_of_row = np.full(num, -1, dtype=np.int64)
        text_tensor = None
        if text_on:
            assert inputs.text is not None and inputs.text_rows is not None
            text_of_row[inputs.text_rows] = np.arange(len(inputs.text_rows))
            text_tensor = torch.from_numpy(np.asarray(inputs.text, dtype=np.float32))
            projection = _build_projection(cfg.llm_projection, text_tensor.shape[1], dim)
            parameters += list(projection.parameters())
        # created only when gradient steps are taken (importing the optimiser costs seconds)
        optimizer = torch.optim.Adam(parameters, lr=cfg.learning_rate) if text_on else None
        x_all = torch.from_numpy(z)
        history: list[dict[str, float]] = []
        warm: list[np.ndarray | None] | None = None
        assign_seconds = 0.0
        step = 0
        batch_size = cfg.batch_size if cfg.batch_size > 0 else num
        for round_index in range(cfg.rounds):
            tick = time.perf_counter()
            current = [c.detach().numpy().copy() for c in codebooks]
            if cfg.balance == "optimal":
                codes, _, warm, _ = balanced_codes(
                    z, current, cfg.distance, cfg.capacity_factor, with_prices=False,
                    auction_epsilon=10 * cfg.auction_epsilon, warm_prices=warm,
                )
            else:
                codes = nearest_codes(z, current, cfg.distance)
            assign_seconds += time.perf_counter() - tick
            if not text_on:
                # Without the LLM term the M-step has a closed form: per level, the (balanced)
                # cell means minimise the behaviour loss exactly (the fixed point of its
                # gradient steps), so we take it instead of approximating it with Adam.
                updated, behaviour_loss = cell_means(z, codes, current, cfg.distance)
                with torch.no_grad():
                    for parameter, value in zip(codebooks, updated):
                        parameter.copy_(torch.from_numpy(value))
                history.append({"round": round_index, "step": step, "behaviour_loss": behaviour_loss, "llm_loss": 0.0})
                log.info("round %d/%d: behaviour %.4f", round_index + 1, cfg.rounds, behaviour_loss)
                continue
            codes_t = torch.from_numpy(codes)
            totals = {"behaviour": 0.0, "llm": 0.0}
            for _ in range(cfg.steps_per_round):
                rows = torch.from_numpy(rng.choice(num, size=min(batch_size, num), replace=False))
                behaviour, llm = _alignment_losses(
                    x_all[rows], codes_t[rows], codebooks, cfg.distance,
                    projection=projection,
                    text=text_tensor,
                    text_index=torch.from_numpy(text_of_row)[rows] if text_on else None,
                    loss=cfg.llm_loss,
                    temperature=cfg.llm_temperature,
                )
                loss = behaviour + cfg.llm_weight * llm
                assert optimizer is not None
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                totals["behaviour"] += float(behaviour.detach())
                totals["llm"] += float(llm.detach())
                step += 1
            steps = max(cfg.steps_per_round, 1)
            history.append(
                {"round": round_index, "step": step, "behaviour_loss": totals["behaviour"] / steps, "llm_loss": totals["llm"] / steps}
            )
            log.info("round %d/%d: behaviour %.4f llm %.4f", round_index + 1, cfg.rounds, history[-1]["behaviour_loss"], history[-1]["llm_loss"])

        final = [c.detach().numpy().astype(np.float32).copy() for c in codebooks]
        tick = time.perf_counter()
        info: dict[str, Any] = {}
        if cfg.balance == "optimal":
            _, prices, _, info = balanced_codes(
                z, final, cfg.distance, cfg.capacity_factor, with_prices=True,
                auction_epsilon=cfg.auction_epsilon, warm_prices=warm,
            )
        else:
            prices = [None] * cfg.levels
        assign_seconds += time.perf_counter() - tick
        extra: dict[str, np.ndarray] = {}
        if projection is not None:
            extra = {f"llm_projection.{k}": v.detach().numpy().copy() for k, v in projection.state_dict().items()}
        info.update(
            {
                "llm_alignment": text_on,
                "llm_items": int(len(inputs.text_rows)) if text_on and inputs.text_rows is not None else 0,
                "init_seconds": round(init_seconds, 3),
                "assign_seconds": round(assign_seconds, 3),
                "init_batch": int(len(batch)),
            }
        )
        return FitResult(
            quantizer=ResidualQuantizer(final, distance=cfg.distance, prices=prices),
            history=history,
            extra_tensors=extra,
            info=info,
        )


def _build_projection(kind: str, in_dim: int, out_dim: int) -> Any:
    import torch

    if kind == "linear":
        return torch.nn.Linear(in_dim, out_dim)
    hidden = max(out_dim * 4, 64)
    return torch.nn.Sequential(torch.nn.Linear(in_dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, out_dim))


def _alignment_losses(
    x: Any,
    codes: Any,
    codebooks: list[Any],
    distance: str,
    *,
    projection: Any = None,
    text: Any = None,
    text_index: Any = None,
    loss: str = "infonce",
    temperature: float = 0.1,
) -> tuple[Any, Any]:
    """(behaviour loss, LLM loss) of a batch: x (B, e), codes (B, L) long."""
    import torch
    import torch.nn.functional as F

    residual = x
    behaviour = x.new_zeros(())
    quantised = []
    for level, codebook in enumerate(codebooks):
        chosen = codebook[codes[:, level]]  # (B, e)
        target = residual.detach()
        if distance == "l2":
            behaviour = behaviour + (target - chosen).pow(2).sum(1).mean()
        else:
            behaviour = behaviour + (1.0 - F.cosine_similarity(target, chosen, dim=1)).mean()
        quantised.append(chosen)
        residual = residual - chosen.detach()
    llm = x.new_zeros(())
    if projection is None or text is None or text_index is None:
        return behaviour, llm
    has_text = text_index >= 0
    if int(has_text.sum()) < 2:
        return behaviour, llm
    projected = F.normalize(projection(text[text_index[has_text]]), dim=1)  # (B_t, e)
    cumulative = torch.zeros_like(quantised[0][has_text])
    sizes = [c.shape[0] for c in codebooks]
    for level in range(len(codebooks)):
        cumulative = cumulative + quantised[level][has_text]  # (B_t, e): q^l, gradients to levels <= l
        if loss == "cosine":
            llm = llm + (1.0 - (projected * F.normalize(cumulative, dim=1)).sum(1)).mean()
            continue
        keys = torch.from_numpy(prefix_keys(codes[has_text][:, : level + 1].numpy(), sizes))
        unique, inverse = torch.unique(keys, return_inverse=True)
        counts = torch.bincount(inverse, minlength=len(unique)).to(cumulative.dtype)
        # rows with the same prefix carry the same vector, so their mean is that vector
        distinct = torch.zeros(len(unique), cumulative.shape[1]).index_add(0, inverse, cumulative) / counts[:, None]
        candidates = F.normalize(distinct, dim=1)  # (U, e)
        logits = projected @ candidates.T / temperature  # (B_t, U)
        llm = llm + F.cross_entropy(logits, inverse)
    # mean over levels: the InfoNCE of one level is ~log(batch), so a sum would let lambda's
    # meaning change with L
    return behaviour, llm / len(codebooks)


# ----------------------------------------------------------------------------- rqkmeans


@register_tokenizer
class ResidualKMeansTokenizer(TokenizerMethod):
    """Plain residual k-means on all items; nearest codes; no training beyond Lloyd."""

    name = "rqkmeans"

    def fit(self, inputs: TrainingInputs) -> FitResult:
        cfg = self.config
        codebooks = levelwise_kmeans(
            inputs.vectors, cfg.levels, cfg.codebook_size, cfg.distance, cfg.kmeans_iterations, cfg.seed
        )
        return FitResult(quantizer=ResidualQuantizer(codebooks, distance=cfg.distance), info={"llm_alignment": False})


# ----------------------------------------------------------------------------- rqvae


@register_tokenizer
class RQVAETokenizer(TokenizerMethod):
    """Encoder-decoder RQ-VAE with Sinkhorn-Knopp on the last level (LC-Rec's indexer)."""

    name = "rqvae"

    def fit(self, inputs: TrainingInputs) -> FitResult:
        import torch

        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        x_np = np.asarray(inputs.vectors, dtype=np.float32)
        num, in_dim = x_np.shape
        encoder = _mlp([in_dim, *cfg.rqvae_hidden, cfg.rqvae_latent_dim])
        decoder = _mlp(list(reversed([in_dim, *cfg.rqvae_hidden, cfg.rqvae_latent_dim])))
        x_all = torch.from_numpy(x_np)
        # k-means initialisation of every level on the encoded first batch (as LC-Rec does)
        first = torch.from_numpy(_init_batch(num, max(cfg.init_batch_size, cfg.rqvae_batch_size), rng))
        with torch.no_grad():
            latent0 = encoder(x_all[first]).numpy()
        init = levelwise_kmeans(latent0, cfg.levels, cfg.codebook_size, cfg.distance, cfg.kmeans_iterations, cfg.seed)
        codebooks = [torch.nn.Parameter(torch.from_numpy(c.copy())) for c in init]
        params = list(encoder.parameters()) + list(decoder.parameters()) + codebooks
        optimizer = torch.optim.AdamW(params, lr=cfg.rqvae_learning_rate, weight_decay=1e-4)
        history: list[dict[str, float]] = []
        batch = min(cfg.rqvae_batch_size, num)
        for epoch in range(cfg.rqvae_epochs):
            order = torch.from_numpy(rng.permutation(num))
            totals = [0.0, 0.0]
            count = 0
            for start in range(0, num, batch):
                rows = order[start : start + batch]
                x = x_all[rows]
                z = encoder(x)
                quantised, quant_loss = _rq_forward(z, codebooks, cfg.distance, cfg.rqvae_beta, cfg.sk_epsilon, cfg.sk_iterations)
                z_q = z + (quantised - z).detach()  # straight-through
                recon = (decoder(z_q) - x).pow(2).sum(1).mean()
                loss = recon + quant_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                totals[0] += float(recon.detach())
                totals[1] += float(quant_loss.detach())
                count += 1
            history.append({"epoch": epoch, "reconstruction_loss": totals[0] / count, "quantisation_loss": totals[1] / count})
            if (epoch + 1) % max(1, cfg.rqvae_epochs // 5) == 0:
                log.info("rqvae epoch %d/%d: recon %.4f quant %.4f", epoch + 1, cfg.rqvae_epochs, *[t / count for t in totals])
        layers = [
            (m.weight.detach().numpy().astype(np.float32).copy(), m.bias.detach().numpy().astype(np.float32).copy())
            for m in encoder
            if isinstance(m, torch.nn.Linear)
        ]
        decoder_state = {f"decoder.{k}": v.detach().numpy().copy() for k, v in decoder.state_dict().items()}
        quantizer = ResidualQuantizer([c.detach().numpy().astype(np.float32).copy() for c in codebooks], distance=cfg.distance)
        return FitResult(quantizer=quantizer, encoder=layers, history=history, extra_tensors=decoder_state, info={"llm_alignment": False})

    def refine_collisions(self, result: FitResult, latent: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """LC-Rec's indexer: re-assign the last level of colliding items by Sinkhorn-Knopp,
        all colliding items together, until no collision is left or the rounds run out."""
        cfg = self.config
        if cfg.sk_epsilon <= 0 or cfg.sk_collision_rounds == 0:
            return codes
        codes = codes.copy()
        quantizer = result.quantizer
        last = quantizer.num_levels - 1
        for _ in range(cfg.sk_collision_rounds):
            colliding = colliding_rows(codes)
            if len(colliding) == 0:
                break
            residual = quantizer.residuals(latent[colliding], codes[colliding])[last]
            cost = pairwise_cost(residual, quantizer.codebooks[last], quantizer.distance)
            codes[colliding, last] = sinkhorn_codes(cost, cfg.sk_epsilon, cfg.sk_iterations)
        return codes


def _mlp(sizes: list[int]) -> Any:
    import torch

    layers: list[torch.nn.Module] = []
    for index in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[index], sizes[index + 1]))
        if index < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _rq_forward(
    z: Any, codebooks: list[Any], distance: str, beta: float, sk_epsilon: float, sk_iterations: int
) -> tuple[Any, Any]:
    """Residual quantisation of a batch with VQ losses; Sinkhorn-Knopp on the last level."""
    import torch

    residual = z
    quantised = torch.zeros_like(z)
    loss = z.new_zeros(())
    for level, codebook in enumerate(codebooks):
        with torch.no_grad():
            cost = _torch_cost(residual.detach(), codebook.detach(), distance)  # (B, K)
            if level == len(codebooks) - 1 and sk_epsilon > 0:
                chosen = _torch_sinkhorn_codes(cost, sk_epsilon, sk_iterations)
            else:
                chosen = cost.argmin(1)
        code_vectors = codebook[chosen]
        loss = loss + (residual.detach() - code_vectors).pow(2).sum(1).mean() + beta * (residual - code_vectors.detach()).pow(2).sum(1).mean()
        quantised = quantised + code_vectors
        residual = residual - code_vectors.detach()
    return quantised, loss


def _torch_cost(x: Any, codebook: Any, distance: str) -> Any:
    """Torch twin of :func:`pairwise_cost` for training loops: (B, e) x (K, e) -> (B, K)."""
    import torch.nn.functional as F

    if distance == "l2":
        return (x.pow(2).sum(1, keepdim=True) - 2.0 * x @ codebook.T + codebook.pow(2).sum(1)[None, :]).clamp_min(0.0)
    return 1.0 - F.normalize(x, dim=1) @ F.normalize(codebook, dim=1).T


def _torch_sinkhorn_codes(cost: Any, epsilon: float, iterations: int) -> Any:
    """Torch twin of :func:`alignrec.tokenizer.assign.sinkhorn_codes` (same maths)."""
    import math

    import torch

    num, num_codes = cost.shape
    cost = cost.double()
    spread = cost.max() - cost.min()
    scaled = (cost - cost.mean()) / (spread if spread > 0 else 1.0)  # within [-1, 1]
    if 1.0 / epsilon < 700.0:  # exp(+-1/eps) fits in float64: scaling vectors, two mat-vecs per iteration
        kernel = torch.exp(-scaled / epsilon)
        u = torch.ones(num, dtype=torch.float64)
        v = torch.ones(num_codes, dtype=torch.float64)
        for _ in range(iterations):
            u = (1.0 / num) / (kernel @ v)
            v = (1.0 / num_codes) / (kernel.T @ u)
        return (kernel * u[:, None] * v[None, :]).argmax(1)
    log_kernel = -scaled / epsilon
    lu = torch.zeros(num, dtype=torch.float64)
    lv = torch.zeros(num_codes, dtype=torch.float64)
    for _ in range(iterations):
        lu = -math.log(num) - torch.logsumexp(log_kernel + lv[None, :], dim=1)
        lv = -math.log(num_codes) - torch.logsumexp(log_kernel + lu[:, None], dim=0)
    return (log_kernel + lu[:, None] + lv[None, :]).argmax(1)
