"""Training the code-token rows without touching the rest of the embedding matrix.

Fine-tuning trains only the rows of the code tokens (a few hundred) of the ``V x D`` embedding
matrix (and of an untied output layer) through peft's trainable tokens. peft's forward builds
the whole matrix with those rows replaced (``index_copy``, a ``V x D`` copy) and looks tokens up
in it, so every step copies the matrix and backpropagates a dense ``V x D`` gradient into it; a
tied output layer does it a second time. For SmolLM2 (49k x 576) that was about 37% of a training
step of the shallow CPU path: more than the two decoder layers' backward.

:func:`use_row_forward` replaces that forward, on each trainable-tokens layer of a peft model,
by one that computes the same function from the rows alone:

- embedding: look every token up in the frozen matrix, then put the trained row at the positions
  holding a code token (``torch.where``); the gradient reaches the ``N x D`` trained rows only;
- output layer (a tied head wraps a Linear): the frozen logits with the code tokens' columns
  replaced by ``hidden @ rows.T``.

Outputs and gradients equal peft's (a test compares them); merging, saving and loading are
peft's own, untouched. Layers that are merged, disabled or carry several active adapters keep
peft's forward.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


def row_of_token(layer: Any, adapter: str, vocab_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids (N,), row of each vocabulary id (V,) with -1 for ids that have no trained row), cached."""
    indices = layer.token_indices[adapter]
    key = (adapter, tuple(indices), vocab_size, str(device))
    cached = getattr(layer, "_alignrec_rows", None)
    if cached is None or cached[0] != key:
        token_ids = torch.as_tensor(list(indices), dtype=torch.long, device=device)
        row_of = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
        row_of[token_ids] = torch.arange(len(token_ids), device=device)
        cached = (key, token_ids, row_of)
        layer._alignrec_rows = cached
    return cached[1], cached[2]


def _row_forward(layer: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The trainable-tokens forward from the trained rows alone (see the module docstring)."""
    active = list(layer.active_adapters)
    if layer.disable_adapters or layer.merged or len(active) != 1 or active[0] not in layer.token_indices:
        return layer._alignrec_peft_forward(x, *args, **kwargs)
    adapter = active[0]
    base = layer.base_layer
    weight = base.weight
    rows = layer.trainable_tokens_delta[adapter].to(weight)  # (N, D)
    if isinstance(base, torch.nn.Embedding):
        token_ids, row_of = row_of_token(layer, adapter, weight.shape[0], x.device)
        plain = F.embedding(x, weight, padding_idx=base.padding_idx, max_norm=base.max_norm, norm_type=base.norm_type,
                            scale_grad_by_freq=base.scale_grad_by_freq, sparse=base.sparse)  # (..., D)
        row = row_of[x]  # (...,) -1 for text tokens
        trained = F.embedding(row.clamp(min=0), rows)  # (..., D)
        result = torch.where((row >= 0).unsqueeze(-1), trained, plain)
        scale = layer._get_embed_scale()  # scaled embeddings (Gemma) scale inside their own forward
        return result * scale.to(result.dtype) if scale is not None else result
    if isinstance(base, torch.nn.Linear):
        token_ids, _ = row_of_token(layer, adapter, weight.shape[0], x.device)
        logits = F.linear(x, weight)  # (..., V); peft's tied head has no bias either
        return logits.index_copy(-1, token_ids, F.linear(x, rows))
    return layer._alignrec_peft_forward(x, *args, **kwargs)


def use_row_forward(model: Any) -> int:
    """Give every trainable-tokens layer of ``model`` the row-only forward; returns how many were changed."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    changed = 0
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer) and not hasattr(module, "_alignrec_peft_forward"):
            module._alignrec_peft_forward = module.forward
            module.forward = types.MethodType(_row_forward, module)
            changed += 1
    return changed
