"""The prompt module: the inference prompt, every phrasing, batched vs single encoding."""

from __future__ import annotations

import re
import string

from alignrec.llm.tiny import build_tiny_tokenizer
from alignrec.llm import format as prompts

FIELDS = {"history": "<a_0><b_1>, <a_1><b_0>", "item": "<a_0><b_1>", "title": "Red Guitar", "description": "A guitar.",
          "query": "a loud guitar", "titles": '"Red Guitar", "Blue Drum"', "token": "<a_3>", "level": 1, "count": 4}


def test_the_inference_prompt_is_lcrec_and_phrasing_zero() -> None:
    history = ["<a_0><b_1>", "<a_1><b_0>"]
    expected = (
        "Below is an instruction that describes a task. Write a response that completes the request.\n\n"
        "### Instruction:\nThe user has interacted with items <a_0><b_1>, <a_1><b_0>, in chronological order. "
        "Can you predict the next possible item that the user may expect?\n\n### Response:\n"
    )
    assert prompts.sequential_prompt(history) == expected
    assert prompts.phrase("sequential", 0, history=prompts.format_history(history)) == expected


def test_every_phrasing_renders_with_its_fields() -> None:
    formatter = string.Formatter()
    for kind, templates in prompts.PHRASINGS.items():
        assert len(templates) >= 2, kind  # several phrasings per task kind
        assert len(set(templates)) == len(templates), kind
        for index, template in enumerate(templates):
            names = {name for _, name, _, _ in formatter.parse(template) if name}
            assert names <= set(FIELDS), (kind, index, names)
            text = prompts.phrase(kind, index, **FIELDS)
            assert not re.search(r"[{}]", text), (kind, index)
            assert text.endswith("### Response:\n")


def test_batched_encoding_equals_single_encoding() -> None:
    tokenizer = build_tiny_tokenizer(["guitar", "loud"], code_tokens=["<a_0>", "<a_1>", "<b_0>", "<b_1>"])
    pairs = [(prompts.sequential_prompt(["<a_0><b_1>"]), "<a_1><b_0>"),
             (prompts.phrase("item_to_title", 1, item="<a_1><b_1>"), "loud guitar"),
             (prompts.phrase("title_to_item", 0, title="guitar"), "<a_0><b_0>")]
    batched = prompts.encode_examples(tokenizer, [p for p, _ in pairs], [a for _, a in pairs])
    assert batched == [prompts.encode_example(tokenizer, p, a) for p, a in pairs]
    ids, labels = batched[0]
    answer = tokenizer.convert_tokens_to_ids(["<a_1>", "<b_0>"]) + [tokenizer.eos_token_id]
    assert ids[-3:] == answer and labels[-3:] == answer
    assert labels[:-3] == [prompts.IGNORE_INDEX] * (len(ids) - 3)
    assert ids[: len(ids) - 3] == prompts.encode_prompt(tokenizer, pairs[0][0])
