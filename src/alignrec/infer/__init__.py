"""Inference: a prefix trie over item codes, batched constrained beam search (plus the
Hugging Face reference), and ``alignrec evaluate``."""

from alignrec.infer.beam_search import BeamSearchOutput, code_token_ids, constrained_beam_search
from alignrec.infer.trie import CodeTrie

__all__ = ["BeamSearchOutput", "CodeTrie", "code_token_ids", "constrained_beam_search"]
