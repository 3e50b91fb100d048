"""Stage 3 — Alignment Tokenization (``alignrec tokenize train|assign``).

Item embeddings -> L codes per item from cascaded residual codebooks. Methods (a registry,
:data:`alignrec.tokenizer.methods.TOKENIZERS`): ``alignment`` (ours: balanced assignment,
behaviour + LLM alignment losses, no encoder/decoder), ``rqvae`` (LC-Rec/TIGER) and
``rqkmeans`` (plain residual k-means). :class:`~alignrec.tokenizer.codes.ItemCodes` is the
contract with every later stage; :class:`~alignrec.tokenizer.coldstart.ColdStartAssigner`
codes new items without retraining. See docs/tokenizer.md.
"""

from alignrec.tokenizer.codes import ItemCodes, code_token

__all__ = ["ColdStartAssigner", "ItemCodes", "TokenizerConfig", "TokenizerModel", "code_token", "train_tokenizer"]


def __getattr__(name: str):  # lazy: keep `import alignrec.tokenizer` light for later stages
    if name == "ColdStartAssigner":
        from alignrec.tokenizer.coldstart import ColdStartAssigner

        return ColdStartAssigner
    if name == "TokenizerConfig":
        from alignrec.tokenizer.config import TokenizerConfig

        return TokenizerConfig
    if name == "TokenizerModel":
        from alignrec.tokenizer.model import TokenizerModel

        return TokenizerModel
    if name == "train_tokenizer":
        from alignrec.tokenizer.train import train_tokenizer

        return train_tokenizer
    raise AttributeError(name)
