"""``alignrec evaluate-predictions``: score a file of ranked item lists against a split.

Predictions are JSON lines, one user per line::

    {"user_id": "42", "items": ["item_a", "item_b", ...]}

``user_id`` and the item ids are the *source* ids (as in ``items.parquet``/``users.parquet``).
Every user of the split is scored; a user with no line counts as a miss and is reported.
Unknown items, duplicates, unknown users and users listed twice are counted, never dropped
silently (an unknown item still occupies its position in the list).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.data.dataset import PreparedDataset
from alignrec.errors import InputError
from alignrec.metrics.metrics import DEFAULT_KS, evaluate_rankings


def read_predictions(path: str | Path, dataset: PreparedDataset) -> tuple[dict[int, list[int]], dict[str, int]]:
    """Parse a predictions file into {user index: [item index]}.

    Unknown item ids become distinct negative numbers (-1, -2, ... per distinct id) so that they
    keep their positions, count as unknown and are not mistaken for duplicates of each other.
    """
    path = Path(path)
    rankings: dict[int, list[int]] = {}
    counts = {"unknown_users": 0, "repeated_users": 0}
    item_index_of = dataset.item_index_of
    user_index_of = dataset.user_index_of
    unknown_ids: dict[str, int] = {}
    if not path.is_file():
        raise InputError(f"{path}: predictions file not found")
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}: line {line_number}, column {error.pos + 1}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict) or "user_id" not in record or "items" not in record:
                raise InputError(f'{path}: line {line_number}: expected an object {{"user_id": ..., "items": [...]}}')
            user_id, items = record["user_id"], record["items"]
            if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
                raise InputError(f"{path}: line {line_number}, field user_id: expected a string or integer, got {user_id!r}")
            if not isinstance(items, list):
                raise InputError(f"{path}: line {line_number}, field items: expected a list of item ids, got {items!r:.80}")
            for position, item in enumerate(items):
                if isinstance(item, bool) or not isinstance(item, (str, int)):
                    raise InputError(
                        f"{path}: line {line_number}, field items[{position}]: expected an item id (string or "
                        f"integer), got {item!r:.80}"
                    )
            user = user_index_of.get(str(user_id))
            if user is None:
                counts["unknown_users"] += 1
                continue
            if user in rankings:
                counts["repeated_users"] += 1
                continue  # the first list given for a user is the one scored
            ranking = []
            for item in items:
                index = item_index_of.get(str(item))
                if index is None:
                    index = unknown_ids.setdefault(str(item), -1 - len(unknown_ids))
                ranking.append(index)
            rankings[user] = ranking
    return rankings, counts


def evaluate_predictions_file(
    path: str | Path, dataset: PreparedDataset, split: str = "test", ks: Sequence[int] = DEFAULT_KS
) -> dict[str, Any]:
    """Score a predictions file against split ``split`` ("valid" or "test") of ``dataset``.

    Returns ``{"metrics", "users", "counts", "split", "predictions", "ks", "mean_list_length"}``;
    ``counts`` holds duplicate/unknown items (occurrences), short and empty lists, unknown and
    repeated users, users without predictions and predicted users outside the split.
    """
    if split not in ("valid", "test"):
        raise InputError(f"split must be 'valid' or 'test', got {split!r}")
    if not ks or any(int(k) < 1 for k in ks):
        raise InputError(f"cut-offs K must be integers >= 1, got {list(ks)}")
    rankings, counts = read_predictions(path, dataset)
    data = dataset.split(split)
    lists = [rankings.get(int(user), []) for user in data.user_index]
    result = evaluate_rankings(lists, data.targets, dataset.num_items, ks)
    missing = sum(1 for user in data.user_index if int(user) not in rankings)
    extra = len(set(rankings) - {int(u) for u in data.user_index})
    report = result.to_dict()
    report["counts"].update(counts)
    report["counts"]["users_without_predictions"] = missing
    report["counts"]["predicted_users_not_in_split"] = extra
    report["split"] = split
    report["ks"] = list(ks)
    report["predictions"] = str(path)
    report["mean_list_length"] = float(np.mean([len(r) for r in lists])) if lists else 0.0
    return report
