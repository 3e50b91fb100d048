"""The LLM backbone: loading (HF id, local folder, GGUF), code tokens in the vocabulary,
new-token initialisation, and tiny random models for tests."""
