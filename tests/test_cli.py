"""The ``alignrec`` command: user errors exit 2 with one clean line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignrec.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prepare_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inter = tmp_path / "x.inter.json"
    inter.write_text(json.dumps({"0": [1, 2, 3, 4], "1": [1, 2]}))
    code, out, _ = run_cli(capsys, "prepare", "--format", "lcrec", "--inter", str(inter), "--out", str(tmp_path / "run"),
                           "--max-history", "2")
    assert code == 0
    summary = json.loads(out)
    assert (summary["users"], summary["items"], summary["interactions"], summary["test_samples"]) == (1, 4, 4, 1)
    assert summary["dropped"] == {"interactions_of_short_users": 2, "users_too_short": 1}
    assert summary["dataset"] == str(tmp_path / "run" / "dataset")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prepare", "--format", "lcrec", "--inter", "{tmp}/none.json", "--out", "{tmp}/run"],
         "alignrec prepare: error: {tmp}/none.json: file not found (--inter: the LC-Rec *.inter.json file)"),
        (["prepare", "--format", "lcrec", "--inter", "a", "--dir", "b", "--out", "{tmp}/run"],
         "alignrec prepare: error: command line: --format lcrec does not use --dir"),
        (["prepare", "--dataset", "ml-100k", "--max-history", "0", "--out", "{tmp}/run"],
         "alignrec prepare: error: command line: max_history must be >= 1, got 0"),
        (["prepare", "--config", "{tmp}/cfg.yaml", "--out", "{tmp}/run"],
         "alignrec prepare: error: {tmp}/cfg.yaml + command line: unknown key(s) ['max_histroy']"),
    ],
)
def test_user_errors_exit_2_with_a_clean_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "cfg.yaml").write_text("dataset: ml-100k\nmax_histroy: 5\n")
    code, out, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.startswith(message.format(tmp=tmp_path)), err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "run").exists()


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["prepare", "--format", "xml", "--out", "x"])
    assert caught.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_console_script_exit_code(tmp_path: Path) -> None:
    """The installed entry point turns the return value into the process exit status."""
    result = subprocess.run(
        [sys.executable, "-m", "alignrec.cli", "prepare", "--format", "csv", "--inter", str(tmp_path / "none.csv"),
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith("file not found (--inter: an interactions table (.csv, .tsv or .parquet))")


def test_building_the_parser_does_not_import_torch():
    """`alignrec --help` (and every command's start-up) must not pay for importing torch."""
    probe = "import sys, alignrec.cli as cli; cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_model_flags_belong_to_collab_train_only(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["collab", "models", "--dropout", "0.3"])
    assert caught.value.code == 2
    assert "unrecognized arguments: --dropout 0.3" in capsys.readouterr().err
