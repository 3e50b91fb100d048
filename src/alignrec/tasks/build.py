"""``alignrec tasks build``: instruction data for the alignment tasks (stage two).

Reads the prepared data set (``alignrec.data``) and the item codes (``alignrec.tokenizer``) and
writes ``OUT/train.jsonl`` and ``OUT/valid.jsonl``, one example a line::

    {"task": "sequential", "kind": "sequential", "phrasing": 0, "prompt": "<full rendered prompt>",
     "answer": "<a_1><b_2>", "user": 17, "item": 3}

plus ``format.json`` (the :class:`~alignrec.llm.format.SequenceFormat` of the sequential
examples, which fine-tuning records in the model), ``stats.json`` (per task: candidates, kept,
capped, skipped with the reason) and ``config.json`` (the resolved config, input hashes).
Examples are text; fine-tuning encodes them with its backbone's tokenizer and drops (and counts)
those longer than its ``max_length``.

Task families (each switchable with ``--tasks``), with their kinds and phrasings in
:data:`alignrec.llm.format.PHRASINGS`:

- ``sequential``: next-item prediction from item codes, in one of two formats
  (``sequential_format``):

  - ``dense`` (default): the short instruction :data:`~alignrec.llm.format.DENSE_INSTRUCTION`
    followed by a window of a user's training items as code tokens, the answer being the
    window's target items (the windows of :mod:`alignrec.data.windows`, at most
    ``max_history + 1`` items each, ``sequential_stride`` items apart): every training
    interaction after a user's first is a target exactly once;
  - ``lcrec``: LC-Rec's one-target prompt, one example per training prefix of the leave-one-out
    split.

  Validation and test items never appear in a training example of either format;
- ``negative``: the paper's negative behaviour task: for each training target, ``ratio``
  items the user did not interact with in the training part (validation and test targets are
  held-out labels, so they are not excluded) as answers to "unlikely" questions;
- ``text``: codes <-> title, codes <-> description (needs item text);
- ``query``: review/query text (optionally with the history) -> item (needs reviews; a review
  of the user's valid or test item is never used);
- ``ts_align``: TS-Rec's token-level alignment: one code token <-> its cluster description
  (needs ``code_descriptions.json`` from the tokenizer stage);
- ``history_to_title`` / ``titles_to_item``: LC-Rec's asymmetric tasks (history codes -> next
  title; history titles -> next codes; need item text).

``valid.jsonl`` holds the sequential task on the validation split with the inference prompt
(phrasing 0), for the evaluation loss during fine-tuning.

Every task draws from its own random stream (seed + task name), so switching one task off does
not change the samples of the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from alignrec.config import write_run_record
from alignrec.errors import InputError
from alignrec.llm import format as prompts
from alignrec.llm.format import SequenceFormat
from alignrec.utils.io import atomic_directory, atomic_write_json, iter_jsonl, read_json
from alignrec.utils.log import get_logger

log = get_logger(__name__)

TASK_FAMILIES = ("sequential", "negative", "text", "query", "ts_align", "history_to_title", "titles_to_item")


@dataclass
class TasksConfig:
    """Settings of ``alignrec tasks build``."""

    tasks: list[str] = field(
        default_factory=lambda: list(TASK_FAMILIES),
        metadata={"help": f"task families to build (any of {', '.join(TASK_FAMILIES)})"},
    )
    codes: str | None = field(default=None, metadata={"help": "item codes folder (default: RUN/tokenizer)"})
    code_descriptions: str | None = field(
        default=None, metadata={"help": "TS-Align cluster descriptions (default: CODES/code_descriptions.json)"}
    )
    sequential_format: Literal["dense", "lcrec"] = field(
        default="dense",
        metadata={"help": "sequential task: dense (instruction + a window of item codes, loss on every target item) "
                  "or lcrec (LC-Rec's one-target prompt, the papers' setting)"},
    )
    sequential_stride: int = field(
        default=0,
        metadata={"help": "dense windows: items between consecutive window ends (1 = every target with its full "
                  "context; 0 = the data set's max_history, consecutive windows share one item)"},
    )
    phrasings: int = field(
        default=0, metadata={"help": "phrasings per task kind: 0 = all, n = the first n (1 = only the canonical one)"}
    )
    max_users: int = field(default=0, metadata={"help": "users sampled for the per-user tasks (0 = all)"})
    max_samples_per_task: int = field(
        default=0,
        metadata={"help": "most examples per task family, sampled at random (0 = no cap); the negative task "
                  "follows negative_ratio x sequential instead"},
    )
    task_limits: dict[str, int] = field(
        default_factory=dict,
        metadata={"help": "per-family caps overriding max_samples_per_task (config file only), e.g. {text: 500}"},
    )
    negative_ratio: float = field(
        default=3.0,
        metadata={"help": "negative examples per sequential example (the paper's 1:3; fractions are drawn at random)"},
    )
    negative_sampler: Literal["uniform", "popularity"] = field(
        default="uniform",
        metadata={"help": "how negatives are drawn from the items the user never interacted with"},
    )
    max_text_words: int = field(
        default=64, metadata={"help": "descriptions, reviews and cluster descriptions are cut to this many words"}
    )
    max_title_words: int = field(default=24, metadata={"help": "titles are cut to this many words"})
    max_valid_samples: int = field(
        default=1000, metadata={"help": "validation examples (sequential, inference prompt) for the evaluation loss"}
    )
    strict: bool = field(
        default=False,
        metadata={"help": "fail instead of skipping an enabled task whose input (text, reviews, descriptions) is missing"},
    )
    seed: int = field(default=42, metadata={"help": "random seed (sampling of users, phrasings, negatives, caps)"})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASK_FAMILIES))
        if unknown:
            raise ValueError(f"tasks: unknown task(s) {unknown}; known: {list(TASK_FAMILIES)}")
        if not self.tasks:
            raise ValueError("tasks: enable at least one task")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks: duplicates in {self.tasks}")
        unknown_limits = sorted(set(self.task_limits) - set(TASK_FAMILIES))
        if unknown_limits:
            raise ValueError(f"task_limits: unknown task(s) {unknown_limits}; known: {list(TASK_FAMILIES)}")
        for name, value in {"max_users": self.max_users, "max_samples_per_task": self.max_samples_per_task,
                            "phrasings": self.phrasings, "max_valid_samples": self.max_valid_samples,
                            **{f"task_limits.{k}": v for k, v in self.task_limits.items()}}.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.sequential_stride < 0:
            raise ValueError(f"sequential_stride must be >= 0, got {self.sequential_stride}")
        if self.negative_ratio < 0:
            raise ValueError(f"negative_ratio must be >= 0, got {self.negative_ratio}")
        if self.max_text_words < 1 or self.max_title_words < 1:
            raise ValueError("max_text_words and max_title_words must be >= 1")

    def limit(self, task: str) -> int:
        """The cap on ``task`` (0 = none). ``negative`` follows ``negative_ratio`` x the sequential
        examples and is capped only by an explicit ``task_limits`` entry, so the ratio holds."""
        if task == "negative":
            return self.task_limits.get(task, 0)
        return self.task_limits.get(task, self.max_samples_per_task)


@dataclass
class Example:
    """One instruction example. ``prompt`` is the full rendered prompt text."""

    task: str
    kind: str
    phrasing: int
    prompt: str
    answer: str
    user: int | None = None
    item: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "kind": self.kind, "phrasing": self.phrasing, "prompt": self.prompt,
                "answer": self.answer, "user": self.user, "item": self.item}


class TaskSkipped(Exception):
    """A task cannot be built from these inputs; the message is the reason (logged, in stats)."""


# ----------------------------------------------------------------------------- text helpers


def clip_words(text: str, max_words: int) -> str:
    """``text`` with whitespace collapsed and cut to ``max_words`` words."""
    words = text.split()
    return " ".join(words[:max_words])


def stable_seed(seed: int, name: str) -> list[int]:
    """An RNG seed for one named stream (stable across runs and Python versions)."""
    digest = hashlib.sha256(name.encode()).digest()
    return [seed, int.from_bytes(digest[:4], "little")]


# ----------------------------------------------------------------------------- negatives


class NegativeSampler:
    """Draws items a user never interacted with. ``weights`` = None means uniform."""

    def __init__(self, num_items: int, weights: np.ndarray | None = None):
        self.num_items = num_items
        self.probabilities = None if weights is None else weights / weights.sum()

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.probabilities is None:
            return rng.integers(self.num_items, size=size)
        return rng.choice(self.num_items, size=size, p=self.probabilities)

    def sample(self, rng: np.random.Generator, excluded: set[int], count: int) -> list[int]:
        """Up to ``count`` distinct items not in ``excluded`` (fewer only if fewer exist)."""
        available = self.num_items - len(excluded)
        count = min(count, available)
        if count <= 0:
            return []
        chosen: list[int] = []
        seen: set[int] = set()
        # Rejection sampling is O(count) when the user saw a small share of the catalogue (the
        # usual case); the explicit complement below handles the rest.
        for _ in range(4):
            for item in self._draw(rng, 2 * count + 8).tolist():
                if item not in excluded and item not in seen:
                    seen.add(item)
                    chosen.append(item)
                    if len(chosen) == count:
                        return chosen
        complement = np.setdiff1d(np.arange(self.num_items), np.fromiter(excluded | seen, dtype=np.int64))
        rest = count - len(chosen)
        if self.probabilities is None:
            extra = rng.choice(complement, size=rest, replace=False)
        else:
            p = self.probabilities[complement]
            p = p / p.sum() if p.sum() > 0 else None
            extra = rng.choice(complement, size=rest, replace=False, p=p)
        return chosen + [int(i) for i in extra]


def _uniform_sampler(context: TaskContext) -> NegativeSampler:
    return NegativeSampler(context.dataset.num_items)


def _popularity_sampler(context: TaskContext) -> NegativeSampler:
    # +1 so that items never seen in training can still be drawn.
    return NegativeSampler(context.dataset.num_items, context.dataset.item_popularity().astype(np.float64) + 1.0)


NEGATIVE_SAMPLERS: dict[str, Callable[[TaskContext], NegativeSampler]] = {
    "uniform": _uniform_sampler,
    "popularity": _popularity_sampler,
}


# ----------------------------------------------------------------------------- context


@dataclass(frozen=True)
class TrainingRow:
    """One leave-one-out training sample: ``history`` (oldest first) -> ``target``."""

    user: int
    history: tuple[int, ...]
    target: int


class TaskContext:
    """Everything the task builders read, computed once and shared."""

    def __init__(self, dataset: Any, codes: Any, config: TasksConfig, code_descriptions: Path | None):
        if codes.num_items != dataset.num_items:
            raise InputError(
                f"item codes cover {codes.num_items} items but the data set {dataset.path} has {dataset.num_items}; "
                "were the codes made from another data set?"
            )
        self.dataset = dataset
        self.codes = codes
        self.config = config
        self.code_descriptions_path = code_descriptions
        self.format = SequenceFormat(config.sequential_format, dataset.max_history, config.sequential_stride)

    def rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng(stable_seed(self.config.seed, name))

    def phrasing(self, rng: np.random.Generator, kind: str) -> int:
        available = len(prompts.PHRASINGS[kind])
        n = min(self.config.phrasings, available) if self.config.phrasings else available
        return int(rng.integers(n))

    @cached_property
    def item_strings(self) -> list[str]:
        return [self.codes.item_string(i) for i in range(self.codes.num_items)]

    def history_text(self, history: Sequence[int]) -> str:
        return prompts.format_history([self.item_strings[i] for i in self.format.history(history)])

    @cached_property
    def titles(self) -> list[str]:
        return [clip_words(item.title, self.config.max_title_words) for item in self.dataset.items]

    @cached_property
    def descriptions(self) -> list[str]:
        return [clip_words(item.description, self.config.max_text_words) for item in self.dataset.items]

    @cached_property
    def users(self) -> np.ndarray:
        """The users the per-user tasks draw from (all, or ``max_users`` sampled), sorted."""
        users = np.arange(self.dataset.num_users)
        if self.config.max_users and self.config.max_users < len(users):
            users = np.sort(self.rng("users").choice(users, size=self.config.max_users, replace=False))
        return users

    @cached_property
    def user_items(self) -> list[set[int]]:
        """The items each user interacted with in the training part (never a negative for that user).

        The validation and test items are not excluded: they are the held-out labels, and
        training data must not depend on them.
        """
        return [set(seq.tolist()) for seq in self.dataset.training_sequences()]

    def split_rows(self, name: str) -> list[TrainingRow]:
        split = self.dataset.split(name)
        keep = np.isin(split.user_index, self.users)
        return [
            TrainingRow(int(split.user_index[r]), tuple(int(i) for i in split.history(r)), int(split.targets[r]))
            for r in np.flatnonzero(keep)
        ]

    @cached_property
    def training_rows(self) -> list[TrainingRow]:
        return self.split_rows("train")

    def sample_rows(self, name: str, rows: Sequence[Any], limit: int) -> list[Any]:
        """``rows`` or, with a cap, ``limit`` of them drawn at random (kept in their order)."""
        if not limit or len(rows) <= limit:
            return list(rows)
        chosen = np.sort(self.rng(f"{name}/cap").choice(len(rows), size=limit, replace=False))
        return [rows[i] for i in chosen]

    @cached_property
    def positive_rows(self) -> list[TrainingRow]:
        """The training targets the negative task pairs its negatives with: the lcrec sequential
        examples (after the cap), or every training row with the dense format (whose examples are
        windows, each holding several targets)."""
        if self.config.sequential_format == "dense":
            return self.training_rows
        return self.sample_rows("sequential", self.training_rows, self.config.limit("sequential"))

    @cached_property
    def dense_windows(self) -> list[tuple[int, list[int], list[int]]]:
        """The dense sequential windows (user, context, targets) of the selected users (after the cap)."""
        selected = set(self.users.tolist())
        sequences = self.dataset.training_sequences()
        windows = [w for w in self.format.windows(sequences) if w[0] in selected]
        return self.sample_rows("sequential", windows, self.config.limit("sequential"))

    def sequential_prompt(self, history: Sequence[int]) -> str:
        """The sequential prompt of the format for a history (item indices)."""
        return self.format.prompt_text([self.item_strings[i] for i in self.format.history(history)])

    def items_text(self, items: Sequence[int]) -> str:
        """Target items as the answer of a sequential example."""
        return self.format.answer_text([self.item_strings[i] for i in items])

    def require_text(self) -> None:
        if not any(self.titles):
            raise TaskSkipped("the data set has no item text (titles/descriptions); behaviour-only data")


# ----------------------------------------------------------------------------- builders

Builder = Callable[[TaskContext, np.random.Generator, Counter], Iterator[Example]]


def build_sequential(context: TaskContext, rng: np.random.Generator, notes: Counter) -> Iterator[Example]:
    if context.format.kind == "dense":
        for user, history, targets in context.dense_windows:
            yield Example("sequential", context.format.task_kind, 0, context.sequential_prompt(history),
                          context.items_text(targets), user, targets[-1])
        return
    for row in context.positive_rows:
        p = context.phrasing(rng, "sequential")
        prompt = prompts.phrase("sequential", p, history=context.history_text(row.history))
        yield Example("sequential", "sequential", p, prompt, context.item_strings[row.target], row.user, row.target)


def build_negative(context: TaskContext, rng: np.random.Generator, notes: Counter) -> Iterator[Example]:
    ratio = context.config.negative_ratio
    if ratio <= 0:
        raise TaskSkipped("negative_ratio is 0")
    sampler = NEGATIVE_SAMPLERS[context.config.negative_sampler](context)
    whole, fraction = int(ratio), ratio - int(ratio)
    for row in context.positive_rows:
        count = whole + int(fraction > 0 and rng.random() < fraction)
        negatives = sampler.sample(rng, context.user_items[row.user], count)
        if len(negatives) < count:
            notes["users_with_too_few_non_interacted_items"] += 1
        history = context.history_text(row.history)
        for item in negatives:
            p = context.phrasing(rng, "negative")
            yield Example("negative", "negative", p, prompts.phrase("negative", p, history=history),
                          context.item_strings[item], row.user, item)


def build_text(context: TaskContext, rng: np.random.Generator, notes: Counter) -> Iterator[Example]:
    context.require_text()
    title_count = Counter(t.lower() for t in context.titles if t)
    description_count = Counter(d.lower() for d in context.descriptions if d)
    for item in range(context.dataset.num_items):
        title, description, code = context.titles[item], context.descriptions[item], context.item_strings[item]
        if not title and not description:
            notes["items_without_text"] += 1
            continue
        if title:
            p = context.phrasing(rng, "item_to_title")
            yield Example("text", "item_to_title", p, prompts.phrase("item_to_title", p, item=code), title, None, item)
            if title_count[title.lower()] == 1:
                p = context.phrasing(rng, "title_to_item")
                yield Example("text", "title_to_item", p, prompts.phrase("title_to_item", p, title=title), code, None, item)
            else:
                notes["title_to_item_skipped_shared_title"] += 1  # the answer would be ambiguous
        if description:
            p = context.phrasing(rng, "item_to_description")
            yield Example("text", "item_to_description", p, prompts.phrase("item_to_description", p, item=code),
                          description, None, item)
            if description_count[description.lower()] == 1:
                p = context.phrasing(rng, "description_to_item")
                yield Example("text", "description_to_item", p,
                              prompts.phrase("description_to_item", p, description=description),
                              code, None, item)
            else:
                notes["description_to_item_skipped_shared_description"] += 1


def build_query(context: TaskContext, rng: np.random.Generator, notes: Counter) -> Iterator[Example]:
    table = context.dataset.reviews()
    if table is None or table.num_rows == 0:
        raise TaskSkipped("the data set has no review/query text (no dataset/reviews.parquet)")
    users = table.column("user_index").to_numpy()
    items = table.column("item_index").to_numpy()
    texts = table.column("text").to_pylist()
    selected = set(context.users.tolist())
    for user, item, text in zip(users.tolist(), items.tolist(), texts):
        if user not in selected:
            continue
        sequence = context.dataset.sequences[user].tolist()
        if item in sequence[-2:]:
            notes["reviews_of_valid_or_test_items_skipped"] += 1  # would leak the held-out target
            continue
        query = clip_words(text, context.config.max_text_words)
        if not query:
            notes["empty_reviews"] += 1
            continue
        position = sequence.index(item) if item in sequence else 0
        history = context.format.history(sequence[:position])
        if history and rng.random() < 0.5:
            p = context.phrasing(rng, "history_query_to_item")
            prompt = prompts.phrase("history_query_to_item", p, history=context.history_text(history), query=query)
            yield Example("query", "history_query_to_item", p, prompt, context.item_strings[item], user, item)
        else:
            p = context.phrasing(rng, "query_to_item")
            yield Example("query", "query_to_item", p, prompts.phrase("query_to_item", p, query=query),
                          context.item_strings[item], user, item)


def build_ts_align(context: TaskContext, rng: np.random.Generator, notes: Counter) -> Iterator[Example]:
    path = context.code_descriptions_path
    if path is None or not path.is_file():
        raise TaskSkipped(f"no cluster descriptions ({path}); the tokenizer stage writes code_descriptions.json")
    from alignrec.tokenizer.codes import ItemCodes
    from alignrec.tokenizer.keywords import read_code_descriptions

    descriptions = read_code_descriptions(path, context.codes.vocabulary())
    cleaned = {t: clip_words(e.get("description", ""), context.config.max_text_words) for t, e in descriptions.items()}
    shared = Counter((ItemCodes.parse(t)[0][0], d.lower()) for t, d in cleaned.items() if d)
    for token, entry in descriptions.items():
        description = cleaned[token]
        if not description:
            notes["tokens_without_description"] += 1
            continue
        level = ItemCodes.parse(token)[0][0]
        count = int(entry.get("items", 0))
        p = context.phrasing(rng, "token_to_description")
        prompt = prompts.phrase("token_to_description", p, token=token, level=level + 1, count=count)
        yield Example("ts_align", "token_to_description", p, prompt, description)
        if shared[(level, description.lower())] == 1:
            p = context.phrasing(rng, "description_to_token")
            prompt = prompts.phrase("description_to_token", p, description=description, level=level + 1)
            yield Example("ts_align", "description_to_token", p, prompt, token)
        else:
            notes["description_to_token_skipped_shared_description"] += 1


def build_history_to_title(context: TaskContext, rng: np.random.Generator, notes: Counter) -> Iterator[Example]:
    context.require_text()
    rows = context.sample_rows("history_to_title", context.training_rows, context.config.limit("history_to_title"))
    for row in rows:
        title = context.titles[row.target]
        if not title:
            notes["targets_without_title"] += 1
            continue
        p = context.phrasing(rng, "history_to_title")
        prompt = prompts.phrase("history_to_title", p, history=context.history_text(row.history))
        yield Example("history_to_title", "history_to_title", p, prompt, title, row.user, row.target)


def build_titles_to_item(context: TaskContext, rng: np.random.Generator, notes: Counter) -> Iterator[Example]:
    context.require_text()
    rows = context.sample_rows("titles_to_item", context.training_rows, context.config.limit("titles_to_item"))
    for row in rows:
        titles = [context.titles[i] for i in row.history]
        if not all(titles):
            notes["histories_with_untitled_items"] += 1
            continue
        p = context.phrasing(rng, "titles_to_item")
        prompt = prompts.phrase("titles_to_item", p, titles=prompts.format_titles(titles))
        yield Example("titles_to_item", "titles_to_item", p, prompt, context.item_strings[row.target], row.user, row.target)


TASK_BUILDERS: dict[str, Builder] = {
    "sequential": build_sequential,
    "negative": build_negative,
    "text": build_text,
    "query": build_query,
    "ts_align": build_ts_align,
    "history_to_title": build_history_to_title,
    "titles_to_item": build_titles_to_item,
}
assert set(TASK_BUILDERS) == set(TASK_FAMILIES)

# Families whose cap is applied inside the builder (they sample rows before building).
_CAPPED_INSIDE = {"sequential", "history_to_title", "titles_to_item"}


def build_valid(context: TaskContext) -> list[Example]:
    """The sequential task on the validation split, with the inference prompt of the format."""
    rows = context.sample_rows("valid", context.split_rows("valid"), context.config.max_valid_samples)
    return [Example("sequential", context.format.task_kind, 0, context.sequential_prompt(row.history),
                    context.items_text([row.target]), row.user, row.target) for row in rows]


# ----------------------------------------------------------------------------- driver


@dataclass
class TaskSet:
    """What :func:`build_tasks` produced."""

    train: list[Example]
    valid: list[Example]
    stats: dict[str, Any]
    format: SequenceFormat


def build_tasks(dataset: Any, codes: Any, config: TasksConfig, code_descriptions: Path | None = None) -> TaskSet:
    """Build every enabled task. Examples are text: fine-tuning encodes them for its backbone and
    drops (and counts) those longer than its ``max_length``."""
    started = time.perf_counter()
    context = TaskContext(dataset, codes, config, code_descriptions)
    train: list[Example] = []
    task_stats: dict[str, Any] = {}
    for name in TASK_FAMILIES:
        if name not in config.tasks:
            task_stats[name] = {"status": "disabled"}
            continue
        notes: Counter[str] = Counter()
        try:
            examples = list(TASK_BUILDERS[name](context, context.rng(name), notes))
        except TaskSkipped as reason:
            if config.strict:
                raise InputError(f"task {name!r} cannot be built: {reason}") from None
            log.warning("task %s skipped: %s", name, reason)
            task_stats[name] = {"status": "skipped", "reason": str(reason)}
            continue
        candidates = len(examples)
        if name in _CAPPED_INSIDE:
            notes["training_rows_before_cap"] = len(context.training_rows)
        else:
            examples = context.sample_rows(name, examples, config.limit(name))
        kinds = Counter(e.kind for e in examples)
        phrasing_counts: dict[str, dict[str, int]] = {}
        for e in examples:
            counts = phrasing_counts.setdefault(e.kind, {})
            counts[str(e.phrasing)] = counts.get(str(e.phrasing), 0) + 1
        task_stats[name] = {
            "status": "built",
            "candidates": candidates,
            "capped": candidates - len(examples),
            "examples": len(examples),
            "kinds": dict(sorted(kinds.items())),
            "phrasings": {k: dict(sorted(v.items())) for k, v in sorted(phrasing_counts.items())},
            **({"notes": dict(sorted(notes.items()))} if notes else {}),
        }
        log.info("task %s: %d examples (%d candidates)", name, len(examples), candidates)
        train.extend(examples)
    if not train:
        raise InputError(f"no training examples were built (tasks: {task_stats})")

    valid = build_valid(context)

    stats: dict[str, Any] = {
        "train_examples": len(train),
        "valid_examples": len(valid),
        "users": int(len(context.users)),
        "items": int(dataset.num_items),
        "tasks": task_stats,
        "format": context.format.to_dict(),
    }
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return TaskSet(train, valid, stats, context.format)


def write_jsonl(path: Path, examples: Sequence[Example]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")


def read_examples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a tasks ``*.jsonl`` file; malformed lines raise InputError naming file and line."""
    path = Path(path)
    examples = []
    for number, record in iter_jsonl(path, missing="not found (run `alignrec tasks build` first)"):
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not isinstance(record.get("answer"), str):
            raise InputError(f"{path}: line {number}: expected an object with string 'prompt' and 'answer'")
        examples.append(record)
    return examples


