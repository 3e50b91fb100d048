"""Beam decoding without copying the prompt's KV cache for every beam.

All beams of one user share the same prompt, so they share the prompt's keys and values. The
usual beam-search cache (HF's, and the plain path of :mod:`alignrec.llm.beam_search`) holds
one full copy per beam and copies all of it again at every step (``torch.cat`` to append the
new token, ``index_select`` to follow the surviving beams): beams x prompt length x layers of
memory traffic per step, which dominates the decode steps when answers are as short as item
codes (measured: ~75% of the fast search's time on CPU before this module).

Here the cache keeps two parts per layer:

- the prompt part, ``(B, Hk, T, d)``: one copy per *user*, written once by the prompt pass
  (HF's own attention and masks) and never copied again;
- the generated part, ``(B*W, Hk, s, d)``: one row per beam, ``s <= L - 1`` tokens, small.

During decoding a registered attention function (:data:`ATTENTION_NAME`, through
transformers' ``AttentionInterface``) attends each beam's query to its user's prompt part
(a broadcast matmul, no copy) and to its own generated part, with one softmax over both.
Only models whose attention goes through ``AttentionInterface`` and has no sliding window,
soft-capping or attention sinks qualify (:func:`supports_shared_prefix`); others use the
plain path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

ATTENTION_NAME = "alignrec_shared_prefix"
_REGISTERED = False
# Model types whose decoder attention is plain scaled dot-product (after rotary / q-k norms),
# checked against the reference search in tests/evaluate for Llama (the architecture of SmolLM2).
_PLAIN_ATTENTION_MODELS = {"llama", "qwen2", "qwen3", "mistral", "phi3", "olmo", "olmo2", "granite"}


class SharedPrefixCache:
    """Per-layer prompt K/V per user + generated K/V per beam (see the module docstring).

    ``prompt_keys[l]`` (B, Hk, T, d), ``prompt_valid`` (B, T) bool (False = left padding),
    ``generated_keys[l]`` (B*W, Hk, s, d); beams are user-major: row r belongs to user r // W.
    """

    def __init__(self, prompt_cache: Any, prompt_valid: torch.Tensor):
        layers = prompt_cache.layers
        self.prompt_keys = [layer.keys for layer in layers]
        self.prompt_values = [layer.values for layer in layers]
        self.prompt_valid = prompt_valid.bool()  # (B, T)
        self.generated_keys: list[torch.Tensor | None] = [None] * len(layers)
        self.generated_values: list[torch.Tensor | None] = [None] * len(layers)
        self.width = 1

    @property
    def users(self) -> int:
        return int(self.prompt_valid.shape[0])

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens' K/V (B*W, Hk, q, d) to the generated part; return the part."""
        if self.generated_keys[layer_idx] is None:
            self.generated_keys[layer_idx], self.generated_values[layer_idx] = keys, values
        else:
            self.generated_keys[layer_idx] = torch.cat([self.generated_keys[layer_idx], keys], dim=2)
            self.generated_values[layer_idx] = torch.cat([self.generated_values[layer_idx], values], dim=2)
        return self.generated_keys[layer_idx], self.generated_values[layer_idx]

    def select(self, rows: torch.Tensor, width: int) -> None:
        """Keep beam rows ``rows`` (B*width,) of the current generated part (user-major)."""
        for layer in range(len(self.generated_keys)):
            if self.generated_keys[layer] is not None:
                self.generated_keys[layer] = self.generated_keys[layer].index_select(0, rows)
                self.generated_values[layer] = self.generated_values[layer].index_select(0, rows)
        self.width = width

    def get_seq_length(self, layer_idx: int = 0) -> int:
        generated = self.generated_keys[layer_idx]
        return int(self.prompt_keys[layer_idx].shape[2]) + (0 if generated is None else int(generated.shape[2]))


