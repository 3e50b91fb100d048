"""Tiny, randomly initialised Llama models with a word-level tokenizer, built in-process.

For tests and smoke runs: no downloads, a few thousand parameters, deterministic for a seed.
The tokenizer knows the words of the prompt template plus the words you pass, splits on
whitespace and punctuation, adds ``<s>`` at the start of every encoded prompt (like Llama)
and treats added tokens (the item codes) as whole tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from alignrec.llm import format as prompts

SPECIAL = ("<pad>", "<s>", "</s>", "<unk>")
_WORD = re.compile(r"\w+|[^\w\s]+")  # the same split as pre_tokenizers.Whitespace


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct word/punctuation pieces of ``texts``, in first-seen order."""
    seen: dict[str, None] = {}
    for text in texts:
        for piece in _WORD.findall(text):
            seen.setdefault(piece, None)
    return list(seen)


def build_tiny_tokenizer(words: Sequence[str] = (), code_tokens: Sequence[str] = ()) -> Any:
    """A fast word-level tokenizer over the prompt template's words + ``words`` + ``code_tokens``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    phrasings = [text for texts in prompts.PHRASINGS.values() for text in texts]
    template_text = [prompts.TEMPLATE, prompts.SEQUENTIAL_INSTRUCTION, *phrasings, "0 1 2 3 4 5 6 7 8 9 , . ? ! : ; ( ) - ' \" / & +"]
    vocabulary = list(SPECIAL) + [w for w in words_of([*template_text, *words]) if w not in SPECIAL]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins pieces with spaces
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    if code_tokens:
        from alignrec.llm.vocab import add_code_tokens

        add_code_tokens(tokenizer, None, code_tokens)
    return tokenizer


def build_tiny_llama(
    vocab_size: int,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    max_positions: int = 1024,
    tie_word_embeddings: bool = False,
    initializer_range: float = 0.02,
) -> Any:
    """A LlamaForCausalLM with random weights (fixed by ``seed``); ``tie_word_embeddings`` shares
    the input and output matrices (as SmolLM2 does).

    ``initializer_range`` is the std of the random weights. LoRA tests want it large (~0.5):
    with the default 0.02 the frozen output rows are so short that no hidden state can give a
    frozen token (EOS) a confident logit, which a pretrained model has no trouble with.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def build_tiny_backbone(words: Sequence[str] = (), code_tokens: Sequence[str] = (), seed: int = 0, **model_kwargs: Any) -> tuple[Any, Any]:
    """(model, tokenizer) with the code tokens already in the vocabulary."""
    tokenizer = build_tiny_tokenizer(words, code_tokens)
    return build_tiny_llama(len(tokenizer), seed=seed, **model_kwargs), tokenizer