def default_paths(run_dir: Path, config: TasksConfig) -> tuple[Path, Path]:
    """(codes folder, code descriptions file) with the defaults filled in."""
    codes_dir = Path(config.codes) if config.codes else run_dir / "tokenizer"
    descriptions = Path(config.code_descriptions) if config.code_descriptions else codes_dir / "code_descriptions.json"
    return codes_dir, descriptions


FORMAT_FILE = "format.json"  # in the tasks folder: the SequenceFormat of its sequential examples


def read_format(tasks_dir: Path, records: Sequence[dict[str, Any]] = ()) -> SequenceFormat:
    """The sequence format of a tasks folder (``format.json``). Folders written before it existed
    hold none: their format is read from the records' kinds, with the default history cut."""
    path = Path(tasks_dir) / FORMAT_FILE
    if path.is_file():
        try:
            return SequenceFormat.from_mapping(read_json(path))
        except (TypeError, ValueError) as error:
            raise InputError(f"{path}: not a sequence format ({error})") from None
    kind = "dense" if any(not prompts.answer_has_eos(r.get("kind")) for r in records) else "lcrec"
    log.warning("%s: no %s (tasks built by an older alignrec); reading the format as %s", tasks_dir, FORMAT_FILE, kind)
    return SequenceFormat(kind)