def shared_prefix_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of beam queries over [user's prompt K/V ; beam's generated K/V].

    query (N, H, q, d) with N = B*W; key/value = the generated part (N, Hk, s, d) returned by
    :meth:`SharedPrefixCache.update`. Returns (N, q, H, d) like HF's attention functions.
    The new tokens attend to every generated token before them and to themselves (causal
    within the generated part).
    """
    cache: SharedPrefixCache | None = kwargs.get("shared_prefix_cache")
    if cache is None:
        raise RuntimeError("shared-prefix attention called without its cache (pass shared_prefix_cache=...)")
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise RuntimeError("shared-prefix attention does not support sliding windows, soft-capping or sinks")
    layer = module.layer_idx
    prompt_keys, prompt_values = cache.prompt_keys[layer], cache.prompt_values[layer]  # (B, Hk, T, d)
    rows, heads, q_len, dim = query.shape
    users, kv_heads, prompt_len, _ = prompt_keys.shape
    width = rows // users
    group = heads // kv_heads
    generated = key.shape[2]
    scale = scaling if scaling is not None else dim**-0.5

    # Prompt part: (B, Hk, W*G*q, d) @ (B, Hk, d, T) -> (B, Hk, W*G*q, T), the prompt read once per user.
    q_user = query.reshape(users, width, kv_heads, group, q_len, dim).permute(0, 2, 1, 3, 4, 5)
    q_user = q_user.reshape(users, kv_heads, width * group * q_len, dim)
    prompt_scores = torch.matmul(q_user, prompt_keys.transpose(-1, -2)).float() * scale
    prompt_scores = prompt_scores.masked_fill(~cache.prompt_valid[:, None, None, :], float("-inf"))
    # Generated part: (N, Hk, G*q, d) @ (N, Hk, d, s) -> (N, Hk, G*q, s)
    q_beam = query.reshape(rows, kv_heads, group * q_len, dim)
    generated_scores = torch.matmul(q_beam, key.transpose(-1, -2)).float() * scale
    if q_len > 1:  # query i (the (s - q + i)-th generated token) sees generated tokens 0 .. s - q + i
        visible = torch.ones(q_len, generated, dtype=torch.bool, device=query.device).tril(generated - q_len)
        generated_scores = generated_scores.view(rows, kv_heads, group, q_len, generated).masked_fill(~visible, float("-inf"))
        generated_scores = generated_scores.view(rows, kv_heads, group * q_len, generated)

    # One softmax over both parts: shared maximum, shared normaliser.
    prompt_scores = prompt_scores.view(users, kv_heads, width, group * q_len, prompt_len).transpose(1, 2)  # (B, W, Hk, G*q, T)
    generated_scores = generated_scores.view(users, width, kv_heads, group * q_len, generated)
    top = torch.maximum(prompt_scores.amax(-1, keepdim=True), generated_scores.amax(-1, keepdim=True))
    prompt_weights = (prompt_scores - top).exp()
    generated_weights = (generated_scores - top).exp()
    total = prompt_weights.sum(-1, keepdim=True) + generated_weights.sum(-1, keepdim=True)
    prompt_weights = (prompt_weights / total).to(value.dtype)
    generated_weights = (generated_weights / total).to(value.dtype)

    # (B, Hk, W*G*q, T) @ (B, Hk, T, d) + (N, Hk, G*q, s) @ (N, Hk, s, d)
    prompt_out = torch.matmul(
        prompt_weights.transpose(1, 2).reshape(users, kv_heads, width * group * q_len, prompt_len), prompt_values
    )
    prompt_out = prompt_out.view(users, kv_heads, width, group * q_len, dim).transpose(1, 2).reshape(rows, kv_heads, group * q_len, dim)
    generated_out = torch.matmul(generated_weights.reshape(rows, kv_heads, group * q_len, generated), value)
    out = (prompt_out + generated_out).reshape(rows, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


def supports_shared_prefix(model: Any) -> bool:
    """True when the model's attention can be swapped for :func:`shared_prefix_attention`."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in _PLAIN_ATTENTION_MODELS:
        return False
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return False
    can_set = getattr(model, "_can_set_attn_implementation", None)
    return bool(can_set and can_set())


def _register() -> None:
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
        _REGISTERED = True


@contextmanager
def shared_prefix_attention_enabled(model: Any) -> Iterator[None]:
    """Switch the model to shared-prefix attention inside the block, back afterwards."""
    _register()
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
