"""benchmarks/align.py: every run it starts is the ``alignrec prefer`` command its variant and the shared budget
say, parsed by the real command line into the settings the table then reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark_scripts import load_script

from alignrec.cli import build_parser
from alignrec.commands import command_config


def test_a_variants_settings_and_the_shared_budget_reach_alignrec_prefer(tmp_path: Path) -> None:
    align = load_script("align")
    args = argparse.Namespace(model=tmp_path / "run", minutes=4.0, validations=2, threads=1, eval_users=3000)
    command = align.command_of(args, ["objective=listwise", "learning_rate=2e-5", "negatives_above_target=true",
                                      "train_code_tokens=false", "prompts_per_user=2"], 1, tmp_path / "out")
    assert Path(command[0]).name == "alignrec" and command[1] == "prefer"
    parsed = build_parser().parse_args(command[1:])
    config = command_config(parsed)
    assert (config.objective, config.learning_rate, config.negatives_above_target, config.train_code_tokens,
            config.prompts_per_user) == ("listwise", 2e-5, True, False, 2)
    # the budget every variant shares: 4 training minutes, checks every 2 minutes on 3,000 validation users
    assert (config.max_train_minutes, config.eval_minutes, config.eval_users, config.torch_threads) == (4.0, 2.0, 3000, 1)
    assert (config.seed, config.lr_scheduler) == (1, "constant")
    assert parsed.model == str(tmp_path / "run") and parsed.out == str(tmp_path / "out") and parsed.overwrite
