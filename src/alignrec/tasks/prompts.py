"""Prompt formatting and encoding shared by training (tasks, finetune) and inference.

Training and inference must build token ids the same way, or the model is asked a question it
never saw: every example is ``encode(prompt) + encode(answer) + [eos]``, where the prompt is
encoded with the tokenizer's special tokens (BOS for Llama-style models) and the answer
without. The loss is on the answer only (labels of prompt tokens are -100).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IGNORE_INDEX = -100

# The frame around every instruction (our wording; Alpaca-style sections).
TEMPLATE = "Below is an instruction that describes a task. Write a response that completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"

# LC-Rec's sequential recommendation instruction; also the inference prompt.
SEQUENTIAL_INSTRUCTION = (
    "The user has interacted with items {history}, in chronological order. "
    "Can you predict the next possible item that the user may expect?"
)


def render(instruction: str) -> str:
    """The full prompt text for an instruction."""
    return TEMPLATE.format(instruction=instruction)


def sequential_prompt(history_items: Sequence[str]) -> str:
    """The inference prompt for a history given as item strings (e.g. ``<a_1><b_2><c_3>``)."""
    return render(SEQUENTIAL_INSTRUCTION.format(history=", ".join(history_items)))


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt (with the tokenizer's BOS if it adds one)."""
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def encode_example(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one training example: loss on the answer and EOS only."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        answer_ids.append(int(tokenizer.eos_token_id))
    return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids
