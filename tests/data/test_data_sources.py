"""One test per source format, each on a small fixture written here, with exact expected output."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignrec.data import load_dataset
from alignrec.data.dataset import PreparedDataset
from alignrec.data.prepare import PrepareConfig, prepare


def prepared(tmp_path: Path, **settings: object) -> PreparedDataset:
    out = tmp_path / "run"
    prepare(PrepareConfig(**settings), out)  # type: ignore[arg-type]
    return load_dataset(out)


def sequences_by_user(data: PreparedDataset) -> dict[str, list[str]]:
    """user id -> item ids in order (independent of the dense indexing)."""
    return {user: [data.item_ids[i] for i in seq] for user, seq in zip(data.user_ids, data.sequences, strict=True)}


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_lines(path: Path, lines: list[str], compress: bool = False) -> Path:
    text = "\n".join(lines) + "\n"
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- LC-Rec json


def test_lcrec_without_item_table(tmp_path: Path) -> None:
    inter = write_json(tmp_path / "Toy.inter.json", {"0": [0, 1, 2, 3], "1": [2, 3, 4], "2": [1, 4]})
    data = prepared(tmp_path, format="lcrec", inter=str(inter))
    assert data.item_ids == ["0", "1", "2", "3", "4"]  # numeric ids keep their LC-Rec order
    assert data.user_ids == ["0", "1"]
    assert sequences_by_user(data) == {"0": ["0", "1", "2", "3"], "1": ["2", "3", "4"]}
    assert data.stats["users"] == 2 and data.stats["items"] == 5 and data.stats["interactions"] == 7
    assert data.stats["avg_seq_len"] == 3.5
    # user "2" has 2 items: too short for train + valid + test; no item table -> no unknown-item check
    assert data.stats["dropped"] == {"interactions_of_short_users": 2, "users_too_short": 1}
    assert not data.has_text
    assert data.users_table.column("timestamps").to_pylist() == [None, None]


def test_lcrec_with_item_table(tmp_path: Path) -> None:
    inter = write_json(tmp_path / "Toy.inter.json", {"10": [0, 1, 7, 2], "11": [2, 1, 0]})
    items = write_json(
        tmp_path / "Toy.item.json",
        {
            "0": {"title": "Red &amp; Blue <b>Guitar</b>", "description": "['Solid body.', 'Six strings.']",
                  "brand": "Acme", "categories": "Instruments,Guitars"},
            "1": {"title": "Strings", "description": "Nickel", "brand": "", "categories": ["Instruments", "Strings"]},
            "2": {"title": "Pick", "description": "", "brand": "Acme", "categories": ""},
            "9": {"title": "Never bought", "description": "", "brand": "", "categories": ""},
        },
    )
    data = prepared(tmp_path, format="lcrec", inter=str(inter), items=str(items))
    assert sequences_by_user(data) == {"10": ["0", "1", "2"], "11": ["2", "1", "0"]}
    assert data.stats["dropped"] == {
        "catalogue_items_without_interactions": 1,  # item 9
        "interactions_of_short_users": 0,
        "unknown_item_interactions": 1,  # item 7 of user 10
        "users_too_short": 0,
    }
    first = data.items[0]
    assert first.title == "Red & Blue Guitar"
    assert first.description == "Solid body. Six strings."
    assert first.brand == "Acme"
    assert first.categories == ["Instruments", "Guitars"]
    assert data.items[1].categories == ["Instruments", "Strings"]
    assert first.text() == "Red & Blue Guitar Solid body. Six strings."
    assert data.has_text and data.stats["items_with_title"] == 3


# ----------------------------------------------------------------------------- MiniOneRec


def write_minionerec_csv(path: Path, rows: list[tuple[str, list[int], int]]) -> None:
    columns = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id", "history_item_sid", "item_sid"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for user, history, target in rows:
            titles = [f"t{i}" for i in history]
            writer.writerow([user, str(titles), f"t{target}", str(history), target, "['<a_1><b_2>']", "<a_3><b_4>"])


def test_minionerec_rebuilds_longest_chain_later_row_wins(tmp_path: Path) -> None:
    folder = tmp_path / "mini"
    folder.mkdir()
    write_json(folder / "item.json", {str(i): {"title": f"Item {i}", "description": "", "brand": "", "categories": ""}
                                       for i in range(1, 10)})
    write_minionerec_csv(folder / "valid.csv", [("A", [1], 2), ("A", [1, 2], 3), ("B", [5, 6], 7), ("C", [1], 2)])
    # B's test row has the same chain length (history cut to 2) -> the later row wins: 6, 7, 8
    write_minionerec_csv(folder / "test.csv", [("A", [1, 2, 3], 4), ("B", [6, 7], 8)])
    data = prepared(tmp_path, format="minionerec", dir=str(folder))
    assert sequences_by_user(data) == {"A": ["1", "2", "3", "4"], "B": ["6", "7", "8"]}
    assert data.stats["dropped"]["users_too_short"] == 1  # C: chain of 2
    assert data.stats["source"]["rows"] == 6
    assert data.items[data.item_index_of["4"]].title == "Item 4"


# ----------------------------------------------------------------------------- raw Amazon


def test_amazon_2014_gz_with_python_literal_meta(tmp_path: Path) -> None:
    def review(user: str, asin: str, time: int) -> str:
        return json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": time, "summary": f"{asin} summary",
                           "reviewText": f"{user} liked {asin}", "overall": 5.0, "reviewTime": "01 1, 2014"})

    reviews = write_lines(
        tmp_path / "reviews_Toys_5.json.gz",
        [review("u1", "B", 1), review("u1", "A", 3), review("u1", "E", 2),
         review("u2", "A", 10), review("u2", "B", 20), review("u2", "B", 20), review("u2", "E", 30),
         review("u3", "C", 5), review("u3", "A", 6), review("u3", "B", 7)],
        compress=True,
    )
    meta = write_lines(
        tmp_path / "meta_Toys.json.gz",
        [
            "{'asin': 'A', 'title': 'Toy &amp; Co <b>Car</b>', 'price': 3.17, 'salesRank': {'Toys & Games': 211836}, "
            "'categories': [['Toys & Games', 'Puzzles'], ['Toys & Games']], 'description': 'A red car.', 'brand': 'Acme'}",
            "{'asin': 'B', 'title': 'Ball', 'categories': [['Toys & Games']], 'description': 'Round.'}",
            "{'asin': 'C', 'categories': [['Toys & Games']]}",  # no title -> dropped
            "{'asin': 'E', 'title': 'Game', 'categories': [['Arts, Crafts & Sewing']]}",
        ],
        compress=True,
    )
    data = prepared(tmp_path, format="amazon18", inter=str(reviews), items=str(meta), kcore=0)
    # ordered by time; C has no title so u3 keeps A, B only and is too short
    assert sequences_by_user(data) == {"u1": ["B", "E", "A"], "u2": ["A", "B", "E"]}
    assert data.stats["dropped"] == {
        "catalogue_items_without_interactions": 0,
        "duplicate_meta_records": 0,
        "duplicate_reviews": 1,
        "interactions_of_short_users": 2,
        "items_without_title": 1,
        "reviews_of_dropped_users_or_items": 3,
        "unknown_item_interactions": 1,
        "users_too_short": 1,
    }
    car = data.items[data.item_index_of["A"]]
    assert (car.title, car.description, car.brand, car.categories) == (
        "Toy & Co Car", "A red car.", "Acme", ["Toys & Games", "Puzzles"])
    assert data.items[data.item_index_of["E"]].categories == ["Arts, Crafts & Sewing"]
    assert data.users_table.column("timestamps").to_pylist()[0] == [1.0, 2.0, 3.0]
    reviews_table = data.reviews()
    assert reviews_table is not None and reviews_table.num_rows == 6
    first = reviews_table.to_pylist()[0]
    assert data.user_ids[first["user_index"]] == "u1" and data.item_ids[first["item_index"]] == "B"
    assert first["text"] == "B summary u1 liked B"


def amazon_2018_fixture(folder: Path, compress: bool) -> None:
    """Six users who each review I0..I4 (a 5-core), U0 also I5 (once: not 5-core), and X with
    only four items (not 5-core)."""
    suffix = ".json.gz" if compress else ".json"
    lines = []
    for u in range(6):
        order = [(j + u) % 5 for j in range(5)]
        for step, item in enumerate(order):
            lines.append(json.dumps({"overall": 4.0, "verified": True, "reviewerID": f"U{u}", "asin": f"I{item}",
                                     "unixReviewTime": 1000 * u + step, "reviewText": "ok", "summary": "fine",
                                     "style": {"Format:": " Hardcover"}, "vote": "2"}))
    lines.append(json.dumps({"reviewerID": "U0", "asin": "I5", "unixReviewTime": 99, "reviewText": "meh"}))
    lines += [json.dumps({"reviewerID": "X", "asin": f"I{i}", "unixReviewTime": i}) for i in range(4)]
    write_lines(folder / f"Toys_5{suffix}", lines, compress)
    meta = []
    for i in range(6):
        title = '<span class="a-size-medium">Race &amp; Car</span>' if i == 0 else f"Item {i}"
        meta.append(json.dumps({"category": ["Toys &amp; Games", "Cars"], "description": ["Fast.", "<p>Red</p>"],
                                "title": title, "brand": "Acme", "asin": f"I{i}", "also_buy": [], "main_cat": "Toys"}))
    meta.append(json.dumps({"category": [], "title": "Repeat", "asin": "I1"}))  # repeated record: first kept
    write_lines(folder / f"meta_Toys{suffix}", meta, compress)


@pytest.mark.parametrize("compress", [True, False])
def test_amazon_2018_dir_with_default_5core(tmp_path: Path, compress: bool) -> None:
    folder = tmp_path / "amazon"
    folder.mkdir()
    amazon_2018_fixture(folder, compress)
    data = prepared(tmp_path, format="amazon18", dir=str(folder), category="Toys")
    assert data.stats["kcore"] == 5
    assert data.user_ids == [f"U{u}" for u in range(6)]
    assert data.item_ids == [f"I{i}" for i in range(5)]
    assert sequences_by_user(data)["U1"] == ["I1", "I2", "I3", "I4", "I0"]
    dropped = data.stats["dropped"]
    assert (dropped["kcore_users"], dropped["kcore_items"], dropped["kcore_interactions"]) == (1, 1, 5)
    assert dropped["duplicate_meta_records"] == 1
    car = data.items[0]
    assert (car.title, car.description, car.categories) == ("Race & Car", "Fast. Red", ["Toys & Games", "Cars"])
    assert data.items[1].title == "Item 1"
    assert data.stats["source"]["inter"].endswith("Toys_5.json.gz" if compress else "Toys_5.json")


# ----------------------------------------------------------------------------- RecBole atomic


def test_recbole_atomic_folder(tmp_path: Path) -> None:
    folder = tmp_path / "movies"
    folder.mkdir()
    (folder / "movies.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t300\n1\t11\t3\t100\n1\t12\t4\t200\n2\t12\t4\t50\n2\t10\t2\t60\n2\t11\t1\t70\n",
        encoding="utf-8",
    )
    (folder / "movies.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Comedy\n11\tHeat\t1995\tAction\n12\tAlien\t\tHorror Sci-Fi\n",
        encoding="utf-8",
    )
    data = prepared(tmp_path, format="recbole", dir=str(folder))
    assert sequences_by_user(data) == {"1": ["11", "12", "10"], "2": ["12", "10", "11"]}
    toy = data.items[data.item_index_of["10"]]
    assert (toy.title, toy.description, toy.categories) == (
        "Toy Story (1995)", "Released in 1995. Genres: Animation, Comedy.", ["Animation", "Comedy"])
    alien = data.items[data.item_index_of["12"]]
    assert (alien.title, alien.description) == ("Alien", "Genres: Horror, Sci-Fi.")


# ----------------------------------------------------------------------------- CSV / TSV / Parquet


def test_csv_with_column_mapping_iso_dates_and_item_table(tmp_path: Path) -> None:
    inter = tmp_path / "events.csv"
    inter.write_text(
        "uid,iid,when,comment\n"
        "alice,p2,2020-01-02,second\n"
        "alice,p1,2019-12-31T23:00:00,first\n"
        "alice,p3,2020-01-02T08:00:00+00:00,third\n"
        "bob,p3,2021-05-01,\n"
        "bob,p1,2021-05-03,\n"
        "bob,p2,2021-05-02,\n",
        encoding="utf-8",
    )
    items = tmp_path / "items.csv"
    items.write_text('iid,name,about\np1,"Pen, blue",Writes\np2,Ink,Black\np3,Paper,"A4 &amp; A5"\n', encoding="utf-8")
    data = prepared(tmp_path, format="csv", inter=str(inter), items=str(items), user_column="uid", item_column="iid",
                    time_column="when", title_column="name", description_column="about", review_column="comment")
    assert sequences_by_user(data) == {"alice": ["p1", "p2", "p3"], "bob": ["p3", "p2", "p1"]}
    assert data.users_table.column("timestamps").to_pylist()[0] == [1577833200.0, 1577923200.0, 1577952000.0]
    assert [(i.title, i.description) for i in data.items] == [("Pen, blue", "Writes"), ("Ink", "Black"), ("Paper", "A4 & A5")]
    reviews = data.reviews()
    assert reviews is not None and sorted(reviews.column("text").to_pylist()) == ["first", "second", "third"]
    assert data.stats["dropped"]["duplicate_item_rows"] == 0


def test_tsv_without_timestamps_keeps_file_order(tmp_path: Path) -> None:
    inter = tmp_path / "events.tsv"
    inter.write_text("user_id\titem_id\nu\tc\nu\ta\nu\tb\nv\tb\nv\tc\nv\ta\n", encoding="utf-8")
    data = prepared(tmp_path, format="csv", inter=str(inter))
    assert sequences_by_user(data) == {"u": ["c", "a", "b"], "v": ["b", "c", "a"]}
    assert data.stats["source"]["time_column"] is None
    assert data.stats["notes"] == ["no timestamp column: each user's events keep file order"]


def test_parquet_with_column_mapping_and_timestamp_type(tmp_path: Path) -> None:
    import datetime as dt

    day = dt.datetime(2022, 3, 1)  # naive: read as UTC
    inter = tmp_path / "events.parquet"
    pq.write_table(
        pa.table({
            "customer": pa.array([7, 7, 7, 8, 8, 8], pa.int64()),
            "sku": ["x", "y", "z", "z", "x", "y"],
            "at": pa.array([day + dt.timedelta(days=d) for d in (2, 0, 1, 0, 1, 2)], pa.timestamp("s")),
        }),
        inter,
    )
    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"sku": ["x", "y", "z"], "label": ["Ex", "Why", "Zed"], "tags": [["a", "b"], ["c"], []]}), items)
    data = prepared(tmp_path, format="csv", inter=str(inter), items=str(items), user_column="customer",
                    item_column="sku", time_column="at", title_column="label", categories_column="tags")
    assert sequences_by_user(data) == {"7": ["y", "z", "x"], "8": ["z", "x", "y"]}
    assert data.users_table.column("timestamps").to_pylist()[0][0] == dt.datetime(2022, 3, 1, tzinfo=dt.timezone.utc).timestamp()
    assert [(i.title, i.categories) for i in data.items] == [("Ex", ["a", "b"]), ("Why", ["c"]), ("Zed", [])]
