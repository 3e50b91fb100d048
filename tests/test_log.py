"""Progress bars: redrawn on a terminal; in a log file, a plain line every few percent."""

from __future__ import annotations

import pytest

from alignrec.utils.log import progress, progress_bar


def test_a_bar_in_a_log_file_writes_a_line_every_five_percent(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALIGNREC_PROGRESS", "1")  # the tests' default is off
    bar = progress_bar(400, "work", unit="user")
    for _ in range(400):
        bar.update(1)
    bar.close()
    text = capsys.readouterr().err  # captured: not a terminal
    lines = text.splitlines()
    assert "\r" not in text
    assert 20 <= len(lines) <= 23, lines  # 0%, 5%, ..., 100% (and the closing line), not 400 redraws
    assert lines[0].startswith("work:   0%") and "400/400" in lines[-1]
    for _ in progress(range(1000), "loop"):
        pass
    assert 20 <= len(capsys.readouterr().err.splitlines()) <= 23


def test_bars_are_off_with_alignrec_progress_0(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALIGNREC_PROGRESS", "0")
    bar = progress_bar(10, "work")
    bar.update(10)
    bar.close()
    assert capsys.readouterr().err == ""
