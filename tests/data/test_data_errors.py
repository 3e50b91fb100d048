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