def run_build(config: TasksConfig, run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None) -> Path:
    """``alignrec tasks build``: read RUN's data set and codes, write OUT (default RUN/tasks)."""
    from alignrec.data import load_dataset
    from alignrec.tokenizer.codes import ItemCodes

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "tasks"
    dataset = load_dataset(run_dir)
    codes_dir, descriptions = default_paths(run_dir, config)
    codes = ItemCodes.load(codes_dir)
    task_set = build_tasks(dataset, codes, config, descriptions)
    inputs = {"dataset": dataset.path, "codes": codes_dir / "item_codes.parquet"}
    if descriptions.is_file():
        inputs["code_descriptions"] = descriptions
    with atomic_directory(out) as tmp:
        write_jsonl(tmp / "train.jsonl", task_set.train)
        write_jsonl(tmp / "valid.jsonl", task_set.valid)
        atomic_write_json(tmp / FORMAT_FILE, task_set.format.to_dict())
        atomic_write_json(tmp / "stats.json", task_set.stats)
        write_run_record(tmp, config, stage="tasks", seed=config.seed, inputs=inputs)
    log.info("wrote %d training and %d validation examples to %s", len(task_set.train), len(task_set.valid), out)
    return out


__all__ = [
    "TASK_FAMILIES", "TASK_BUILDERS", "NEGATIVE_SAMPLERS", "TasksConfig", "Example", "TaskSet", "TaskSkipped",
    "NegativeSampler", "build_tasks", "run_build", "read_examples",
]
