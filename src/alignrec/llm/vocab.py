"""The code vocabulary: item code tokens (``<a_12>``, ...) in a tokenizer and a model, in one place.

:func:`add_code_tokens` puts the tokens of a set of item codes into a tokenizer (and grows the
model's matrices); :meth:`CodeVocabulary.from_tokenizer` reads their ids back and is the only
place code-token ids are looked up. A job builds one :class:`CodeVocabulary` and hands it to
everything that needs ids: the code-only loss and the validation ranker of fine-tuning, the
prompt encoder (:mod:`alignrec.llm.format`) and beam search (:mod:`alignrec.llm.beam_search`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alignrec.errors import InputError
from alignrec.tokenizer.codes import code_token


def add_code_tokens(tokenizer: Any, model: Any | None, tokens: Sequence[str]) -> list[int]:
    """Add ``tokens`` as whole, unnormalised tokens; grow the model's embedding (and output)
    matrices to the new vocabulary size. Returns the token ids in ``tokens`` order.

    Tokens that already exist keep their ids (adding twice is a no-op). The new rows are left
    as ``resize_token_embeddings`` initialises them; see :mod:`alignrec.llm.init` for the
    initialisation options.
    """
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, single_word=False, normalized=False, special=False) for t in tokens])
    if model is not None:
        embeddings = model.get_input_embeddings()
        if embeddings.num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    unknown = tokenizer.unk_token_id
    if any(i is None or (unknown is not None and i == unknown) for i in ids):
        raise RuntimeError("a code token was not added to the tokenizer as a single token")
    return [int(i) for i in ids]


@dataclass
class CodeVocabulary:
    """Token ids of the codes of every level, and the reverse map token id -> (level, code).

    ``level_token_ids[l]`` (K_l,) is the token id of code ``c`` of level ``l`` at index ``c``;
    ``level_of[t]`` / ``code_of[t]`` (V,) give a token's level and code (-1 for text tokens).
    """

    level_token_ids: list[torch.Tensor]
    level_of: torch.Tensor  # (V,) int64
    code_of: torch.Tensor  # (V,) int64
    # [level][code] -> token id as Python ints (building prompts one item at a time)
    token_table: list[list[int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.token_table:
            self.token_table = [t.tolist() for t in self.level_token_ids]

    @classmethod
    def build(cls, level_token_ids: Sequence[Any], vocab_size: int) -> CodeVocabulary:
        """From the token ids of each level's codes, for a vocabulary of ``vocab_size`` tokens."""
        tables = [torch.as_tensor(t, dtype=torch.long).cpu() for t in level_token_ids]
        size = max(vocab_size, 1 + max(int(t.max()) for t in tables))
        level_of = torch.full((size,), -1, dtype=torch.long)
        code_of = torch.full((size,), -1, dtype=torch.long)
        for level, table in enumerate(tables):
            level_of[table] = level
            code_of[table] = torch.arange(len(table))
        return cls(tables, level_of, code_of)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, codebook_sizes: Sequence[int]) -> CodeVocabulary:
        """The code tokens of codebooks of ``codebook_sizes`` as ``tokenizer`` numbers them.

        Raises :class:`InputError` when the tokenizer lacks a code token (a model fine-tuned on
        other item codes, or a plain backbone without the code tokens).
        """
        unknown = tokenizer.unk_token_id
        per_level = []
        for level, size in enumerate(codebook_sizes):
            tokens = [code_token(level, code) for code in range(size)]
            ids = tokenizer.convert_tokens_to_ids(tokens)
            missing = [t for t, i in zip(tokens, ids, strict=True) if i is None or (unknown is not None and i == unknown)]
            if missing:
                raise InputError(
                    f"the tokenizer has no token for {len(missing)} item code(s) (first: {missing[0]}); "
                    "was the model fine-tuned with these item codes?"
                )
            per_level.append(ids)
        return cls.build(per_level, len(tokenizer))

    @property
    def num_levels(self) -> int:
        return len(self.level_token_ids)

    @property
    def codebook_sizes(self) -> list[int]:
        return [len(t) for t in self.level_token_ids]

    @property
    def max_token_id(self) -> int:
        return max(int(t.max()) for t in self.level_token_ids)

    def item_token_ids(self, codes: Sequence[int]) -> list[int]:
        """The token ids of one item's codes (one per level)."""
        return [self.token_table[level][int(code)] for level, code in enumerate(codes)]

    def to(self, device: Any) -> CodeVocabulary:
        return CodeVocabulary([t.to(device) for t in self.level_token_ids], self.level_of.to(device),
                              self.code_of.to(device), self.token_table)
