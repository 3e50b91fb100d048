"""The items registry: append-only JSON Lines, version-1 files read and migrated, records checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignrec.errors import InputError
from alignrec.serve import items as items_module
from alignrec.serve.items import ItemRegistry, NewItem, catalogue_version
from alignrec.tokenizer.codes import ItemCodes

SIZES = [64, 64, 64]
BASE = ItemCodes(np.array([[0, 0, 0], [1, 0, 0]]), SIZES, ["base-0", "base-1"])


def record(n: int, codes: list[int] | None = None) -> dict:
    """The registry record of the n-th test item (codes unique per n, none of the base's)."""
    return {
        "item_id": f"new-{n}", "title": f"Item {n}", "description": "", "brand": "", "categories": [],
        "codes": codes if codes is not None else [2, n // 64, n % 64],
        "created": 1.0,
    }


def write_version_1(path: Path, records: list[dict]) -> None:
    """A registry as the server wrote it before version 2: one indented JSON document."""
    path.write_text(json.dumps({"format": "alignrec-items-registry", "version": 1, "codebook_sizes": SIZES, "items": records}, indent=2))


def write_version_2(path: Path, records: list[dict]) -> None:
    header = json.dumps({"format": "alignrec-items-registry", "version": 2, "codebook_sizes": SIZES})
    path.write_text("\n".join([header, *map(json.dumps, records)]) + "\n")


class Sequential:
    """A cold start handing out the next free code sequence."""

    def assign(self, items, existing: ItemCodes) -> np.ndarray:
        taken = {tuple(row) for row in existing.codes.tolist()}
        flat = 0
        out = []
        for _ in items:
            while tuple(np.unravel_index(flat, SIZES)) in taken:
                flat += 1
            out.append(np.unravel_index(flat, SIZES))
            taken.add(tuple(out[-1]))
        return np.asarray(out, dtype=np.int64)


def test_version_1_files_are_read_then_migrated_by_the_next_registration(tmp_path):
    path = tmp_path / "registry.json"
    write_version_1(path, [record(0), record(1)])
    registry = ItemRegistry(path, BASE)
    assert [item.item_id for item in registry.items()] == ["new-0", "new-1"]
    before, _ = registry.extended_codes()
    registry.register(NewItem("new-2", "Item 2"), Sequential())
    header, *lines = path.read_text().splitlines()
    assert json.loads(header) == {"format": "alignrec-items-registry", "version": 2, "codebook_sizes": SIZES}
    assert [json.loads(line)["item_id"] for line in lines] == ["new-0", "new-1", "new-2"]
    after, _ = ItemRegistry(path, BASE).extended_codes()  # a fresh reader (another process) agrees
    assert np.array_equal(after.codes[:4], before.codes) and after.item_ids == ["base-0", "base-1", "new-0", "new-1", "new-2"]
    assert catalogue_version(after) == catalogue_version(registry.extended_codes()[0])


def test_a_registration_appends_one_line_and_reads_only_new_ones(tmp_path, monkeypatch):
    """At 2,000 registered items a registration neither rewrites the file nor re-reads it: the
    bytes before stay, the inode stays, and only the new line is parsed."""
    path = tmp_path / "registry.json"
    write_version_2(path, [record(n) for n in range(2000)])
    registry = ItemRegistry(path, BASE)
    assert len(registry.items()) == 2000
    before, inode = path.read_bytes(), path.stat().st_ino
    built = []

    class CountedItem(items_module.RegisteredItem):
        def __init__(self, **fields):
            built.append(fields["item_id"])
            super().__init__(**fields)

    monkeypatch.setattr(items_module, "RegisteredItem", CountedItem)
    registry.register(NewItem("fresh", "Fresh item"), Sequential())
    assert path.stat().st_ino == inode and path.read_bytes().startswith(before)
    assert json.loads(path.read_bytes()[len(before):])["item_id"] == "fresh"
    assert built == ["fresh", "fresh"]  # the record written, and the line read back: nothing else
    assert [item.item_id for item in registry.items()][-2:] == ["new-1999", "fresh"]


def test_two_writers_see_each_others_items(tmp_path):
    """Two registries on one file (two server processes): each catches up before it appends."""
    path = tmp_path / "registry.json"
    first, second = ItemRegistry(path, BASE), ItemRegistry(path, BASE)
    a = first.register(NewItem("a", "A"), Sequential())
    b = second.register(NewItem("b", "B"), Sequential())
    assert a.codes != b.codes
    with pytest.raises(items_module.RegistrationError, match="already exists"):
        first.register(NewItem("b", "B again"), Sequential())
    assert [item.item_id for item in first.items()] == [item.item_id for item in second.items()] == ["a", "b"]


def test_an_incomplete_last_line_waits_and_is_replaced_by_the_next_write(tmp_path):
    """A writer killed midway leaves part of a line: readers skip it, the next append drops it."""
    path = tmp_path / "registry.json"
    write_version_2(path, [record(0)])
    with open(path, "a") as handle:
        handle.write('{"item_id": "torn", "tit')
    registry = ItemRegistry(path, BASE)
    assert [item.item_id for item in registry.items()] == ["new-0"]
    registry.register(NewItem("whole", "Whole"), Sequential())
    assert [item.item_id for item in ItemRegistry(path, BASE).items()] == ["new-0", "whole"]
    assert "torn" not in path.read_text()


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([record(0, [999, 1, 2])], r"\('new-0'\) has codes \[999, 1, 2\] outside the codebooks"),
        ([record(0, [1, 2])], "expected a list of 3"),
        ([record(0, [1, 0, 0])], "has the codes .* of another item"),  # base-1's
        ([record(0), {**record(1), "codes": record(0)["codes"]}], "of another item"),
        ([record(0), {**record(1), "item_id": "new-0"}], "not new"),
        ([{**record(0), "item_id": "base-1"}], "not new"),
        ([{**record(0), "codes": [1, True, 2]}], "outside the codebooks"),
        ([{"item_id": "x"}], "malformed item record"),
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_damaged_registries_are_an_error_naming_the_file(tmp_path, records, message, version):
    path = tmp_path / "registry.json"
    (write_version_1 if version == 1 else write_version_2)(path, records)
    with pytest.raises(InputError, match=message) as caught:
        ItemRegistry(path, BASE).items()
    assert str(path) in str(caught.value)


def test_a_line_that_is_not_json_names_its_line(tmp_path):
    path = tmp_path / "registry.json"
    write_version_2(path, [record(0)])
    with open(path, "a") as handle:
        handle.write("{not json}\n")
    with pytest.raises(InputError, match=f"{path}: line 3: not JSON"):
        ItemRegistry(path, BASE).items()
