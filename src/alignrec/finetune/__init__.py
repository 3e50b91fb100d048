"""Fine-tuning (stage two): LoRA + trainable code-token rows on the alignment tasks."""
