"""The format of everything the LLM reads and writes: one home for training and inference.

- **Prompts.** Every task kind has several phrasings (:data:`PHRASINGS`), rendered in one
  frame (:data:`TEMPLATE`); phrasing 0 of ``sequential`` is LC-Rec's instruction and the
  inference prompt of models trained on the ``lcrec`` sequential format.
- **The sequence format** (:class:`SequenceFormat`, recorded in the fine-tuned model's
  ``ModelSettings``): how a user's items become a prompt. ``dense`` (the default) is one short
  fixed instruction, :data:`DENSE_INSTRUCTION`, followed directly by the items as code tokens,
  oldest first; a training example is the instruction + a window of items
  (:mod:`alignrec.data.windows`) with the loss on every code of the window's target items, and
  the inference prompt is the instruction + the newest ``max_history`` items of the history.
  ``lcrec`` is LC-Rec's one-target prompt.
- **Token ids.** Every example is ``encode(prompt) + encode(answer) [+ eos]``: the prompt with
  the tokenizer's special tokens (BOS for Llama-style models), the answer without; the loss is
  on the answer only (labels of prompt tokens are -100). Dense answers carry no
  end-of-sequence token (:func:`answer_has_eos`): every item has exactly L codes, and
  inference never generates one. Inference builds the same ids from item indices directly
  (:meth:`SequenceFormat.prompt_ids`; a round-trip test checks they equal the training ids).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from alignrec.data.windows import sequence_windows as windows_of

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


def answer_has_eos(kind: str | None) -> bool:
    """The EOS rule: an answer ends with the end-of-sequence token unless it is a dense code stream."""
    return kind not in DENSE_KINDS


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
    ``eos[i]`` = False leaves example i without EOS (:func:`answer_has_eos`); default: all with EOS.
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


def encode_records(tokenizer: Any, records: Sequence[Mapping[str, Any]]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of task records (``prompt``, ``answer``, ``kind``), with the EOS rule."""
    eos = [answer_has_eos(r.get("kind")) for r in records]
    return encode_examples(tokenizer, [r["prompt"] for r in records], [r["answer"] for r in records], eos)


@dataclass(frozen=True)
class SequenceFormat:
    """How a user's items become the LLM's sequential examples and prompts (module docstring).

    ``kind``: ``dense`` or ``lcrec``; ``max_history``: the newest items a prompt holds (the data
    set's history cut); ``stride``: dense training windows, items between consecutive window ends
    (0 = ``max_history``: consecutive windows share one item; 1 = every target with its full
    context). Stored with the tasks (``tasks/format.json``) and in the fine-tuned model's settings.
    """

    kind: Literal["dense", "lcrec"] = "dense"
    max_history: int = 20
    stride: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SEQUENTIAL_FORMATS:
            raise ValueError(f"sequential format must be one of {SEQUENTIAL_FORMATS}, got {self.kind!r}")
        if self.max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {self.max_history}")
        if not 0 <= self.stride <= self.max_history:
            raise ValueError(f"stride must be in 0..{self.max_history} (0 = max_history), got {self.stride}")

    @classmethod
    def from_mapping(cls, stored: Mapping[str, Any]) -> SequenceFormat:
        return cls(**{k: stored[k] for k in ("kind", "max_history", "stride") if k in stored})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def task_kind(self) -> str:
        """The ``kind`` of this format's sequential examples in the task files."""
        return "sequential_dense" if self.kind == "dense" else "sequential"

    # -- the history cut and the training windows ---------------------------------------
    def history(self, items: Sequence[int]) -> list[int]:
        """The part of a history (item indices, oldest first) that a prompt holds: its newest items."""
        return [int(i) for i in items][-self.max_history :]

    def windows(self, sequences: Sequence[np.ndarray]) -> list[tuple[int, list[int], list[int]]]:
        """The dense training examples of these sequences: ``(sequence index, context items, target
        items)``, by sequence and oldest window first. A window holds at most ``max_history + 1`` items
        (an inference prompt's history plus one target)."""
        bounds = windows_of([len(s) for s in sequences], self.max_history + 1, self.stride or self.max_history)
        order = np.lexsort((bounds.end, bounds.sequence))  # oldest window of each sequence first
        examples = []
        for n in order.tolist():
            items = sequences[int(bounds.sequence[n])]
            start, first, end = int(bounds.start[n]), int(bounds.first_target[n]), int(bounds.end[n])
            examples.append((int(bounds.sequence[n]), [int(i) for i in items[start:first]], [int(i) for i in items[first:end]]))
        return examples

    # -- text (what the tasks stage writes) ------------------------------------------------
    def prompt_text(self, history: Sequence[str]) -> str:
        """The sequential prompt for a history given as item strings (``<a_1><b_2>``, ...)."""
        if self.kind == "dense":
            return DENSE_INSTRUCTION + "".join(history)
        return sequential_prompt(history)

    @staticmethod
    def answer_text(targets: Sequence[str]) -> str:
        """The answer of a sequential example: its target items' code strings, in order."""
        return "".join(targets)

    # -- ids (what inference feeds the model) ------------------------------------------------
    def prompt_ids(self, tokenizer: Any, vocabulary: Any, item_codes: Any, history: Sequence[int]) -> list[int]:
        """Token ids of the sequential prompt for ``history`` (item indices, oldest first; cut to
        ``max_history``): the ids training encodes for the same items. ``item_codes`` are the
        :class:`~alignrec.tokenizer.codes.ItemCodes`, ``vocabulary`` their
        :class:`~alignrec.llm.vocab.CodeVocabulary`."""
        items = self.history(history)
        if self.kind == "dense":
            codes = item_codes.codes
            return encode_prompt(tokenizer, DENSE_INSTRUCTION) + [t for i in items for t in vocabulary.item_token_ids(codes[i])]
        return encode_prompt(tokenizer, sequential_prompt([item_codes.item_string(i) for i in items]))
