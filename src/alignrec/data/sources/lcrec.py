"""LC-Rec json: ``<name>.inter.json`` ({user: [item, ...]} in chronological order) and an
optional ``<name>.item.json`` ({item: {"title", "description", "brand", "categories"}}).

A key repeated in either file is an error naming its line: a JSON reader keeps only the last
value, which would drop the first user's interactions (or item's text) without a word.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alignrec.data.dataset import InteractionLogBuilder, ItemRecord, RawDataset
from alignrec.data.sources.common import (
    categories_of,
    check_id,
    check_text,
    clean_text,
    fail,
    field_text,
    parse_listish,
    require_file,
)
from alignrec.utils.io import read_json

if TYPE_CHECKING:
    from alignrec.data.prepare import PrepareConfig


def read_item_table(path: Any, records: Any) -> dict[str, ItemRecord]:
    """Item json shared by LC-Rec and MiniOneRec: {item id: {title, description, brand, categories}}."""
    if not isinstance(records, dict):
        fail(path, "top level", "an object mapping item id -> attributes", type(records).__name__)
    items: dict[str, ItemRecord] = {}
    for item_id, attributes in records.items():
        if not isinstance(attributes, dict):
            fail(path, f"item {item_id!r}", "an object with title/description/brand/categories", attributes)
        where = f"item {str(item_id)[:40]!r}"
        check_id(str(item_id), path, where, "item id")
        description = check_text(_description(attributes.get("description")), path, f"{where}, field description")
        items[str(item_id)] = ItemRecord(
            title=clean_text(field_text(attributes, "title", path, where)),
            description=clean_text(description),
            brand=clean_text(field_text(attributes, "brand", path, where)),
            categories=categories_of(field_text(attributes, "categories", path, where)),
        )
    return items


def _description(value: Any) -> Any:
    """Descriptions are sometimes stored as the string of a Python list of paragraphs."""
    return parse_listish(value) if isinstance(value, str) and value.strip().startswith("[") else value


def read(config: PrepareConfig) -> tuple[RawDataset, dict[str, str]]:
    inter_path = require_file(config.inter, "--inter", "the LC-Rec *.inter.json file")
    data = read_json(inter_path, unique_keys=True)
    if not isinstance(data, dict):
        fail(inter_path, "top level", "an object mapping user id -> list of item ids", type(data).__name__)
    events = InteractionLogBuilder()
    for user, items in data.items():
        if not isinstance(items, list):
            fail(inter_path, f"user {user!r}", "a list of item ids", items)
        check_id(user, inter_path, f"user {user[:40]!r}", "user id")
        events.user(user)  # a user with an empty list is still a user (dropped as too short)
        for position, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                fail(inter_path, f"user {user!r}, position {position}", "an item id (integer or string)", item)
            item_id = str(item)
            check_id(item_id, inter_path, f"user {user!r}, position {position}", "item id")
            events.add(user, item_id)
    del data
    inputs = {"inter": str(inter_path)}
    items_table = None
    if config.items:
        item_path = require_file(config.items, "--items", "the LC-Rec *.item.json file")
        items_table = read_item_table(item_path, read_json(item_path, unique_keys=True))
        inputs["items"] = str(item_path)
    source = {"format": "lcrec", "inter": str(inter_path), "items": config.items}
    return RawDataset(interactions=events.build(), items=items_table, source=source), inputs
