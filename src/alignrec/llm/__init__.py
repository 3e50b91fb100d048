"""The LLM backbone: loading (HF id, local folder, GGUF), code tokens in the vocabulary,
new-token initialisation, tiny random models for tests, and loading a fine-tuned run
(:func:`load_finetuned`)."""

from alignrec.llm.finetuned import Finetuned, load_finetuned

__all__ = ["Finetuned", "load_finetuned"]
