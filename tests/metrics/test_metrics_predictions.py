"""``alignrec evaluate-predictions`` end to end on a tiny prepared data set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrec.cli import main


@pytest.fixture
def run(tmp_path: Path) -> Path:
    inter = tmp_path / "tiny.inter.json"
    inter.write_text(json.dumps({"u1": ["a", "b", "c", "d"], "u2": ["b", "c", "d", "a"], "u3": ["c", "d", "a", "b"]}))
    assert main(["prepare", "--format", "lcrec", "--inter", str(inter), "--out", str(tmp_path / "run")]) == 0
    return tmp_path / "run"


def write_predictions(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n", encoding="utf-8")
    return path


def test_end_to_end_with_every_kind_of_flaw(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    predictions = write_predictions(tmp_path / "pred.jsonl", [
        {"user_id": "u1", "items": ["d", "a"]},  # test target d at rank 0
        {"user_id": "u2", "items": ["zz", "b", "b", "a"]},  # unknown zz, duplicate b, target a at rank 3
        {"user_id": "ghost", "items": ["a"]},  # not a user of the data set
        {"user_id": "u1", "items": ["a"]},  # a second list for u1: counted, the first one is scored
    ])  # u3 has no line: a miss
    report_path = tmp_path / "report.json"
    code = main(["evaluate-predictions", "--data", str(run), "--predictions", str(predictions), "--out", str(report_path)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(report_path.read_text())
    assert printed == report
    assert report["users"] == 3 and report["split"] == "test" and report["ks"] == [1, 5, 10]
    metrics = report["metrics"]  # ranks 0, 3, miss
    assert metrics["hr@1"] == pytest.approx(1 / 3)
    assert metrics["ndcg@1"] == pytest.approx(1 / 3)
    assert metrics["hr@5"] == pytest.approx(2 / 3)
    assert metrics["ndcg@5"] == pytest.approx((1 + 0.43067655807339306) / 3)  # 0.476892...
    assert metrics["hr@10"] == pytest.approx(2 / 3)
    assert report["counts"] == {
        "duplicate_items": 1,
        "unknown_items": 1,
        "short_lists": 3,
        "empty_lists": 1,
        "unknown_users": 1,
        "repeated_users": 1,
        "users_without_predictions": 1,
        "predicted_users_not_in_split": 0,
    }
    assert report["mean_list_length"] == pytest.approx(2.0)


def test_valid_split_and_custom_ks(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # validation targets: u1 -> c, u2 -> d, u3 -> a
    predictions = write_predictions(tmp_path / "pred.jsonl", [
        {"user_id": "u1", "items": ["a", "c"]}, {"user_id": "u2", "items": ["d"]}, {"user_id": "u3", "items": ["b"]}])
    capsys.readouterr()
    assert main(["evaluate-predictions", "--data", str(run / "dataset"), "--predictions", str(predictions),
                 "--split", "valid", "--ks", "1", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"] == pytest.approx({"hr@1": 1 / 3, "ndcg@1": 1 / 3, "hr@2": 2 / 3,
                                               "ndcg@2": (1 + 0.6309297535714574) / 3})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"user_id": "u1", "items": ["a"]}\n{"user_id": "u2", "items": [\n', "line 2, column 30: invalid JSON (Expecting value)"),
        ('{"user": "u1", "items": ["a"]}\n', 'line 1: expected an object {"user_id": ..., "items": [...]}'),
        ('{"user_id": "u1", "items": "a b"}\n', "line 1, field items: expected a list of item ids, got 'a b'"),
        ('{"user_id": "u1", "items": ["a", {"id": 1}]}\n', "line 1, field items[1]: expected an item id (string or integer)"),
        ('{"user_id": null, "items": []}\n', "line 1, field user_id: expected a string or integer, got None"),
    ],
)
def test_bad_predictions_exit_2_with_the_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "pred.jsonl"
    path.write_text(content, encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate-predictions", "--data", str(run), "--predictions", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"alignrec evaluate-predictions: error: {path}: {expected}"), err
    assert "Traceback" not in err


def test_missing_inputs_exit_2(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["evaluate-predictions", "--data", str(run), "--predictions", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl: predictions file not found" in capsys.readouterr().err
    assert main(["evaluate-predictions", "--data", str(tmp_path / "nothing"), "--predictions", "x"]) == 2
    assert "no prepared data set here" in capsys.readouterr().err
    assert main(["evaluate-predictions", "--data", str(run), "--predictions", "x", "--ks", "0"]) == 2
    assert "cut-offs K must be integers >= 1, got [0]" in capsys.readouterr().err
