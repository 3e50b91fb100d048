"""Adding item code tokens (``<a_12>``, ...) to a tokenizer and a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
