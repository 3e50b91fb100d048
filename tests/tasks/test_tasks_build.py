"""Known-answer tests of the task builders on the hand-made 3-user data set (see tasks_data.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from tasks_data import handmade_codes, write_descriptions, write_handmade_run

from alignrec.cli import main
from alignrec.config import ConfigError, from_mapping
from alignrec.data import load_dataset
from alignrec.errors import InputError
from alignrec.llm.format import SequenceFormat
from alignrec.tasks.build import (
    NegativeSampler,
    TasksConfig,
    build_tasks,
    read_examples,
    run_build,
)

HEAD = "Below is an instruction that describes a task. Write a response that completes the request.\n\n### Instruction:\n"
TAIL = "\n\n### Response:\n"


def full(instruction: str) -> str:
    return HEAD + instruction + TAIL


def build(run: Path, **settings: object):
    # default: phrasing 0 only, exact strings; LC-Rec's one-target prompts (the dense format has its own tests)
    settings = {"phrasings": 1, "sequential_format": "lcrec", **settings}
    config = TasksConfig(**settings)  # type: ignore[arg-type]
    return build_tasks(load_dataset(run), handmade_codes(), config, run / "tokenizer" / "code_descriptions.json")


def of_task(examples, task):
    return [(e.prompt, e.answer, e.user, e.item) for e in examples if e.task == task]


def test_sequential_known_answers(handmade_run: Path) -> None:
    tasks = build(handmade_run, tasks=["sequential"])
    assert of_task(tasks.train, "sequential") == [
        (full("The user has interacted with items <a_0><b_0>, in chronological order. Can you predict the next "
              "possible item that the user may expect?"), "<a_0><b_1>", 0, 1),
        (full("The user has interacted with items <a_0><b_1>, in chronological order. Can you predict the next "
              "possible item that the user may expect?"), "<a_1><b_0>", 1, 2),
        (full("The user has interacted with items <a_0><b_1>, <a_1><b_0>, in chronological order. Can you predict "
              "the next possible item that the user may expect?"), "<a_2><b_0>", 1, 4),
    ]
    # valid.jsonl: the validation targets with the inference prompt
    assert [(e.prompt, e.answer) for e in tasks.valid] == [
        (full("The user has interacted with items <a_0><b_0>, <a_0><b_1>, in chronological order. Can you predict "
              "the next possible item that the user may expect?"), "<a_1><b_0>"),
        (full("The user has interacted with items <a_0><b_1>, <a_1><b_0>, <a_2><b_0>, in chronological order. Can "
              "you predict the next possible item that the user may expect?"), "<a_2><b_1>"),
        (full("The user has interacted with items <a_2><b_1>, in chronological order. Can you predict the next "
              "possible item that the user may expect?"), "<a_2><b_0>"),
    ]


def test_text_known_answers(handmade_run: Path) -> None:
    text = of_task(build(handmade_run, tasks=["text"]).train, "text")
    item0 = [t for t in text if t[3] == 0]
    assert item0 == [
        (full("What is the title of item <a_0><b_0>?"), "Red Guitar", None, 0),
        (full('Which item has the title "Red Guitar"?'), "<a_0><b_0>", None, 0),
        (full("Describe item <a_0><b_0>."), "A loud electric guitar.", None, 0),
        (full('Which item is described as follows: "A loud electric guitar."'), "<a_0><b_0>", None, 0),
    ]
    # item 3 has no description: title tasks only
    assert [t[1] for t in text if t[3] == 3] == ["Old Violin", "<a_1><b_1>"]
    assert len(text) == 6 * 4 - 2


def test_history_title_tasks_known_answers(handmade_run: Path) -> None:
    tasks = build(handmade_run, tasks=["history_to_title", "titles_to_item"])
    assert of_task(tasks.train, "history_to_title")[2] == (
        full("The user has interacted with items <a_0><b_1>, <a_1><b_0>, in chronological order. What is the title "
             "of the item the user is most likely to interact with next?"), "Silver Flute", 1, 4)
    assert of_task(tasks.train, "titles_to_item")[2] == (
        full('The user has interacted with the following items, in chronological order: "Blue Drum", "Green Piano". '
             "Can you predict the next possible item that the user may expect?"), "<a_2><b_0>", 1, 4)


def test_query_known_answers_and_no_leak(handmade_run: Path) -> None:
    tasks = build(handmade_run, tasks=["query"])
    query = [e for e in tasks.train if e.task == "query"]
    # bob's review is about his test item (0): skipped; carol's item 5 has no history -> plain query
    assert {(e.user, e.item) for e in query} == {(0, 1), (2, 5)}
    carol = next(e for e in query if e.user == 2)
    assert (carol.kind, carol.prompt, carol.answer) == (
        "query_to_item", full('A user says: "Loud and clear amp" Which item meets this need?'), "<a_2><b_1>")
    alice = next(e for e in query if e.user == 0)
    assert alice.answer == "<a_0><b_1>"
    if alice.kind == "history_query_to_item":
        assert alice.prompt == full('The user has interacted with items <a_0><b_0>, in chronological order. The user '
                                    'now says: "I wanted a drum for my kid" Which item should be recommended?')
    else:
        assert alice.prompt == full('A user says: "I wanted a drum for my kid" Which item meets this need?')
    assert tasks.stats["tasks"]["query"]["notes"]["reviews_of_valid_or_test_items_skipped"] == 1


def test_ts_align_known_answers(handmade_run: Path) -> None:
    write_descriptions(handmade_run, {
        "<a_0>": {"level": 0, "code": 0, "items": 2, "keywords": ["guitar", "drum"], "description": "guitars and drums"},
        "<b_1>": {"level": 1, "code": 1, "items": 3, "keywords": [], "description": "small   instruments"},
        "<b_0>": {"level": 1, "code": 0, "items": 3, "keywords": [], "description": ""},
    })
    tasks = build(handmade_run, tasks=["ts_align"])
    assert [(e.prompt, e.answer) for e in tasks.train] == [
        (full("What do the items represented by the level-1 code token <a_0> have in common?"), "guitars and drums"),
        (full('Which level-1 code token stands for items described as: "guitars and drums"'), "<a_0>"),
        (full("What do the items represented by the level-2 code token <b_1> have in common?"), "small instruments"),
        (full('Which level-2 code token stands for items described as: "small instruments"'), "<b_1>"),
    ]
    assert tasks.stats["tasks"]["ts_align"]["notes"] == {"tokens_without_description": 1}


def test_bad_code_descriptions_name_the_file(handmade_run: Path) -> None:
    path = write_descriptions(handmade_run, {"<z_9>": {"description": "x"}})
    with pytest.raises(InputError, match=r"code_descriptions\.json.*<z_9>"):
        build(handmade_run, tasks=["ts_align"])
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"code_descriptions\.json: line 1"):
        build(handmade_run, tasks=["ts_align"])


def test_negative_ratio_and_never_from_history(handmade_run: Path) -> None:
    tasks = build(handmade_run, tasks=["sequential", "negative"], negative_ratio=2)
    negatives = [e for e in tasks.train if e.task == "negative"]
    training_items = {0: {0, 1}, 1: {1, 2, 4}}  # without the validation and test items (held-out labels)
    # alice: 2 negatives from {2, 3, 4, 5}; bob: 2 + 2 from {0, 3, 5}
    assert len(negatives) == 6
    assert "notes" not in tasks.stats["tasks"]["negative"]
    for e in negatives:
        assert e.item not in training_items[e.user]
        assert e.answer == handmade_codes().item_string(e.item)
    assert {e.item for e in negatives if e.user == 0} <= {2, 3, 4, 5}
    assert {e.item for e in negatives if e.user == 1} <= {0, 3, 5}


def test_negatives_do_not_depend_on_the_held_out_labels(handmade_run: Path) -> None:
    """Validation and test targets are labels: excluding them from the negatives would make the
    training data depend on them. With enough draws, alice's negatives are every non-training item."""
    tasks = build(handmade_run, tasks=["sequential", "negative"], negative_ratio=6)
    alice = {e.item for e in tasks.train if e.task == "negative" and e.user == 0}
    assert alice == {2, 3, 4, 5}  # 2 = her validation target, 3 = her test target
    assert tasks.stats["tasks"]["negative"]["notes"]["users_with_too_few_non_interacted_items"] == 3
    assert next(e for e in tasks.train if e.task == "negative").prompt == full(
        "The user has interacted with items <a_0><b_0>, in chronological order. Can you name an item that the user "
        "is unlikely to interact with next?")


