"""Prompt formatting and encoding shared by training (tasks, finetune) and inference.

Training and inference must build token ids the same way, or the model is asked a question it
never saw: every example is ``encode(prompt) + encode(answer) + [eos]``, where the prompt is
encoded with the tokenizer's special tokens (BOS for Llama-style models) and the answer
without. The loss is on the answer only (labels of prompt tokens are -100).

Every task kind has several phrasings (:data:`PHRASINGS`); phrasing 0 of ``sequential`` is
LC-Rec's instruction and the inference prompt of models trained on the ``lcrec`` sequential
format (:func:`sequential_prompt`). The wording of every other phrasing is ours.

The ``dense`` sequential format (the default) has one short fixed instruction,
:data:`DENSE_INSTRUCTION`, followed directly by a user's items as code tokens, oldest first. A
training example is the instruction + a window of items; the loss is on every code of the
window's target items, each predicted from the items before it. At inference the prompt is the
instruction + the last items of the history (:func:`dense_prompt_ids`) and beam search
continues it. Dense answers carry no end-of-sequence token: every item has exactly L codes, and
inference never generates one.
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

# Instruction phrasings per task kind. Fields: {history} (item strings joined by ", "),
# {item} (one item string), {title}, {description}, {query}, {titles} (quoted titles joined by
# ", "), {token} (one code token), {level} (1-based level of a code token), {count}.
PHRASINGS: dict[str, tuple[str, ...]] = {
    # history of item codes -> next item's codes (phrasing 0 = the inference prompt)
    "sequential": (
        SEQUENTIAL_INSTRUCTION,
        "Here are the items a user engaged with, oldest first: {history}. Which item will the user choose next?",
        "Given the interaction history {history} (in time order), recommend the item this user is most likely to "
        "interact with next.",
        "A user interacted with {history}, in this order. What item comes next for this user?",
    ),
    # the negative behaviour task: same history, an item the user is unlikely to interact with
    "negative": (
        "The user has interacted with items {history}, in chronological order. "
        "Can you name an item that the user is unlikely to interact with next?",
        "Here are the items a user engaged with, oldest first: {history}. Which item would this user probably not "
        "choose?",
        "Given the interaction history {history} (in time order), suggest an item that does not match this user's "
        "interests.",
    ),
    # text alignment, codes -> text
    "item_to_title": (
        "What is the title of item {item}?",
        "Item {item} is sold under which title?",
        "Give the name of the item represented by {item}.",
    ),
    "item_to_description": (
        "Describe item {item}.",
        "What can you tell about the item {item}? Give its description.",
        "Write the product description of item {item}.",
    ),
    # text alignment, text -> codes
    "title_to_item": (
        'Which item has the title "{title}"?',
        'Find the item called "{title}".',
        'An item is named "{title}". What is its index?',
    ),
    "description_to_item": (
        'Which item is described as follows: "{description}"',
        'Here is an item description: "{description}" Which item is it?',
        'Find the item whose description reads "{description}".',
    ),
    # query alignment (LC-Rec's intention task): review/query text -> item codes
    "query_to_item": (
        'A user says: "{query}" Which item meets this need?',
        'Recommend an item for the following request: "{query}"',
        'Someone is looking for this: "{query}" Which item should they get?',
    ),
    "history_query_to_item": (
        'The user has interacted with items {history}, in chronological order. The user now says: "{query}" '
        "Which item should be recommended?",
        'Given the history {history} (in time order) and the request "{query}", recommend an item for this user.',
    ),
    # TS-Align (TS-Rec): single code token <-> the shared semantics of its item cluster
    "token_to_description": (
        "What do the items represented by the level-{level} code token {token} have in common?",
        "Describe the group of items that share the code token {token}.",
        "The token {token} stands for a cluster of {count} items. What kind of items are they?",
    ),
    "description_to_token": (
        'Which level-{level} code token stands for items described as: "{description}"',
        'Items that are "{description}" share which level-{level} token?',
    ),
    # LC-Rec's asymmetric tasks: history codes -> next title, history titles -> next codes
    "history_to_title": (
        "The user has interacted with items {history}, in chronological order. "
        "What is the title of the item the user is most likely to interact with next?",
        "Given the interaction history {history} (in time order), predict the title of the next item.",
    ),
    "titles_to_item": (
        "The user has interacted with the following items, in chronological order: {titles}. "
        "Can you predict the next possible item that the user may expect?",
        "A user bought {titles}, in this order. Which item will the user choose next?",
    ),
}


# The dense sequential format: this line, then the user's items as code tokens (our wording).
DENSE_INSTRUCTION = "A user's items, oldest first:"
SEQUENTIAL_FORMATS = ("dense", "lcrec")
# Task kinds whose answers are a stream of item codes without EOS (see the module docstring).
DENSE_KINDS = frozenset({"sequential_dense"})


def render(instruction: str) -> str:
    """The full prompt text for an instruction."""
    return TEMPLATE.format(instruction=instruction)


def format_history(history_items: Sequence[str]) -> str:
    """How a history of item strings is written inside an instruction."""
    return ", ".join(history_items)


def format_titles(titles: Sequence[str]) -> str:
    """How a history of item titles is written inside an instruction."""
    return ", ".join(f'"{title}"' for title in titles)


def phrase(kind: str, index: int, **fields: Any) -> str:
    """The full prompt of phrasing ``index`` of task kind ``kind`` filled with ``fields``."""
    try:
        templates = PHRASINGS[kind]
    except KeyError:
        raise KeyError(f"unknown task kind {kind!r}; known: {sorted(PHRASINGS)}") from None
    return render(templates[index].format(**fields))


def sequential_prompt(history_items: Sequence[str]) -> str:
    """The inference prompt for a history given as item strings (e.g. ``<a_1><b_2><c_3>``)."""
    return render(SEQUENTIAL_INSTRUCTION.format(history=format_history(history_items)))


def dense_prompt_ids(tokenizer: Any, history_token_ids: Sequence[int]) -> list[int]:
    """Inference prompt of the dense format: the encoded instruction + the history's code token ids.

    Training encodes the same thing as ``encode_prompt(DENSE_INSTRUCTION)`` followed by the
    window's code string; code tokens are whole added tokens, so both give these ids (a test
    checks it).
    """
    return encode_prompt(tokenizer, DENSE_INSTRUCTION) + [int(t) for t in history_token_ids]


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt (with the tokenizer's BOS if it adds one)."""
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def encode_answer(tokenizer: Any, answer: str, eos: bool = True) -> list[int]:
    """Token ids of an answer: no special tokens in front, EOS at the end (if the tokenizer has one
    and ``eos``)."""
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if eos and tokenizer.eos_token_id is not None:
        answer_ids.append(int(tokenizer.eos_token_id))
    return answer_ids


def encode_example(tokenizer: Any, prompt: str, answer: str, eos: bool = True) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one training example: loss on the answer (and EOS) only."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    answer_ids = encode_answer(tokenizer, answer, eos)
    return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def encode_examples(tokenizer: Any, prompts: Sequence[str], answers: Sequence[str],
                    eos: Sequence[bool] | None = None) -> list[tuple[list[int], list[int]]]:
    """:func:`encode_example` for many examples with one batched tokenizer call per side.

    Gives exactly the ids of :func:`encode_example` (a test checks it); only faster.
    ``eos[i]`` = False leaves example i without EOS (dense answers); default: all with EOS.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts for {len(answers)} answers")
    if not prompts:
        return []
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    end = [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []
    with_eos = [True] * len(prompts) if eos is None else list(eos)
    examples = []
    for p, a, e in zip(prompt_ids, answer_ids, with_eos, strict=True):
        a = list(a) + (end if e else [])
        examples.append((list(p) + a, [IGNORE_INDEX] * len(p) + a))
    return examples
