"""Progress bars: redrawn on a terminal; in a log file, a plain line every few percent."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from alignrec.utils.log import progress, progress_bar


def test_a_bar_in_a_log_file_writes_a_line_every_five_percent(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALIGNREC_PROGRESS", "1")  # the tests' default is off
    bar = progress_bar(400, "work", unit="user")
    for step in range(400):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}")  # updates the next line; writes none of its own
    bar.close()
    text = capsys.readouterr().err  # captured: not a terminal
    lines = text.splitlines()
    assert "\r" not in text
    assert 20 <= len(lines) <= 23, lines  # 0%, 5%, ..., 100% (and the closing line), not 400 redraws
    assert lines[0].startswith("work:   0%") and "400/400" in lines[-1] and "loss=0.0025" in lines[-1]
    for _ in progress(range(1000), "loop"):
        pass
    assert 20 <= len(capsys.readouterr().err.splitlines()) <= 23


def test_bars_are_off_with_alignrec_progress_0(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALIGNREC_PROGRESS", "0")
    bar = progress_bar(10, "work")
    bar.update(10)
    bar.close()
    assert capsys.readouterr().err == ""


def test_trainer_progress_in_a_log_file_is_a_line_every_few_percent(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Fine-tuning logged to a file: the Trainer's bar is off and one line per 5% of the steps is logged."""
    from types import SimpleNamespace

    from alignrec.finetune.config import FinetuneConfig
    from alignrec.finetune.trainer import progress_lines_callback, training_arguments

    monkeypatch.setenv("ALIGNREC_PROGRESS", "1")  # stderr is not a terminal under pytest
    args = training_arguments(FinetuneConfig(), Path("unused"), has_eval=False)
    assert args.disable_tqdm is True

    callback = progress_lines_callback()
    state = SimpleNamespace(max_steps=200, global_step=0, is_local_process_zero=True, log_history=[])
    callback.on_train_begin(None, state, None)
    with caplog.at_level(logging.INFO, logger="alignrec"):
        for step in range(1, 201):
            state.global_step = step
            if step % 25 == 0:
                state.log_history.append({"loss": 3.0 - step / 100, "step": step})
            callback.on_step_end(None, state, None)
    lines = [record.getMessage() for record in caplog.records if "finetune: step" in record.getMessage()]
    assert [line.split(" (")[0] for line in lines] == [f"finetune: step {10 * n}/200" for n in range(1, 21)]
    assert "loss 1" in lines[-1] and "(100%)" in lines[-1]
