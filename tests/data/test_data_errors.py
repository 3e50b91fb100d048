"""Bad input: each case checks that the error names the file, the line/field and what was expected."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from alignrec.config import ConfigError, from_mapping
from alignrec.data.dataset import DatasetFormatError
from alignrec.data.prepare import PrepareConfig, prepare
from alignrec.errors import InputError


def run_prepare(tmp_path: Path, **settings: object) -> None:
    prepare(PrepareConfig(**settings), tmp_path / "run")  # type: ignore[arg-type]


def error_text(tmp_path: Path, **settings: object) -> str:
    with pytest.raises(InputError) as caught:
        run_prepare(tmp_path, **settings)
    assert not (tmp_path / "run" / "dataset").exists()
    return str(caught.value)


# ----------------------------------------------------------------------------- LC-Rec json


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    inter = tmp_path / "bad.inter.json"
    inter.write_text('{\n  "0": [1, 2, 3],\n  "1": [4, 5\n}\n', encoding="utf-8")
    message = error_text(tmp_path, format="lcrec", inter=str(inter))
    assert message.startswith(f"{inter}: line 4, column 1: invalid JSON")


def test_lcrec_wrong_field_types(tmp_path: Path) -> None:
    inter = tmp_path / "x.inter.json"
    inter.write_text(json.dumps({"0": [1, 2.5, 3]}), encoding="utf-8")
    assert error_text(tmp_path, format="lcrec", inter=str(inter)) == (
        f"{inter}: user '0', position 1: expected an item id (integer or string), got 2.5")
    inter.write_text(json.dumps({"0": "1 2 3"}), encoding="utf-8")
    assert error_text(tmp_path, format="lcrec", inter=str(inter)) == f"{inter}: user '0': expected a list of item ids, got '1 2 3'"
    inter.write_text(json.dumps([[1, 2, 3]]), encoding="utf-8")
    assert "top level: expected an object mapping user id -> list of item ids" in error_text(
        tmp_path, format="lcrec", inter=str(inter))


def test_lcrec_item_table_wrong_type(tmp_path: Path) -> None:
    inter = tmp_path / "x.inter.json"
    inter.write_text(json.dumps({"0": [1, 2, 3]}), encoding="utf-8")
    items = tmp_path / "x.item.json"
    items.write_text(json.dumps({"1": "just a title"}), encoding="utf-8")
    assert error_text(tmp_path, format="lcrec", inter=str(inter), items=str(items)) == (
        f"{items}: item '1': expected an object with title/description/brand/categories, got 'just a title'")


def test_missing_files_name_the_option(tmp_path: Path) -> None:
    missing = tmp_path / "nope.inter.json"
    assert error_text(tmp_path, format="lcrec", inter=str(missing)) == (
        f"{missing}: file not found (--inter: the LC-Rec *.inter.json file)")
    assert error_text(tmp_path, format="lcrec") == "missing --inter: the LC-Rec *.inter.json file"
    assert error_text(tmp_path, format="minionerec", dir=str(tmp_path)) == (
        f"{tmp_path / 'item.json'}: file not found (a MiniOneRec folder needs item.json)")
    assert "no reviews file for category 'Toys' (looked for reviews_Toys_5.json.gz" in error_text(
        tmp_path, format="amazon18", dir=str(tmp_path), category="Toys")


# ----------------------------------------------------------------------------- CSV / Parquet


def test_csv_missing_column(tmp_path: Path) -> None:
    inter = tmp_path / "events.csv"
    inter.write_text("user,item_id\nu,1\n", encoding="utf-8")
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: line 1 (header): missing column(s) ['user_id']; the file has ['user', 'item_id'] "
        "(map yours with --user-column/--item-column/--time-column/...)")


def test_csv_explicit_time_column_must_exist(tmp_path: Path) -> None:
    inter = tmp_path / "events.csv"
    inter.write_text("user_id,item_id\nu,1\n", encoding="utf-8")
    assert "missing column(s) ['ts']" in error_text(tmp_path, format="csv", inter=str(inter), time_column="ts")


def test_csv_bad_timestamp_names_line_and_field(tmp_path: Path) -> None:
    inter = tmp_path / "events.csv"
    inter.write_text("user_id,item_id,timestamp\nu,1,2020-01-01\nu,2,yesterday\n", encoding="utf-8")
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: line 3, field timestamp: expected a number or an ISO-8601 date/time "
        "(e.g. 2018-03-01 or 2018-03-01T12:30:00), got 'yesterday'")


def test_csv_extra_fields_and_empty_id(tmp_path: Path) -> None:
    inter = tmp_path / "events.csv"
    inter.write_text("user_id,item_id\nu,1\nu,2,oops\n", encoding="utf-8")
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: line 3: expected 2 fields like the header, got '3 fields'")
    inter.write_text("user_id,item_id\nu,1\n,2\n", encoding="utf-8")
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: line 3, field user_id: expected a non-empty user id, got ''")


def test_broken_parquet(tmp_path: Path) -> None:
    inter = tmp_path / "events.parquet"
    inter.write_bytes(b"PAR1 this is not parquet")
    assert error_text(tmp_path, format="csv", inter=str(inter)).startswith(f"{inter}: not a readable Parquet file")


# ----------------------------------------------------------------------------- raw Amazon


def test_amazon_malformed_line(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews_Toys_5.json"
    good = json.dumps({"reviewerID": "u", "asin": "a", "unixReviewTime": 1})
    reviews.write_text(f"{good}\n{{'reviewerID': 'u', 'asin': \n", encoding="utf-8")
    assert error_text(tmp_path, format="amazon18", inter=str(reviews)) == (
        f"{reviews}: line 2: expected one JSON object (or Python dict literal) per line, got \"{{'reviewerID': 'u', 'asin':\"")


def test_amazon_wrong_field_types(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews_Toys_5.json"
    reviews.write_text(json.dumps({"reviewerID": "u", "asin": "a", "unixReviewTime": [1]}) + "\n", encoding="utf-8")
    assert error_text(tmp_path, format="amazon18", inter=str(reviews)) == (
        f"{reviews}: line 1, field unixReviewTime: expected a Unix timestamp (seconds), got [1]")
    reviews.write_text(json.dumps({"asin": "a", "unixReviewTime": 1}) + "\n", encoding="utf-8")
    assert error_text(tmp_path, format="amazon18", inter=str(reviews)) == (
        f"{reviews}: line 1, field reviewerID: expected a non-empty user id, got None")
    reviews.write_text("[1, 2]\n", encoding="utf-8")
    assert error_text(tmp_path, format="amazon18", inter=str(reviews)) == f"{reviews}: line 1: expected an object, got [1, 2]"


def test_bad_gzip(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews_Toys_5.json.gz"
    reviews.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate" * 4)
    message = error_text(tmp_path, format="amazon18", inter=str(reviews))
    assert message.startswith(f"{reviews}: not a readable gzip file (at the start:")
    # a truncated download: valid start, cut in the middle
    lines = "".join(json.dumps({"reviewerID": f"u{i}", "asin": "a", "unixReviewTime": i}) + "\n" for i in range(2000))
    reviews.write_bytes(gzip.compress(lines.encode())[:-200])
    message = error_text(tmp_path, format="amazon18", inter=str(reviews))
    assert re.match(rf"{re.escape(str(reviews))}: not a readable gzip file \(after line \d+: ", message), message


# ----------------------------------------------------------------------------- RecBole / MiniOneRec


def test_recbole_untyped_header_and_field_count(tmp_path: Path) -> None:
    inter = tmp_path / "x.inter"
    inter.write_text("user_id\titem_id\n1\t2\n", encoding="utf-8")
    assert error_text(tmp_path, format="recbole", inter=str(inter)) == (
        f"{inter}: line 1, column 1: expected a typed header field like 'item_id:token', got 'user_id'")
    inter.write_text("user_id:token\titem_id:token\n1\t2\n1\n", encoding="utf-8")
    assert error_text(tmp_path, format="recbole", inter=str(inter)) == (
        f"{inter}: line 3: expected 2 tab-separated fields, got '1 fields'")
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnoon\n", encoding="utf-8")
    assert error_text(tmp_path, format="recbole", inter=str(inter)) == (
        f"{inter}: line 2, field timestamp: expected a number, got 'noon'")


def test_minionerec_bad_history(tmp_path: Path) -> None:
    (tmp_path / "item.json").write_text(json.dumps({"1": {"title": "a"}}), encoding="utf-8")
    (tmp_path / "valid.csv").write_text('user_id,history_item_id,item_id\nA,"[1, \'x\']",2\n', encoding="utf-8")
    assert error_text(tmp_path, format="minionerec", dir=str(tmp_path)) == (
        f"{tmp_path / 'valid.csv'}: line 2, field history_item_id: expected a list of integer item ids, got \"[1, 'x']\"")
    (tmp_path / "valid.csv").write_text("user_id,item_id\nA,2\n", encoding="utf-8")
    assert "line 1 (header): expected columns ['user_id', 'history_item_id', 'item_id']" in error_text(
        tmp_path, format="minionerec", dir=str(tmp_path))
    # the header as read is shown, invisible characters included
    (tmp_path / "valid.csv").write_text("user_id,\u200bhistory_item_id,item_id\nA,[1],2\n", encoding="utf-8")
    assert error_text(tmp_path, format="minionerec", dir=str(tmp_path)).endswith(
        "missing ['history_item_id'], got ['user_id', '\\u200bhistory_item_id', 'item_id']")


# ----------------------------------------------------------------------------- option checks


def test_options_that_a_format_does_not_read_are_errors() -> None:
    with pytest.raises(ValueError, match=r"--format lcrec does not use --dir \(it reads --inter NAME.inter.json"):
        PrepareConfig(format="lcrec", inter="a.json", dir="somewhere")
    with pytest.raises(ValueError, match=r"--dataset ml-100k takes no input files; remove --inter"):
        PrepareConfig(dataset="ml-100k", inter="a.json")
    with pytest.raises(ValueError, match=r"unknown embedded data set 'ml-1m'"):
        PrepareConfig(dataset="ml-1m")
    with pytest.raises(ValueError, match="give exactly one of --format"):
        PrepareConfig()
    with pytest.raises(ConfigError, match=r"settings\.yaml: format: expected one of \['lcrec', "):
        from_mapping(PrepareConfig, {"format": "xml"}, source="settings.yaml")


def test_dataset_format_error_is_an_input_error() -> None:
    assert issubclass(DatasetFormatError, InputError)


# ----------------------------------------------------------------------------- issue 13: fail loudly


def write_minionerec(folder: Path, valid_csv: bytes) -> None:
    (folder / "item.json").write_text(json.dumps({str(i): {"title": f"t{i}"} for i in range(1, 6)}), encoding="utf-8")
    (folder / "valid.csv").write_bytes(valid_csv)


@pytest.mark.parametrize("source", ["csv", "recbole", "minionerec", "amazon18", "amazon18-gz"])
def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path: Path, source: str) -> None:
    # `u\xff1` used to be read, without a word, as a second user 'u\ufffd1' (errors="replace")
    users = [b"u1", b"u\xff1"]
    if source == "csv":
        path = tmp_path / "events.csv"
        path.write_bytes(b"user_id,item_id\n" + b"".join(b"%s,%d\n" % (u, i) for u in users for i in (1, 2, 3)))
        settings: dict[str, object] = {"format": "csv", "inter": str(path)}
        where = "line 5, byte 2"
    elif source == "recbole":
        path = tmp_path / "x.inter"
        path.write_bytes(b"user_id:token\titem_id:token\n" + b"".join(b"%s\t%d\n" % (u, i) for u in users for i in (1, 2, 3)))
        settings = {"format": "recbole", "inter": str(path)}
        where = "line 5, byte 2"
    elif source == "minionerec":
        path = tmp_path / "valid.csv"
        write_minionerec(tmp_path, b"user_id,history_item_id,item_id\n" + b"".join(b'%s,"[1, 2]",3\n' % u for u in users))
        settings = {"format": "minionerec", "dir": str(tmp_path)}
        where = "line 3, byte 2"
    else:
        path = tmp_path / ("reviews_Toys_5.json.gz" if source == "amazon18-gz" else "reviews_Toys_5.json")
        text = b"".join(b'{"reviewerID": "%s", "asin": "%d", "unixReviewTime": %d}\n' % (u, i, i) for u in users for i in (1, 2, 3))
        path.write_bytes(gzip.compress(text) if source == "amazon18-gz" else text)
        settings = {"format": "amazon18", "inter": str(path), "kcore": 0}
        where = "line 4, byte 18"
    message = error_text(tmp_path, **settings)
    assert message.startswith(f"{path}: {where}: not UTF-8 text (invalid start byte: 0xff); expected "), message


def test_item_table_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    inter = tmp_path / "events.csv"
    inter.write_text("user_id,item_id\nu,1\nu,2\nu,3\n", encoding="utf-8")
    items = tmp_path / "items.csv"
    items.write_bytes(b"item_id,title\n1,ok\n2,caf\xe9\n3,ok\n")  # latin-1
    assert error_text(tmp_path, format="csv", inter=str(inter), items=str(items)) == (
        f"{items}: line 3, byte 6: not UTF-8 text (invalid continuation byte: 0xe9); expected a CSV/TSV file in UTF-8")


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("source", ["csv", "tsv", "recbole", "minionerec", "lcrec", "amazon18"])
def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path, source: str) -> None:
    # a BOM used to become part of the first column name: "missing column(s) ['user_id']"
    if source in {"csv", "tsv"}:
        separator = "," if source == "csv" else "\t"
        path = tmp_path / f"events.{source}"
        path.write_bytes(BOM + "".join(f"{u}{separator}{i}\n" for u, i in [("user_id", "item_id"), ("u", 1), ("u", 2), ("u", 3)]).encode())
        settings: dict[str, object] = {"format": "csv", "inter": str(path)}
    elif source == "recbole":
        path = tmp_path / "x.inter"
        path.write_bytes(BOM + b"user_id:token\titem_id:token\nu\t1\nu\t2\nu\t3\n")
        settings = {"format": "recbole", "inter": str(path)}
    elif source == "minionerec":
        write_minionerec(tmp_path, BOM + b'user_id,history_item_id,item_id\nu,"[1, 2]",3\n')
        settings = {"format": "minionerec", "dir": str(tmp_path)}
    elif source == "lcrec":
        path = tmp_path / "x.inter.json"
        path.write_bytes(BOM + b'{"u": [1, 2, 3]}')
        settings = {"format": "lcrec", "inter": str(path)}
    else:
        path = tmp_path / "reviews_Toys_5.json"
        path.write_bytes(BOM + b"".join(
            json.dumps({"reviewerID": "u", "asin": str(i), "unixReviewTime": i}).encode() + b"\n" for i in (1, 2, 3)))
        settings = {"format": "amazon18", "inter": str(path), "kcore": 0}
    run_prepare(tmp_path, **settings)
    users = json.loads((tmp_path / "run" / "dataset" / "stats.json").read_text())
    assert (users["users"], users["items"], users["interactions"]) == (1, 3, 3)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400"])
def test_csv_timestamps_must_be_finite(tmp_path: Path, value: str) -> None:
    # NaN used to be accepted and broke the sort: the test target became the wrong item
    inter = tmp_path / "events.csv"
    inter.write_text(f"user_id,item_id,timestamp\nu,a,3\nu,b,{value}\nu,c,1\nu,d,2\n", encoding="utf-8")
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: line 3, field timestamp: expected a number or an ISO-8601 date/time, a finite number, got {value!r}")


def test_parquet_and_recbole_and_amazon_timestamps_must_be_finite(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    inter = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": ["u", "u", "u"], "item_id": ["a", "b", "c"], "timestamp": [1.0, float("nan"), 2.0]}), inter)
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: row 2, field timestamp: expected a number or an ISO-8601 date/time, a finite number, got nan")

    atomic = tmp_path / "x.inter"
    atomic.write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\tb\tnan\n", encoding="utf-8")
    assert error_text(tmp_path, format="recbole", inter=str(atomic)) == (
        f"{atomic}: line 3, field timestamp: expected a number, a finite number, got 'nan'")

    reviews = tmp_path / "reviews_Toys_5.json"
    for raw in ("NaN", "1e400", "Infinity", "1" + "0" * 400):
        reviews.write_text(f'{{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}}\n'
                           f'{{"reviewerID": "u", "asin": "b", "unixReviewTime": {raw}}}\n', encoding="utf-8")
        message = error_text(tmp_path, format="amazon18", inter=str(reviews))
        assert message.startswith(f"{reviews}: line 2, field unixReviewTime: expected a Unix timestamp (seconds), a finite number, got "), message


def test_lcrec_duplicate_user_keys_are_an_error(tmp_path: Path) -> None:
    # json keeps the last value: user 5's first list (3 interactions) used to vanish silently
    inter = tmp_path / "x.inter.json"
    inter.write_text('{\n  "5": [1, 2, 3],\n  "6": [1, 2, 3],\n  "5": [4, 5, 6]\n}\n', encoding="utf-8")
    assert error_text(tmp_path, format="lcrec", inter=str(inter)) == (
        f"{inter}: line 4, column 3: key '5' appears a second time in the same object; expected every key once "
        "(a JSON reader keeps only the last value, which would silently lose the others)")
    inter.write_text('{"5": [1, 2, 3], "6": [1, 2, 3]}', encoding="utf-8")
    items = tmp_path / "x.item.json"
    items.write_text('{"1": {"title": "a"}, "2": {"title": "b", "title": "c"}}', encoding="utf-8")
    assert error_text(tmp_path, format="lcrec", inter=str(inter), items=str(items)).startswith(
        f"{items}: line 1, column 43: key 'title' appears a second time in the same object")


def test_ids_that_are_not_integers_or_strings_are_errors(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # MiniOneRec: int(1.7) used to truncate the item to 1
    write_minionerec(tmp_path, b'user_id,history_item_id,item_id\nA,"[1.7, 2]",3\n')
    assert error_text(tmp_path, format="minionerec", dir=str(tmp_path)) == (
        f"{tmp_path / 'valid.csv'}: line 2, field history_item_id: expected a list of integer item ids, got '[1.7, 2]'")
    write_minionerec(tmp_path, b'user_id,history_item_id,item_id\nA,"[1, 2]",' + b"9" * 5000 + b"\n")
    assert error_text(tmp_path, format="minionerec", dir=str(tmp_path)).startswith(
        f"{tmp_path / 'valid.csv'}: line 2, field item_id: expected an integer item id, got '999")

    # Parquet: a float id that is not integral, a NaN id, and list<int> ids (used to become the string "[10]")
    inter = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": ["u", "u"], "item_id": [1.0, 1.7]}), inter)
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: row 2, field item_id: expected a item id (a string or an integer), got 1.7")
    pq.write_table(pa.table({"user_id": [1.0, float("nan")], "item_id": ["a", "b"]}), inter)
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: row 2, field user_id: expected a user id (a string or an integer), got nan")
    pq.write_table(pa.table({"user_id": ["u", "u"], "item_id": pa.array([[10], [11]], pa.list_(pa.int64()))}), inter)
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: row 1, field item_id: expected a item id (a string or an integer), not list, got [10]")


def test_ids_of_thousands_of_digits_are_errors_not_tracebacks(tmp_path: Path) -> None:
    # 4,300+ digits used to crash int() in prepare._ordered with a ValueError traceback
    long_id = "1" * 4400
    inter = tmp_path / "events.csv"
    inter.write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u in ("1", long_id) for i in (1, 2, 3)), encoding="utf-8")
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: line 5, field user_id: expected a user id of at most 1000 characters, got '4400 characters: "
        f"{'1' * 40}...'")
    lcrec = tmp_path / "x.inter.json"
    lcrec.write_text('{"1": [1, 2, 3],\n "2": [1, 2, ' + long_id + "]}", encoding="utf-8")
    assert error_text(tmp_path, format="lcrec", inter=str(lcrec)) == (
        f"{lcrec}: line 2, column 14: a number of 4400 digits; expected at most 4300 digits")
    lcrec.write_text(json.dumps({"1": [1, 2, 3], long_id: [1, 2, 3]}), encoding="utf-8")
    assert error_text(tmp_path, format="lcrec", inter=str(lcrec)).startswith(
        f"{lcrec}: user '{'1' * 40}': expected a user id of at most 1000 characters")


def test_ordering_of_long_numeric_ids_needs_no_int() -> None:
    from alignrec.data.prepare import _ordered

    long_id = "9" * 5000
    assert _ordered([long_id, "10", "9", "0010", "2"]) == ["2", "9", "10", "0010", long_id]
    assert _ordered(["b", "10", "a"]) == ["10", "a", "b"]
    assert _ordered(["\u00b2", "1"]) == ["1", "\u00b2"]  # a superscript is a digit to isdigit() but not to int()


def test_deeply_nested_json_is_an_input_error_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alignrec.cli import main

    inter = tmp_path / "x.inter.json"
    inter.write_text('{"1": [1, 2, 3],\n "2": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    message = error_text(tmp_path, format="lcrec", inter=str(inter))
    # the outer object is level 1; the deepest bracket is the 100000th '[' of line 2
    assert re.fullmatch(re.escape(f"{inter}: line 2, column 100006: JSON nested 100001 levels deep; expected fewer levels "
                                  "than the parser's limit (about ") + r"\d+\)", message), message
    assert main(["prepare", "--format", "lcrec", "--inter", str(inter), "--out", str(tmp_path / "cli")]) == 2
    assert "JSON nested 100001 levels deep" in capsys.readouterr().err

    reviews = tmp_path / "reviews_Toys_5.json"
    reviews.write_text('{"reviewerID": "u", "asin": "a", "unixReviewTime": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert error_text(tmp_path, format="amazon18", inter=str(reviews)) == (
        f"{reviews}: line 1: expected one JSON object per line, nested a few levels (it is nested too deeply to parse)")


# ----------------------------------------------------------------------------- reliability, round two


@pytest.mark.parametrize("source", ["csv", "csv-items", "parquet", "parquet-items", "minionerec", "recbole"])
def test_a_repeated_column_name_is_an_error(tmp_path: Path, source: str, capsys: pytest.CaptureFixture[str]) -> None:
    # csv.DictReader and pyarrow used to keep the last of the two columns, RecBole's reader the first
    import pyarrow as pa
    import pyarrow.parquet as pq

    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id\nu,1\nu,2\nu,3\n", encoding="utf-8")
    if source in {"csv", "csv-items"}:
        path = tmp_path / ("items.csv" if source == "csv-items" else "repeated.csv")
        path.write_text("user_id,item_id,timestamp,item_id\nu,1,1,2\nu,2,2,3\nu,3,3,4\n", encoding="utf-8")
        where = "line 1 (header)"
    elif source in {"parquet", "parquet-items"}:
        path = tmp_path / ("items.parquet" if source == "parquet-items" else "repeated.parquet")
        names = ["user_id", "item_id", "timestamp", "item_id"]
        pq.write_table(pa.Table.from_arrays([pa.array(["u"] * 3), pa.array(["1", "2", "3"]), pa.array([1, 2, 3]),
                                             pa.array(["2", "3", "4"])], names=names), path)
        where = "schema"
    elif source == "minionerec":
        path = tmp_path / "valid.csv"
        write_minionerec(tmp_path, b'user_id,history_item_id,item_id,item_id\nu,"[1, 2]",3,4\n')
        where = "line 1 (header)"
    else:
        path = tmp_path / "x.inter"
        path.write_text("user_id:token\titem_id:token\titem_id:float\nu\t1\t2\nu\t2\t3\nu\t3\t4\n", encoding="utf-8")
        where = "line 1 (header)"
    arguments = {
        "csv": ["--format", "csv", "--inter", str(path)],
        "parquet": ["--format", "csv", "--inter", str(path)],
        "csv-items": ["--format", "csv", "--inter", str(events), "--items", str(path)],
        "parquet-items": ["--format", "csv", "--inter", str(events), "--items", str(path)],
        "minionerec": ["--format", "minionerec", "--dir", str(tmp_path)],
        "recbole": ["--format", "recbole", "--inter", str(path)],
    }[source]
    from alignrec.cli import main

    assert main(["prepare", *arguments, "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{path}: {where}: column 'item_id' appears more than once; expected each column name once")
    assert not (tmp_path / "run" / "dataset").exists()


LONE_SURROGATE = "\ud800"  # json.loads('"\\ud800"'): half of a surrogate pair, no UTF-8 form


def surrogate_error(where: str, position: int = 1) -> str:
    return (f"{where}: expected Unicode text, got a lone surrogate '\\ud800' at character {position} "
            "(an escape \\ud800-\\udfff must be one half of a pair)")


def test_lone_surrogates_are_errors_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # pyarrow used to fail with a UnicodeEncodeError traceback when writing the data set
    inter = tmp_path / "x.inter.json"
    inter.write_text(json.dumps({LONE_SURROGATE: [1, 2, 3]}), encoding="utf-8")  # ensure_ascii: the file holds \ud800
    assert error_text(tmp_path, format="lcrec", inter=str(inter)) == surrogate_error(f"{inter}: user '\\ud800'")
    from alignrec.cli import main

    assert main(["prepare", "--format", "lcrec", "--inter", str(inter), "--out", str(tmp_path / "cli")]) == 2
    assert "expected Unicode text, got a lone surrogate '\\ud800' at character 1" in capsys.readouterr().err

    inter.write_text(json.dumps({"u": [1, 2, 3]}), encoding="utf-8")
    items = tmp_path / "x.item.json"
    items.write_text(json.dumps({"1": {"title": "ok" + LONE_SURROGATE}, "2": {"title": "b"}}), encoding="utf-8")
    assert error_text(tmp_path, format="lcrec", inter=str(inter), items=str(items)) == (
        surrogate_error(f"{items}: item '1', field title", 3))
    items.write_text(json.dumps({"1": {"title": "a", "categories": ["x", LONE_SURROGATE]}}), encoding="utf-8")
    assert error_text(tmp_path, format="lcrec", inter=str(inter), items=str(items)) == (
        surrogate_error(f"{items}: item '1', field categories"))


def test_lone_surrogates_in_amazon_titles_and_reviews(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews_Toys_5.json"
    lines = [{"reviewerID": "u", "asin": str(i), "unixReviewTime": i, "reviewText": "fine"} for i in (1, 2, 3)]
    lines[2]["reviewText"] = "great " + LONE_SURROGATE
    reviews.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert error_text(tmp_path, format="amazon18", inter=str(reviews), kcore=0) == (
        surrogate_error(f"{reviews}: line 3, field reviewText", 7))
    lines[2]["reviewText"] = "fine"
    reviews.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    meta = tmp_path / "meta_Toys.json"
    meta.write_text(json.dumps({"asin": "1", "title": "a"}) + "\n" + "{'asin': '2', 'title': '\\ud800'}\n", encoding="utf-8")
    assert error_text(tmp_path, format="amazon18", inter=str(reviews), items=str(meta), kcore=0) == (
        surrogate_error(f"{meta}: line 2, field title"))


def test_amazon_duplicate_keys_are_an_error(tmp_path: Path) -> None:
    # json keeps the last value: the review used to count for user 'b', silently
    reviews = tmp_path / "reviews_Toys_5.json"
    good = "".join(json.dumps({"reviewerID": "a", "asin": str(i), "unixReviewTime": i}) + "\n" for i in (1, 2, 3))
    reviews.write_text(good + '{"reviewerID": "a", "asin": "4", "reviewerID": "b", "unixReviewTime": 4}\n', encoding="utf-8")
    assert error_text(tmp_path, format="amazon18", inter=str(reviews), kcore=0) == (
        f"{reviews}: line 4, column 34: key 'reviewerID' appears a second time in the same object; expected every key "
        "once (a JSON reader keeps only the last value, which would silently lose the others)")
    reviews.write_text(good, encoding="utf-8")
    meta = tmp_path / "meta_Toys.json"
    meta.write_text('{"asin": "1", "title": "a"}\n{"asin": "2", "title": "b", "title": "c"}\n', encoding="utf-8")
    assert error_text(tmp_path, format="amazon18", inter=str(reviews), items=str(meta), kcore=0).startswith(
        f"{meta}: line 2, column 29: key 'title' appears a second time in the same object")


def test_item_text_that_is_not_text_is_an_error(tmp_path: Path) -> None:
    # str() used to store the titles "nan" and "{'en': 'x'}"
    inter = tmp_path / "x.inter.json"
    inter.write_text(json.dumps({"u": [1, 2, 3]}), encoding="utf-8")
    items = tmp_path / "x.item.json"
    reviews = tmp_path / "reviews_Toys_5.json"
    reviews.write_text("".join(json.dumps({"reviewerID": "u", "asin": str(i), "unixReviewTime": i}) + "\n" for i in (1, 2, 3)))
    meta = tmp_path / "meta_Toys.json"
    for title, shown in [("NaN", "not float, got nan"), ('{"en": "x"}', "not dict, got {'en': 'x'}")]:
        items.write_text('{"1": {"title": "a"}, "2": {"title": ' + title + "}}", encoding="utf-8")
        assert error_text(tmp_path, format="lcrec", inter=str(inter), items=str(items)) == (
            f"{items}: item '2', field title: expected text (a string or a list of strings), {shown}")
        meta.write_text('{"asin": "1", "title": "a"}\n{"asin": "2", "title": "b", "brand": ' + title + "}\n", encoding="utf-8")
        assert error_text(tmp_path, format="amazon18", inter=str(reviews), items=str(meta), kcore=0) == (
            f"{meta}: line 2, field brand: expected text (a string or a list of strings), {shown}")

    # integers are text written without quotes: kept
    items.write_text(json.dumps({str(i): {"title": 1984 + i, "categories": ["a", 7]} for i in (1, 2, 3)}), encoding="utf-8")
    run_prepare(tmp_path, format="lcrec", inter=str(inter), items=str(items))
    from alignrec.data import load_dataset

    dataset = load_dataset(tmp_path / "run")
    assert [(item.title, item.categories) for item in dataset.items] == [("1985", ["a", "7"]), ("1986", ["a", "7"]), ("1987", ["a", "7"])]


def test_timestamps_that_only_float_reads_as_numbers_are_errors(tmp_path: Path) -> None:
    # float() reads "1_0" as 10 and "\u0663" (Arabic-Indic 3) as 3: such a line used to be ordered by that number
    inter = tmp_path / "events.csv"
    atomic = tmp_path / "x.inter"
    reviews = tmp_path / "reviews_Toys_5.json"
    for value in ["1_0", "\u0663", "\uff11"]:  # an underscore, Arabic-Indic 3, fullwidth 1
        inter.write_text(f"user_id,item_id,timestamp\nu,a,3\nu,b,{value}\nu,c,1\n", encoding="utf-8")
        assert error_text(tmp_path, format="csv", inter=str(inter)) == (
            f"{inter}: line 3, field timestamp: expected a number or an ISO-8601 date/time "
            f"(e.g. 2018-03-01 or 2018-03-01T12:30:00), got {value!r}")
        atomic.write_text(f"user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\tb\t{value}\n", encoding="utf-8")
        assert error_text(tmp_path, format="recbole", inter=str(atomic)) == (
            f"{atomic}: line 3, field timestamp: expected a number, got {value!r}")
        reviews.write_text(json.dumps({"reviewerID": "u", "asin": "a", "unixReviewTime": value}) + "\n", encoding="utf-8")
        assert error_text(tmp_path, format="amazon18", inter=str(reviews)) == (
            f"{reviews}: line 1, field unixReviewTime: expected a Unix timestamp (seconds), got {value!r}")

    # plain decimal numbers still order the events
    inter.write_text("user_id,item_id,timestamp\nu,a, 3 \nu,b,-1.5\nu,c,1e1\nu,d,+.5\n", encoding="utf-8")
    run_prepare(tmp_path, format="csv", inter=str(inter))
    from alignrec.data import load_dataset

    dataset = load_dataset(tmp_path / "run")
    assert [dataset.item_ids[i] for i in dataset.sequences[0]] == ["b", "d", "a", "c"]  # -1.5, 0.5, 3, 10


def test_csv_rows_with_fewer_or_more_fields_than_the_header_are_errors(tmp_path: Path) -> None:
    # a short item row used to give an empty title; an extra MiniOneRec field was ignored
    inter = tmp_path / "events.csv"
    inter.write_text("user_id,item_id\nu,1\nu,2\nu,3\n", encoding="utf-8")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,brand\n1,a,x\n2\n3,c,z\n", encoding="utf-8")
    assert error_text(tmp_path, format="csv", inter=str(inter), items=str(items)) == (
        f"{items}: line 3: expected 3 fields like the header, got '1 fields'")
    write_minionerec(tmp_path, b'user_id,history_item_id,item_id\nu,"[1, 2]",3\nv,"[1, 2]",3,4\n')
    assert error_text(tmp_path, format="minionerec", dir=str(tmp_path)) == (
        f"{tmp_path / 'valid.csv'}: line 3: expected 3 fields like the header, got '4 fields'")
    write_minionerec(tmp_path, b'user_id,history_item_id,item_id\nu,"[1, 2]"\n')
    assert error_text(tmp_path, format="minionerec", dir=str(tmp_path)) == (
        f"{tmp_path / 'valid.csv'}: line 2: expected 3 fields like the header, got '2 fields'")


def test_float_ids_beyond_2_53_are_errors(tmp_path: Path) -> None:
    # 2**53 + 1 and 2**53 are one float: two users used to merge into one silently
    import pyarrow as pa
    import pyarrow.parquet as pq

    inter = tmp_path / "events.parquet"
    users = [float(2**53 - 1)] * 3 + [float(2**53 + 1)] * 3
    pq.write_table(pa.table({"user_id": pa.array(users, pa.float64()), "item_id": ["a", "b", "c"] * 2}), inter)
    assert error_text(tmp_path, format="csv", inter=str(inter)) == (
        f"{inter}: row 4, field user_id: expected a user id (a string or an integer; a float column holds ids exactly "
        "only below 2**53 = 9007199254740992), got 9007199254740992.0")
    # below the limit a float id is still its integer
    pq.write_table(pa.table({"user_id": pa.array([float(2**53 - 1)] * 3, pa.float64()), "item_id": ["a", "b", "c"]}), inter)
    run_prepare(tmp_path, format="csv", inter=str(inter))
    from alignrec.data import load_dataset

    assert load_dataset(tmp_path / "run").user_ids == ["9007199254740991"]

    folder = tmp_path / "minionerec"
    folder.mkdir()
    write_minionerec(folder, b'user_id,history_item_id,item_id\nA,"[1.0, 9007199254740993.0]",3\n')
    assert error_text(folder, format="minionerec", dir=str(folder)) == (
        f"{folder / 'valid.csv'}: line 2, field history_item_id: expected a list of integer item ids, "
        "got '[1.0, 9007199254740993.0]'")
