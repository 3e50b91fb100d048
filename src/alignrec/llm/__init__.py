"""The LLM library every LLM stage shares (tasks, finetune, evaluate, serve):

- :mod:`.format`: prompts and the sequence format (training examples, inference prompt ids);
- :mod:`.vocab`: item code tokens in a tokenizer and their ids (:class:`~.vocab.CodeVocabulary`);
- :mod:`.backbone`, :mod:`.init`, :mod:`.code_rows`, :mod:`.code_head`: loading a backbone,
  initialising the code-token rows, training only those rows, the code-only head;
- :mod:`.finetuned`: a fine-tuned run (:class:`~.finetuned.FinetunedRun`, :func:`load_finetuned`);
- :mod:`.trie`, :mod:`.beam_search`, :mod:`.reference`, :mod:`.shared_prefix`,
  :mod:`.recommender`: constrained beam search and the recommender built on it;
- :mod:`.tiny`, :mod:`.tiny_run`: tiny random models and run folders for tests.

Only :mod:`.finetuned` is imported here, so that ``alignrec --help`` does not load torch.
"""

from alignrec.llm.finetuned import Finetuned, FinetunedRun, load_finetuned

__all__ = ["Finetuned", "FinetunedRun", "load_finetuned"]