def test_negatives_never_from_history_on_a_larger_set(tmp_path: Path) -> None:
    from alignrec.data.synthetic import write_synthetic

    run = tmp_path / "run"
    write_synthetic(run, num_users=40, num_items=24, groups=4, length=10, kind="clusters", seed=3)
    dataset = load_dataset(run)
    i = np.arange(24)
    from alignrec.tokenizer.codes import ItemCodes

    codes = ItemCodes(np.stack([i // 4, i % 4], axis=1), [6, 4])
    for sampler in ("uniform", "popularity"):
        config = TasksConfig(tasks=["sequential", "negative"], negative_ratio=3, negative_sampler=sampler,
                             sequential_format="lcrec")
        tasks = build_tasks(dataset, codes, config)
        positives = [e for e in tasks.train if e.task == "sequential"]
        negatives = [e for e in tasks.train if e.task == "negative"]
        assert len(negatives) == 3 * len(positives) > 0
        for e in negatives:
            assert e.item not in set(dataset.training_sequences()[e.user].tolist())


def test_fractional_ratio_is_kept_on_average() -> None:
    sampler = NegativeSampler(1000)
    rng = np.random.default_rng(0)
    assert sorted(sampler.sample(rng, set(range(1000)) - {7, 9}, 5)) == [7, 9]  # fewer exist than asked
    assert sampler.sample(rng, set(range(1000)), 2) == []
    drawn = sampler.sample(rng, set(range(500)), 400)
    assert len(set(drawn)) == 400 and min(drawn) >= 500


def test_switching_a_task_off_keeps_the_others(handmade_run: Path) -> None:
    both = build(handmade_run, tasks=["sequential", "negative", "text"], phrasings=0)
    alone = build(handmade_run, tasks=["text"], phrasings=0)
    assert [e.to_json() for e in both.train if e.task == "text"] == [e.to_json() for e in alone.train]
    assert both.stats["tasks"]["query"] == {"status": "disabled"}


def test_budgets(handmade_run: Path) -> None:
    tasks = build(handmade_run, tasks=["sequential", "text"], max_samples_per_task=2)
    assert sum(e.task == "sequential" for e in tasks.train) == 2
    assert sum(e.task == "text" for e in tasks.train) == 2
    assert tasks.stats["tasks"]["text"]["capped"] == 20
    one_user = build(handmade_run, tasks=["sequential"], max_users=1)
    assert len({e.user for e in one_user.train}) == 1 and one_user.stats["users"] == 1
    limited = build(handmade_run, tasks=["sequential", "text"], task_limits={"text": 3})
    assert sum(e.task == "text" for e in limited.train) == 3
    assert sum(e.task == "sequential" for e in limited.train) == 3


def test_phrasings_vary_and_are_seeded(handmade_run: Path) -> None:
    first = build(handmade_run, tasks=["text"], phrasings=0, seed=1)
    again = build(handmade_run, tasks=["text"], phrasings=0, seed=1)
    other = build(handmade_run, tasks=["text"], phrasings=0, seed=2)
    assert [e.to_json() for e in first.train] == [e.to_json() for e in again.train]
    assert [e.phrasing for e in first.train] != [e.phrasing for e in other.train]
    assert len({e.phrasing for e in first.train}) > 1


def test_missing_inputs_skip_or_fail(tmp_path: Path) -> None:
    run = write_handmade_run(tmp_path / "run", reviews=False, text=False)
    tasks = build(run, tasks=["sequential", "text", "query", "ts_align", "history_to_title"])
    for name in ("text", "query", "ts_align", "history_to_title"):
        assert tasks.stats["tasks"][name]["status"] == "skipped"
    assert "no item text" in tasks.stats["tasks"]["text"]["reason"]
    assert "no review" in tasks.stats["tasks"]["query"]["reason"]
    with pytest.raises(InputError, match="task 'query' cannot be built"):
        build(run, tasks=["sequential", "query"], strict=True)


def test_fine_tuning_drops_and_counts_examples_longer_than_max_length(handmade_run: Path) -> None:
    from alignrec.finetune.data import encode_records
    from alignrec.llm.tiny import build_tiny_tokenizer

    codes = handmade_codes()
    tokenizer = build_tiny_tokenizer(code_tokens=codes.vocabulary())
    records = [e.to_json() for e in build(handmade_run, tasks=["sequential"]).train]
    # Word-level tokens: <s> (1) + "Below is an instruction that describes a task ." (9) + "Write a response
    # that completes the request ." (8) + "### Instruction :" (3) + "The user has interacted with items" (6)
    # + per history item "<a_i> <b_j> ," (3) + "in chronological order ." (4) + "Can you predict the next
    # possible item that the user may expect ?" (13) + "### Response :" (3) = 47 + 3 per item; the answer
    # is two code tokens + EOS: 53 tokens with one history item, 56 with two.
    assert [len(f["input_ids"]) for f in encode_records(tokenizer, records, max_length=1024).features] == [53, 53, 56]
    kept = encode_records(tokenizer, records, max_length=53)
    assert kept.dropped_too_long == 1 and len(kept) == 2


def test_codes_of_another_data_set_are_refused(handmade_run: Path) -> None:
    from alignrec.tokenizer.codes import ItemCodes

    codes = ItemCodes(np.zeros((4, 1), dtype=np.int64) + np.arange(4)[:, None], [4])
    with pytest.raises(InputError, match="cover 4 items but the data set"):
        build_tasks(load_dataset(handmade_run), codes, TasksConfig())


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown task"):
        from_mapping(TasksConfig, {"tasks": ["sequential", "bogus"]})
    with pytest.raises(ConfigError, match="negative_ratio"):
        from_mapping(TasksConfig, {"negative_ratio": -1})
    with pytest.raises(ConfigError, match="unknown key"):
        from_mapping(TasksConfig, {"max_samples": 3})


def test_cli_writes_the_folder(handmade_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "build", "--data", str(handmade_run), "--phrasings", "1",
                 "--tasks", "sequential", "text", "--negative-ratio", "0", "--sequential-format", "lcrec"]) == 0
    out = handmade_run / "tasks"
    train = read_examples(out / "train.jsonl")
    assert len(train) == 3 + 22
    assert train[0] == {"task": "sequential", "kind": "sequential", "phrasing": 0, "answer": "<a_0><b_1>", "user": 0,
                        "item": 1, "prompt": train[0]["prompt"]}
    assert len(read_examples(out / "valid.jsonl")) == 3
    stats = json.loads((out / "stats.json").read_text())
    assert stats["train_examples"] == 25
    record = json.loads((out / "config.json").read_text())
    assert record["stage"] == "tasks" and record["config"]["tasks"] == ["sequential", "text"]
    assert json.loads(capsys.readouterr().out)["train_examples"] == 25


def test_read_examples_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": 1}\n')
    with pytest.raises(InputError, match=r"train\.jsonl: line 2"):
        read_examples(path)


def test_run_build_records_the_sequence_format(handmade_run: Path) -> None:
    from alignrec.tasks.build import read_format

    out = run_build(TasksConfig(tasks=["sequential"], sequential_format="lcrec", sequential_stride=2), handmade_run)
    assert json.loads((out / "format.json").read_text()) == {"kind": "lcrec", "max_history": 20, "stride": 2}
    assert read_format(out) == SequenceFormat("lcrec", 20, 2)
    (out / "format.json").unlink()  # a folder of an older alignrec: the format is read from the records
    assert read_format(out, read_examples(out / "train.jsonl")) == SequenceFormat("lcrec", 20)


# ----------------------------------------------------------------------------- dense format


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_dense_windows_cover_every_training_target_once_and_never_leak(tmp_path: Path, stride: int) -> None:
    from alignrec.data.synthetic import write_synthetic
    from alignrec.tasks.build import TaskContext
    from alignrec.tokenizer.codes import ItemCodes

    run = tmp_path / "run"
    write_synthetic(run, num_users=30, num_items=24, groups=4, length=12, kind="clusters", seed=5)
    dataset = load_dataset(run)
    i = np.arange(24)
    codes = ItemCodes(np.stack([i // 4, i % 4], axis=1), [6, 4])
    config = TasksConfig(tasks=["sequential"], sequential_stride=stride)
    context = TaskContext(dataset, codes, config, None)
    window = dataset.max_history + 1
    covered: dict[int, list[tuple[int, ...]]] = {}
    for user, history, targets in context.dense_windows:
        assert 1 <= len(history) and len(history) + len(targets) <= window
        training = dataset.training_sequences()[user].tolist()
        whole = history + targets
        start = next(s for s in range(len(training)) if training[s : s + len(whole)] == whole)  # a contiguous slice
        for offset in range(len(targets)):
            position = start + len(history) + offset
            covered.setdefault(user, []).append((position, len(history) + offset))
    for user, training in enumerate(dataset.training_sequences()):
        positions = sorted(p for p, _ in covered.get(user, []))
        assert positions == list(range(1, len(training))), user  # every target after the first, exactly once
        for position, context_items in covered.get(user, []):
            full = min(position, dataset.max_history)
            assert context_items >= min(full, window - stride)
            if stride == 1:
                assert context_items == full  # stride 1: every target with its full available context
    # the validation and test items of a user are never in a training window
    tasks = build_tasks(dataset, codes, config)
    assert len(tasks.train) == len(context.dense_windows) > 0
    for example in tasks.train:
        decoded = [int(a) * 4 + int(b) for a, b in re.findall(r"<a_(\d+)><b_(\d+)>", example.prompt + example.answer)]
        training = dataset.training_sequences()[example.user].tolist()
        assert any(training[s : s + len(decoded)] == decoded for s in range(len(training)))  # inside the training part


def test_dense_known_answers(handmade_run: Path) -> None:
    from alignrec.llm.format import DENSE_INSTRUCTION

    tasks = build(handmade_run, tasks=["sequential", "negative"], sequential_format="dense", negative_ratio=1)
    dense = [(e.kind, e.prompt, e.answer, e.user, e.item) for e in tasks.train if e.task == "sequential"]
    # alice's training part is [0, 1], bob's [1, 2, 4]; carol has none
    assert dense == [
        ("sequential_dense", DENSE_INSTRUCTION + "<a_0><b_0>", "<a_0><b_1>", 0, 1),
        ("sequential_dense", DENSE_INSTRUCTION + "<a_0><b_1>", "<a_1><b_0><a_2><b_0>", 1, 4),
    ]
    # one negative per training target (three targets), in the negative task's own prompt
    assert sum(e.task == "negative" for e in tasks.train) == 3
    assert [(e.kind, e.prompt, e.answer) for e in tasks.valid][:1] == [
        ("sequential_dense", DENSE_INSTRUCTION + "<a_0><b_0><a_0><b_1>", "<a_1><b_0>")]


def test_dense_examples_round_trip_to_the_inference_prompt() -> None:
    """A training example's ids, cut before its answer, are the inference prompt of its history."""
    from alignrec.finetune.data import encode_records
    from alignrec.llm.format import DENSE_INSTRUCTION, SequenceFormat, encode_prompt
    from alignrec.llm.tiny import build_tiny_tokenizer
    from alignrec.llm.vocab import CodeVocabulary
    from alignrec.tokenizer.codes import ItemCodes

    codes = ItemCodes(np.array([[0, 1], [2, 1], [1, 0]]), [3, 2])
    tokenizer = build_tiny_tokenizer(words=[DENSE_INSTRUCTION], code_tokens=codes.vocabulary())
    vocabulary = CodeVocabulary.from_tokenizer(tokenizer, codes.codebook_sizes)
    a0, b1, a2, a1, b0 = tokenizer.convert_tokens_to_ids(["<a_0>", "<b_1>", "<a_2>", "<a_1>", "<b_0>"])
    sequence_format = SequenceFormat("dense", max_history=2)
    (user, history, targets), = sequence_format.windows([np.array([0, 1])])
    assert (user, history, targets) == (0, [0], [1])
    record = {"kind": sequence_format.task_kind, "prompt": sequence_format.prompt_text([codes.item_string(0)]),
              "answer": sequence_format.answer_text([codes.item_string(1)])}
    data = encode_records(tokenizer, [record], max_length=64)
    instruction = encode_prompt(tokenizer, DENSE_INSTRUCTION)
    assert data[0]["input_ids"] == instruction + [a0, b1, a2, b1]  # no EOS after the last item
    assert data[0]["labels"] == [-100] * (len(instruction) + 2) + [a2, b1]
    prompt = sequence_format.prompt_ids(tokenizer, vocabulary, codes, history)
    assert prompt == data[0]["input_ids"][: len(instruction) + 2]
    # the history cut: only the newest max_history items reach the prompt
    assert sequence_format.prompt_ids(tokenizer, vocabulary, codes, [2, 1, 0]) == instruction + [a2, b1, a0, b1]
    assert SequenceFormat("dense", max_history=3).prompt_ids(tokenizer, vocabulary, codes, [2, 1, 0]) == (
        instruction + [a1, b0, a2, b1, a0, b1])
