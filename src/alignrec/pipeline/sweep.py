"""Sweeps: many experiments from one base config, sharing every stage they have in common.

A sweep config names a base experiment and its cells::

    # alignrec sweep configs/paper/negative_ratio.yaml
    name: negative_ratio
    base: ../ml100k.yaml            # an experiment config (path relative to this file) or a mapping
    grid:                            # one cell per combination ...
      tasks.negative_ratio: [0, 1, 2, 3, 4, 5]
    cells:                           # ... and/or cells listed by hand
      - {name: w/o LA, set: {tokenizer.llm_weight: 0}}

Stages run in the ``shared`` layout under ``OUT/stages`` (a stage that several cells agree on,
such as the data set or the behaviour model, is computed once). A cell whose summary exists
for the same resolved settings and the same code of every stage is skipped, so an interrupted sweep is finished by running it
again. The results table (JSON + Markdown) is rewritten after every cell.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignrec.config import ConfigError, from_mapping, git_commit, load_config_file, machine_info, to_dict
from alignrec.pipeline.experiment import ExperimentConfig, ExperimentRunner, apply_overrides, load_experiment
from alignrec.pipeline.fingerprint import code_fingerprint
from alignrec.pipeline.report import (
    METRIC_COLUMNS,
    METRICS,
    collab_test_ranks,
    comparison_row,
    prediction_ranks,
    sample_rows,
    with_interval_columns,
)
from alignrec.utils.io import atomic_write_json, atomic_write_text, read_json, to_json
from alignrec.utils.log import get_logger
from alignrec.utils.tables import markdown_table

log = get_logger(__name__)


@dataclass
class SweepConfig:
    """A base experiment and the cells that vary it."""

    name: str = field(default="sweep", metadata={"help": "sweep name (results file name)"})
    base: Any = field(default=None, metadata={"help": "base experiment: a config path (relative to the sweep file) or a mapping"})
    grid: dict[str, list[Any]] = field(default_factory=dict, metadata={"help": "dotted key -> values; one cell per combination"})
    cells: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "explicit cells: {name, set: {dotted key: value}}"})
    out: str = field(default="", metadata={"help": "sweep folder (default runs/sweeps/<name>)"})
    results: str = field(default="benchmarks/results", metadata={"help": "folder for <name>_<label>.json/.md"})
    label: str = field(default="", metadata={"help": "data set label in the results file name (default: from the data section)"})
    reference: dict[str, dict[str, float]] = field(
        default_factory=dict, metadata={"help": "published figures shown beside ours: {row name: {metric: value}}"}
    )

    def __post_init__(self) -> None:
        if self.base is None:
            raise ValueError("base: give the base experiment (a path or a mapping)")
        if not self.grid and not self.cells:
            raise ValueError("give grid and/or cells")
        for i, cell in enumerate(self.cells):
            if not isinstance(cell, dict) or set(cell) - {"name", "set"} or "name" not in cell:
                raise ValueError(f"cells[{i}]: expected {{name: ..., set: {{key: value}}}}, got {cell!r}")


@dataclass
class Cell:
    name: str
    overrides: dict[str, Any]


def expand_cells(config: SweepConfig) -> list[Cell]:
    cells = []
    if config.grid:
        keys = list(config.grid)
        for values in itertools.product(*(config.grid[k] for k in keys)):
            overrides = dict(zip(keys, values, strict=True))
            cells.append(Cell(", ".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items()), overrides))
    cells += [Cell(str(c["name"]), dict(c.get("set") or {})) for c in config.cells]
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep {config.name!r}: duplicate cell names {names}")
    return cells


def _override_strings(overrides: dict[str, Any]) -> list[str]:
    return [f"{key}={to_json(value).strip()}" for key, value in overrides.items()]


def data_label(experiment: ExperimentConfig) -> str:
    data = experiment.data
    if data.get("dataset"):
        return str(data["dataset"])
    if "synthetic" in data:
        return "synthetic"
    for key in ("inter", "dir"):
        if data.get(key):
            return Path(str(data[key])).name.split(".")[0]
    return experiment.name


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def results_stem(config: SweepConfig, label: str) -> str:
    """``<name>_<label>``, the results files' and default sweep folder's name, with every character
    but letters, digits and ``-_.`` replaced: a label such as ``../x`` or ``a/b`` stays in its folder."""
    return _safe(f"{config.name}_{label}")


def run_sweep(path: str | Path, overrides: list[str] | None = None, only: list[str] | None = None,
              base: str | Path | None = None, out: str | Path | None = None,
              results: str | Path | None = None) -> dict[str, Any]:
    """Run (or finish) a sweep; returns the results record (also written to the results folder).

    ``base`` replaces the sweep's base experiment (e.g. the Games config instead of ml-100k);
    ``out`` and ``results`` replace the sweep's folder and results folder (e.g. one sweep folder
    per seed: a finished cell is rerun when its settings change, so seeds need folders of their own).
    """
    path = Path(path)
    raw = load_config_file(path)
    raw.update({key: str(value) for key, value in (("out", out), ("results", results)) if value is not None})
    config = from_mapping(SweepConfig, raw, source=str(path))
    if base is not None:
        base_raw = load_config_file(base)
    elif isinstance(config.base, str):
        base_raw = load_config_file((path.parent / config.base).resolve())
    elif isinstance(config.base, dict):
        base_raw = dict(config.base)
    else:
        raise ConfigError(f"{path}: base: expected a path or a mapping")
    base_raw = apply_overrides(base_raw, overrides or [])
    base_experiment = load_experiment(data=base_raw)  # validates the base before any cell runs
    label = config.label or data_label(base_experiment)
    root = Path(config.out) if config.out else Path("runs") / "sweeps" / results_stem(config, label)
    cells = expand_cells(config)
    if only:
        unknown = sorted(set(only) - {c.name for c in cells})
        if unknown:
            raise ConfigError(f"--cell {unknown}: no such cell; cells are {[c.name for c in cells]}")
        cells = [c for c in cells if c.name in only]

    rows: list[dict[str, Any]] = []
    baselines: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    # a change to the code of any stage, or of this summary, re-runs finished cells too (their
    # unchanged stages are still reused); this module reaches every stage's code lazily
    code = code_fingerprint([__name__])["*"]
    for cell in cells:
        experiment = load_experiment(data=base_raw, overrides=_override_strings(cell.overrides))
        key = hashlib.sha256(to_json({"experiment": to_dict(experiment), "code": code}).encode()).hexdigest()
        summary_path = root / "cells" / f"{_safe(cell.name)}.json"
        if summary_path.is_file() and read_json(summary_path).get("key") == key:
            log.info("cell %r finished earlier, skipping", cell.name)
            summary = read_json(summary_path)
        else:
            log.info("cell %r: %s", cell.name, cell.overrides or "(base)")
            runner = ExperimentRunner(experiment, root=root, layout="shared")
            result = runner.run(until="evaluate")
            summary = cell_summary(cell, key, result)
            atomic_write_json(summary_path, summary)
        rows.append(summary["row"])
        baselines.update(summary.get("baselines", {}))
        write_results(config, label, rows, baselines, root, time.perf_counter() - started, complete=False)
    return write_results(config, label, rows, baselines, root, time.perf_counter() - started, complete=True)


def cell_summary(cell: Cell, key: str, result: Any) -> dict[str, Any]:
    from alignrec.data import load_dataset

    evaluation = read_json(result.out("evaluate") / "metrics.json")
    tokenizer = read_json(result.out("tokenizer") / "report.json")
    finetune = read_json(result.out("finetune") / "metrics.json")
    tasks = read_json(result.out("tasks") / "stats.json")
    dataset = load_dataset(result.out("prepare"))
    split = evaluation.get("split", "test")
    predictions = Path(evaluation["predictions"])
    rows = sample_rows(dataset, predictions, split)
    llm = comparison_row("LLM", prediction_ranks(dataset, predictions, rows, split))
    row = {
        "cell": cell.name,
        "tokenizer": tokenizer.get("method"),
        "levels": tokenizer.get("levels"),
        "raw collision": tokenizer.get("collisions", {}).get("raw"),
        **{m: evaluation["metrics"].get(m) for m in METRICS},
        "ci95": {m: interval for m, interval in llm["ci95"].items() if m in evaluation["metrics"]},
        "users": evaluation.get("users"),
        "train examples": finetune.get("train_examples"),
        "steps": finetune.get("steps"),
        "seconds": round(sum(s.seconds for s in result.stages.values()), 1),
    }
    baselines = {}
    for name, stage in result.stages.items():
        if name == "behaviour" or name.startswith("baseline/"):
            model = read_json(stage.out / "config.json")["config"]["train"]["model"]
            scored = comparison_row(model, collab_test_ranks(stage.out, dataset))  # all test users, its own protocol
            baselines[model] = {**{m: scored[m] for m in METRICS}, "ci95": scored["ci95"], "users": scored["users"]}
    return {
        "cell": cell.name,
        "overrides": cell.overrides,
        "key": key,
        "row": row,
        "baselines": baselines,
        "tasks": tasks.get("counts", {}),
        "stages": {name: str(stage.out) for name, stage in result.stages.items()},
    }


def write_results(config: SweepConfig, label: str, rows: list[dict[str, Any]], baselines: dict[str, dict[str, Any]],
                  root: Path, seconds: float, complete: bool) -> dict[str, Any]:
    import datetime as dt
    import sys

    name = results_stem(config, label)
    record = {
        "name": name,
        "complete": complete,
        "command": " ".join(["alignrec", *sys.argv[1:]]) if sys.argv and "alignrec" in sys.argv[0] else " ".join(sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "sweep_dir": str(root),
        "seconds": round(seconds, 1),
        "rows": rows,
        "baselines": baselines,
        "reference": config.reference,
    }
    results = Path(config.results)
    atomic_write_json(results / f"{name}.json", record)
    columns = ["cell", "tokenizer", "levels", "raw collision", *METRIC_COLUMNS, "users", "train examples", "steps", "seconds"]
    lines = [
        f"# {name}" + ("" if complete else " (incomplete: the sweep is still running or was interrupted)"),
        "",
        f"Command: `{record['command']}`  ",
        f"Commit: `{record['git_commit']}`, {record['date']}, {record['machine'].get('processor')}, "
        f"{record['machine'].get('cpu_count')} CPUs{', GPU ' + record['machine']['gpu'] if record['machine'].get('gpu') else ''}.",
        "",
        markdown_table(with_interval_columns(rows), columns),
        "95% CI: bootstrap over the evaluated users (1,000 resamples).",
        "",
    ]
    if baselines:
        lines += ["Baselines (same split, all test users, scored as in their own training run):", "",
                  markdown_table(with_interval_columns([{"model": m, **v} for m, v in baselines.items()]),
                                 ["model", "users", *METRIC_COLUMNS])]
    if config.reference:
        lines += ["Published figures (for scale; different backbone and budget):", "",
                  markdown_table([{"row": r, **v} for r, v in config.reference.items()], ["row", *[m for m in METRICS]])]
    atomic_write_text(results / f"{name}.md", "\n".join(lines))
    return record
