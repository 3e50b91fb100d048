"""Inference: a prefix trie over item codes (:mod:`.trie`), batched constrained beam search
(:mod:`.beam_search`) and its Hugging Face reference (:mod:`.reference`), the model wrapper
(:mod:`.recommender`) and ``alignrec evaluate`` (:mod:`.evaluate`).

Nothing is imported here, so that ``alignrec --help`` does not load torch.
"""
