"""The LLM on one real data set, beside the classic models and the paper: ``llm_<dataset>.{json,md}``.

Reads finished run folders (``alignrec run CONFIG``, at least up to ``evaluate``) or finished
cells of a sweep (``SWEEP/cells/<cell>.json``, which names the cell's stage folders); trains and
searches nothing itself. Rows of the results table:

- each ``--llm LABEL RUN``: the test metrics re-scored from ``RUN/evaluate/predictions.jsonl`` (they
  must reproduce ``RUN/evaluate/metrics.json``) with 95% bootstrap intervals over users, and its
  budget from ``RUN/finetune/metrics.json`` + ``config.json`` (training minutes on this CPU,
  steps, epochs, tokens, supervised code tokens, decoder layers, head, prompt format) and the
  evaluation's minutes and users/s;
- the classic models of ``benchmarks/results/baselines_<dataset>.json`` (each with the commit
  that produced it), copied as they are; for a data set without that file (Industrial), the
  classic models trained in the first LLM run's folder, re-scored on every test user;
- the paper's figures (Llama-7B), from :data:`PAPER` (the source is named there).

A second table pairs every LLM run with each classic model trained in the same run folder
(``RUN/collab/<model>``; a sweep cell's behaviour and baseline stages): both scored on the same users, the difference LLM - model with its
paired 95% bootstrap interval.

Run folders do not outlive the machine they were made on, so every row is also kept in
``per_user/llm_<dataset>.json`` beside the results (:mod:`common`: its figures, its budget and the
rank of each test user's item in its list and in each classic model's of its run, clipped at the
top 10). ``--kept LABEL`` puts such a row back in a later session's table, still paired and
checked user by user; a row of an ``llm_<dataset>.json`` written before rows were kept comes back
with its figures only (no new paired differences with it, users checked by count).

The issue asks for every test user: runs whose evaluation was sampled are refused unless
``--allow-sampled`` is given (the table then says so), and runs scored on different users
(other users, or other targets) are never mixed. For a data set with a known size
(:data:`KNOWN_TEST_USERS`) the run's test split must have that many users.

    .venv/bin/python benchmarks/llm_dataset.py --dataset instruments \\
        --llm "ours (alignment codes, dense)" runs/exp-instruments \\
        --llm "LC-Rec-style (RQ-VAE codes, one-target prompts)" runs/exp-instruments-lcrec
    # a later session: the first row from per_user/llm_instruments.json, a new run beside it
    .venv/bin/python benchmarks/llm_dataset.py --dataset instruments \\
        --kept "ours (alignment codes, dense)" --llm "ours, 2 layers" runs/exp-instruments-2l
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.layout import existing_stage_dir
from common import (
    REPO_ROOT,
    RESULTS_DIR,
    BenchmarkRun,
    decode_ranks,
    encode_ranks,
    markdown_table,
    per_user_path,
    read_input_json,
    read_per_user,
    script_error,
    stage_folder,
    users_sha256,
    write_per_user,
)

from alignrec.errors import InputError
from alignrec.utils.io import read_json

METRICS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")
INTERVAL_METRICS = ("hr@10", "ndcg@10")

# Test users of the real data sets (prepare's counts; ../shared/data/README.md and benchmarks/results/prepare.md).
KNOWN_TEST_USERS = {"instruments": 24_772, "games": 50_546, "industrial": 3_285}


def _paper(values: Sequence[float | None]) -> dict[str, float]:
    return {m: v for m, v in zip(METRICS, values, strict=True) if v is not None}


# The paper's figures: Semantic Convergence (arXiv 2412.13771), Llama-7B fine-tuned with LoRA.
PAPER: dict[str, dict[str, Any]] = {
    "instruments": {
        "source": "Semantic Convergence (arXiv 2412.13771), Table 1, Llama-7B with LoRA, as quoted in "
                  "../shared/SPEC.md (the paper's Instruments has item text; this copy does not)",
        "rows": {
            "SASRec": _paper([0.0002, 0.0523, 0.0714, 0.0276, 0.0338]),
            "BERT4Rec": _paper([0.0396, 0.0625, 0.0797, 0.0516, 0.0571]),
            "FMLP-Rec": _paper([0.0527, 0.0794, 0.1016, 0.0663, 0.0734]),
            "DCCF": _paper([0.0440, 0.0742, 0.0929, 0.0595, 0.0656]),
            "P5": _paper([0.0595, 0.0834, 0.1023, 0.0717, 0.0777]),
            "LC-Rec": _paper([0.0708, 0.0985, 0.1225, 0.0848, 0.0925]),
            "Semantic Convergence": _paper([0.0731, 0.1022, 0.1268, 0.0879, 0.0958]),
        },
    },
    "games": {
        "source": "Semantic Convergence (arXiv 2412.13771), Table 8: Games, behaviour only, Llama-7B with LoRA, as "
                  "quoted in ../shared/data/README.md (the table has no HR@1)",
        "rows": {
            "DCCF": _paper([None, 0.0578, 0.0882, 0.0389, 0.0486]),
            "P5": _paper([None, 0.0495, 0.0789, 0.0329, 0.0423]),
            "LC-Rec": _paper([None, 0.0708, 0.1044, 0.0494, 0.0602]),
            "Semantic Convergence": _paper([None, 0.0773, 0.1132, 0.0537, 0.0652]),
        },
    },
    # Industrial: TS-Rec (seed 002) reports only a relative gain (+7.17% over its best baseline).
}


def fail(message: str) -> SystemExit:
    return script_error("llm_dataset", message)


def read_record(path: Path, what: str) -> dict[str, Any]:
    return read_input_json(path, what, "llm_dataset")


def shown_path(path: Path) -> str:
    """A path as the results show it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)


@dataclass
class RunFiles:
    """Where one LLM run's stages wrote: a run folder's fixed layout, or a sweep cell's stage folders."""

    source: Path  # the run folder or the cell summary, as given
    dataset: Path
    eval: Path
    finetune: Path
    tokenizer: Path
    collab: dict[str, Path]  # classic model -> its trained folder (metrics.json, config.json)

    @classmethod
    def of(cls, path: Path) -> RunFiles:
        if path.is_dir():
            collab = {m.parent.name: m.parent for m in sorted((path / "collab").glob("*/metrics.json"))}
            return cls(path, path / "dataset", existing_stage_dir(path, "evaluate"), path / "finetune", path / "tokenizer", collab)
        if path.suffix != ".json" or not path.is_file():
            raise fail(f"{path}: expected a run folder or a sweep cell summary (SWEEP/cells/<cell>.json)")
        stages = read_record(path, "a sweep cell summary").get("stages")
        needed = ("prepare", "evaluate", "finetune", "tokenizer")
        if not isinstance(stages, dict) or any(name not in stages for name in needed):
            raise fail(f"{path}: stages: expected the folders of {list(needed)}; is this SWEEP/cells/<cell>.json of a "
                       "finished cell?")
        def folder(name: str) -> Path:
            return stage_folder(stages[name], path, "llm_dataset")

        collab = {}
        for name in stages:
            if name == "behaviour" or name.startswith("baseline/"):
                model = read_record(folder(name) / "config.json", "a collab model's run record")["config"]["train"]["model"]
                collab[model] = folder(name)
        return cls(path, folder("prepare"), folder("evaluate"), folder("finetune"), folder("tokenizer"), collab)


@dataclass
class LlmRun:
    """One ``--llm LABEL RUN``: its files and the per-user ranks of its test users."""

    label: str
    files: RunFiles
    dataset: Any
    rows: np.ndarray  # (U,) rows of the test split that were evaluated
    ranks: np.ndarray  # (U,) rank of each user's target in the LLM's list
    evaluation: dict[str, Any]  # RUN/evaluate/metrics.json
    finetune: dict[str, Any]  # RUN/finetune/metrics.json
    finetune_record: dict[str, Any]  # RUN/finetune/config.json

    @cached_property
    def classic_ranks(self) -> dict[str, np.ndarray]:
        """Model -> rank of each evaluated user's item, for the classic models trained beside this run (scored once)."""
        from alignrec.pipeline.report import collab_test_ranks

        return {model: collab_test_ranks(folder, self.dataset)[self.rows]
                for model, folder in sorted(self.files.collab.items())}

    def users(self) -> list[tuple[str, str]]:
        """(user id, test item id) of every evaluated user, in split order."""
        split = self.dataset.split("test")
        user_ids, item_ids = self.dataset.user_ids, self.dataset.item_ids
        return [(user_ids[int(split.user_index[r])], item_ids[int(split.targets[r])]) for r in self.rows]


def load_llm_run(label: str, path: Path, dataset_name: str, allow_sampled: bool) -> LlmRun:
    from alignrec.data import load_dataset
    from alignrec.pipeline.report import prediction_ranks, sample_rows

    files = RunFiles.of(path)
    where = files.eval / "metrics.json"
    evaluation = read_record(where, "the metrics of `alignrec evaluate`")
    if evaluation.get("split") != "test":
        raise fail(f"{where}: split is {evaluation.get('split')!r}; expected 'test'")
    if evaluation.get("sampled") and not allow_sampled:
        raise fail(f"{where}: sampled is true ({evaluation.get('users')} of {evaluation.get('users_in_split')} test "
                   "users); the table needs every test user (evaluate without --users, or pass --allow-sampled)")
    finetune = read_record(files.finetune / "metrics.json", "the metrics of `alignrec finetune`")
    record = read_record(files.finetune / "config.json", "the run record of `alignrec finetune`")
    try:
        dataset = load_dataset(files.dataset)
    except InputError as error:
        raise fail(str(error)) from None
    expected = KNOWN_TEST_USERS.get(dataset_name)
    if expected is not None and len(dataset.split("test")) != expected:
        raise fail(f"{files.dataset}: {len(dataset.split('test')):,} test users, but {dataset_name} has "
                   f"{expected:,}; is this run on {dataset_name}?")
    predictions = files.eval / "predictions.jsonl"
    if not predictions.is_file():
        raise fail(f"{predictions}: missing; expected the predictions of `alignrec evaluate`")
    rows = sample_rows(dataset, predictions)
    if len(rows) != evaluation.get("users"):
        raise fail(f"{predictions}: {len(rows)} test users, but {where} says users = {evaluation.get('users')}")
    run = LlmRun(label, files, dataset, rows, prediction_ranks(dataset, predictions, rows), evaluation, finetune, record)
    check_rescored(run)
    return run


def check_rescored(run: LlmRun) -> None:
    """The predictions must give the metrics the evaluation recorded (else the files are of two evaluations)."""
    from alignrec.pipeline.report import comparison_row

    rescored = comparison_row(run.label, run.ranks)
    recorded = run.evaluation.get("metrics") or {}
    differing = [m for m in METRICS if m in recorded and abs(rescored[m] - recorded[m]) > 1e-9]
    if differing:
        m = differing[0]
        raise fail(f"{run.files.eval / 'predictions.jsonl'}: re-scored {m} is {rescored[m]:.6f} but metrics.json "
                   f"says {recorded[m]:.6f}; the two files are of different evaluations")


@dataclass
class Scored:
    """One LLM row as the tables use it: scored now from its run (:func:`score_run`), or kept by an
    earlier run of this script (:func:`kept_row`)."""

    label: str
    source: str  # "run FOLDER" / "sweep cell FILE": where it was scored
    users: int
    users_sha256: str | None  # None: a row carried from a results file that kept no per-user ranks
    ranks: np.ndarray | None  # (U,) 0-based rank of each user's item in the LLM's list (-1 = not in the top 10)
    classic: dict[str, dict[str, Any]]  # model -> {"ranks": (U,), "source": "same run (collab/<model>)"}
    row: dict[str, Any]
    budget: dict[str, Any]
    sampled: bool
    paired: list[dict[str, Any]] | None = None  # a row without ranks: its paired rows, as they were
    kept: str | None = None  # a carried row: "<file>, commit <c>" it came from
    commit: str | None = None  # a carried row: the commit that scored it
    pairs: list[tuple[str, str]] | None = None  # (user, test item) of each user: rows scored now


def score_run(run: LlmRun) -> Scored:
    pairs = run.users()
    classic = {model: {"ranks": ranks, "source": f"same run ({run.files.collab[model].parent.name}/"
                                                 f"{run.files.collab[model].name})"}
               for model, ranks in run.classic_ranks.items()}
    row = llm_row(run)
    return Scored(run.label, row["source"], len(pairs), users_sha256(pairs), run.ranks, classic, row, budget_row(run),
                  bool(run.evaluation.get("sampled")), pairs=pairs)


def kept_row(label: str, dataset: str, results_dir: Path) -> Scored:
    """``--kept LABEL``: the row of ``per_user/llm_<dataset>.json``, else (written before rows were kept) the
    figures of ``llm_<dataset>.json``."""
    kept = read_per_user(results_dir, f"llm_{dataset}", "llm_dataset").get("entries") or {}
    where = per_user_path(results_dir, f"llm_{dataset}")
    if label in kept:
        entry = kept[label]
        try:
            ranks = None if entry["ranks"] is None else decode_ranks(entry["ranks"], f"{where}: entries.{label}.ranks")
            classic = {model: {"ranks": decode_ranks(c["ranks"], f"{where}: entries.{label}.classic.{model}.ranks"),
                               "source": c["source"]} for model, c in (entry.get("classic") or {}).items()}
            return Scored(label, entry["row"]["source"], int(entry["users"]), entry["users_sha256"], ranks, classic,
                          entry["row"], entry["budget"], bool(entry["sampled"]), paired=entry.get("paired"),
                          kept=entry.get("kept") or f"per_user/{where.name}, commit {str(entry.get('git_commit'))[:12]}",
                          commit=entry.get("git_commit"))
        except (KeyError, TypeError, InputError) as error:
            raise fail(f"{where}: entries.{label}: {error}; expected what this script keeps for a row "
                       "(users, users_sha256, ranks, classic, row, budget, sampled)") from None
    results = results_dir / f"llm_{dataset}.json"
    record = read_record(results, "the results of an earlier run of benchmarks/llm_dataset.py") if results.is_file() else {}
    row = next((r for r in record.get("rows") or [] if r.get("model") == label and label in (record.get("runs") or {})), None)
    budget = next((b for b in record.get("budgets") or [] if b.get("model") == label), None)
    if row is None or budget is None:
        known = sorted(set(kept) | set(record.get("runs") or {}))
        raise fail(f"--kept {label!r}: no such LLM row in {where} or {results}; kept rows: {known or 'none'}")
    paired = [r for r in record.get("llm_vs_classic") or [] if r.get("llm") == label]
    return Scored(label, row["source"], int(row["users"]), None, None, {}, row, budget, bool(record.get("sampled")),
                  paired=paired, kept=f"{results.name}, commit {str(record.get('git_commit'))[:12]}, figures only",
                  commit=record.get("git_commit"))


def check_same_users(runs: list[Scored]) -> None:
    """Every LLM row must have scored the same users with the same test items."""
    first = runs[0]
    for run in runs[1:]:
        if run.pairs is not None and first.pairs is not None:
            users, reference = run.pairs, first.pairs
            if users == reference:
                continue
            difference = next((i for i, (a, b) in enumerate(zip(users, reference, strict=False)) if a != b),
                              min(len(users), len(reference)))
            shown = (users[difference] if difference < len(users) else "none",
                     reference[difference] if difference < len(reference) else "none")
            detail = f"first difference, (user, test item): {shown[0]} vs {shown[1]}"
        elif run.users_sha256 is not None and first.users_sha256 is not None:
            if run.users_sha256 == first.users_sha256:
                continue
            detail = "the hashes of their (user, test item) lists differ"
        elif run.users == first.users and run.sampled == first.sampled:
            continue  # a row kept without per-user ranks: only its count can be checked (the table says so)
        else:
            detail = "a row kept without per-user ranks: only the count and whether it was sampled can be checked"
        raise fail(f"{run.label!r} ({run.source}) and {first.label!r} ({first.source}) were scored on different test "
                   f"users ({run.users:,} vs {first.users:,}; {detail}); the table compares models on the same users only")


def kept_entry(run: Scored, commit: str | None) -> dict[str, Any]:
    """What ``per_user/llm_<dataset>.json`` keeps of a row."""
    return {"users": run.users, "users_sha256": run.users_sha256, "sampled": run.sampled,
            "ranks": None if run.ranks is None else encode_ranks(run.ranks),
            "classic": {model: {"source": c["source"], "ranks": encode_ranks(c["ranks"])} for model, c in run.classic.items()},
            "row": run.row, "budget": run.budget, "paired": run.paired if run.ranks is None else None,
            "git_commit": commit, "kept": run.kept}


def _rounded(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return value


def training_seconds(run: LlmRun) -> float | None:
    """Fine-tuning seconds over every session of the run (resumes add up), else those of its last session."""
    total = run.finetune.get("train_seconds_total")
    return total if total is not None else run.finetune.get("train_seconds")


def llm_row(run: LlmRun) -> dict[str, Any]:
    """The LLM's row of the main table: metrics on its users with 95% intervals, and what it cost."""
    from alignrec.pipeline.report import comparison_row

    scored = comparison_row(run.label, run.ranks)
    train_seconds = training_seconds(run)
    elapsed = run.evaluation.get("elapsed_s")
    return {
        "model": run.label, "source": f"{'run' if run.files.source.is_dir() else 'sweep cell'} {shown_path(run.files.source)}", "users": scored["users"],
        **{m: _rounded(scored[m], 6) for m in METRICS}, "ci95": _rounded(scored["ci95"], 6),
        "train_min": None if train_seconds is None else round(train_seconds / 60, 1),
        "steps": run.finetune.get("steps"), "epochs": _rounded(run.finetune.get("epochs"), 2),
        "eval_min": None if elapsed is None else round(elapsed / 60, 1),
        "eval_users_per_s": run.evaluation.get("users_per_s"),
    }


def budget_row(run: LlmRun) -> dict[str, Any]:
    """How an LLM run was trained and evaluated (RUN/finetune, RUN/evaluate, RUN/tokenizer)."""
    settings = run.finetune.get("settings") or {}
    config = run.finetune_record.get("config") or {}
    epochs = run.finetune.get("epochs") or 0.0
    code_tokens = run.finetune.get("code_label_tokens_per_epoch")
    train_seconds = training_seconds(run)
    return {
        "model": run.label,
        "llm": Path(str(config.get("llm", ""))).name,
        "codes": codes_text(run.files),
        "layers": settings.get("llm_layers"), "head": settings.get("head"), "format": settings.get("sequential_format"),
        "train_min": None if train_seconds is None else round(train_seconds / 60, 1),
        # resumed, and a checkpoint without the record of earlier sessions' time: this session's time only
        "finetune_time_partial": bool(run.finetune_record.get("resumed_from"))
        and run.finetune.get("train_seconds_total") is None,
        "threads": config.get("torch_threads") or None,
        "steps": run.finetune.get("steps"), "epochs": _rounded(epochs, 2),
        "tokens": run.finetune.get("input_tokens_seen"),
        "code_tokens": None if code_tokens is None else int(code_tokens * epochs),
        "beam": run.evaluation.get("beam_size"),
        "eval_min": None if run.evaluation.get("elapsed_s") is None else round(run.evaluation["elapsed_s"] / 60, 1),
        "eval_users_per_s": run.evaluation.get("users_per_s"),
    }


def codes_text(files: RunFiles) -> str:
    """E.g. ``alignment 256 x 256 x 256 x 256``: the tokenizer's method and the codebook sizes."""
    codes = read_record(files.finetune / "codes_meta.json", "the item codes' settings")
    sizes = " x ".join(str(size) for size in codes.get("codebook_sizes", []))
    report = files.tokenizer / "report.json"
    method = read_json(report).get("method") if report.is_file() else None
    return f"{method} {sizes}" if method else sizes


def paired_rows(run: Scored) -> list[dict[str, Any]]:
    """The LLM minus each classic model of its own run folder, on the same users (paired bootstrap)."""
    from alignrec.pipeline.report import comparison_row, paired_difference

    if run.ranks is None:
        return list(run.paired or [])
    rows = []
    for model, classic in run.classic.items():
        scored = comparison_row(model, classic["ranks"])
        difference = paired_difference(run.ranks, classic["ranks"])
        rows.append({"llm": run.label, "model": model, "users": scored["users"],
                     **{m: _rounded(scored[m], 6) for m in INTERVAL_METRICS},
                     "llm_minus_model": _rounded(difference, 6)})
    return rows


def baseline_rows(path: Path) -> list[dict[str, Any]]:
    """The classic models of a ``benchmarks/baselines.py`` results file, each naming the file and its commit."""
    record = read_record(path, "the results of benchmarks/baselines.py")
    models = record.get("models")
    if not isinstance(models, dict):
        raise fail(f"{path}: no 'models' mapping; expected the results of benchmarks/baselines.py")
    rows = []
    for model, entry in models.items():
        test = entry.get("test") if isinstance(entry, dict) else None
        if not isinstance(test, dict) or any(m not in test for m in METRICS):
            raise fail(f"{path}: models.{model}.test: expected the metrics {list(METRICS)}")
        commit = str(entry.get("git_commit") or "unknown")[:12]
        # A model stopped by its time budget rather than by early stopping is a lower bound: say so on the row.
        budget = ", time budget: a lower bound" if entry.get("stop_reason") == "time_budget" else ""
        rows.append({"model": model, "source": f"{path.name} (commit {commit}{budget})", "users": entry.get("users"),
                     **{m: test[m] for m in METRICS}, "ci95": entry.get("test_ci95"),
                     "stop_reason": entry.get("stop_reason")})
    return rows


def own_classic_rows(run: Scored) -> list[dict[str, Any]]:
    """The classic models trained beside an LLM run, each re-scored on the run's test users (its own protocol)."""
    from alignrec.pipeline.report import comparison_row

    rows = []
    for model, classic in run.classic.items():
        scored = comparison_row(model, classic["ranks"])
        rows.append({"model": model, "source": classic["source"],
                     "users": scored["users"], **{m: _rounded(scored[m], 6) for m in METRICS},
                     "ci95": _rounded(scored["ci95"], 6)})
    return rows


def paper_rows(dataset: str) -> list[dict[str, Any]]:
    paper = PAPER.get(dataset)
    if paper is None:
        return []
    return [{"model": model, "source": "paper (Llama-7B)", **values} for model, values in paper["rows"].items()]


# ----------------------------------------------------------------------------- markdown


def _metric(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


def _interval(values: Any, signed: bool = False) -> str:
    if not values:
        return ""
    return f"[{values[0]:+.4f}, {values[1]:+.4f}]" if signed else f"[{values[0]:.4f}, {values[1]:.4f}]"


def table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(rows).rstrip("\n")


def metric_cells(values: dict[str, Any], intervals: dict[str, Any] | None) -> dict[str, str]:
    """HR@K / NDCG@K cells, with a 95% CI cell after HR@10 and NDCG@10."""
    cells = {}
    for m in METRICS:
        cells[m.upper()] = _metric(values.get(m))
        if m in INTERVAL_METRICS:
            cells[f"{m.upper()} 95% CI"] = _interval((intervals or {}).get(m))
    return cells


def results_markdown(rows: list[dict[str, Any]], budgets: list[dict[str, Any]], paired: list[dict[str, Any]]) -> str:
    main = [{"model": r["model"], "source": r["source"], "users": r.get("users"), **metric_cells(r, r.get("ci95")),
             "train min": r.get("train_min"), "eval min": r.get("eval_min")} for r in rows]
    lines = ["", table(main), "", "LLM budgets (training on this CPU; tokens = input tokens seen, code tokens = "
             "supervised code labels = an epoch's code labels x epochs):", "", table(budgets)]
    if paired:
        shown = [{"LLM": r["llm"], "model": r["model"], "users": r["users"],
                  **{f"model {m.upper()}": _metric(r[m]) for m in INTERVAL_METRICS},
                  **{f"LLM - model {m.upper()}": f"{r['llm_minus_model'][m]['difference']:+.4f} "
                     f"{_interval(r['llm_minus_model'][m]['ci95'], signed=True)}" for m in INTERVAL_METRICS}}
                 for r in paired]
        lines += ["", "Each LLM against the classic models trained in its own run folder, on the same users (paired "
                  "95% bootstrap interval of the difference):", "", table(shown)]
    return "\n".join(lines) + "\n"


def table_notes(dataset: str, runs: list[Scored], budgets: list[dict[str, Any]], baselines: Path,
                classic_from: Scored | None, sampled: bool) -> list[str]:
    notes = [
        f"LLM rows: every figure re-scored from RUN/evaluate/predictions.jsonl on {runs[0].users:,} test users; "
        "95% CI = percentile bootstrap over users (1,000 resamples, seed 0).",
        f"Classic rows: copied from {shown_path(baselines)} (full ranking of every test user of the same prepared "
        "data set, each model's own commit shown)." if baselines.is_file()
        else f"Classic rows: {shown_path(baselines)} does not exist; the classic models trained in the first LLM "
        f"run's folder that has them ({classic_from.source if classic_from else 'none'}), re-scored on the same test "
        "users (full ranking).",
    ]
    kept = [run for run in runs if run.kept]
    if kept:
        notes.append("Rows kept from an earlier run of this script (--kept: read from what that run kept, not from run "
                     "folders): " + "; ".join(
            f"{run.label!r} from {run.kept}" for run in kept) + ". Rows with per-user ranks are paired and checked "
            "user by user like the others; 'figures only' rows keep their figures and paired rows as they were, and "
            "only their number of users is checked.")
    if dataset in PAPER:
        notes.append(f"Paper rows: {PAPER[dataset]['source']}; different backbone and budget, shown for scale.")
    else:
        notes.append(f"No paper rows for {dataset}: the papers give no absolute figures for it.")
    if sampled:
        notes.append("SAMPLED: at least one LLM evaluation covers a seeded sample of the test users, not all of them "
                     "(--allow-sampled); the classic and paper rows cover every test user.")
    if any(budget["finetune_time_partial"] for budget in budgets):
        notes.append("train min of a resumed fine-tune whose checkpoint had no record of the earlier sessions' "
                     "time is the time of its last session only.")
    return notes


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="data set name: instruments, games, industrial, ... "
                        "(names the results file llm_<dataset> and picks the baselines file and the paper's rows)")
    parser.add_argument("--llm", nargs=2, action="append", dest="rows", metavar=("LABEL", "RUN"),
                        help="a row: its label and a finished run folder (RUN/evaluate, RUN/finetune, RUN/dataset) or a finished "
                        "sweep cell (SWEEP/cells/<cell>.json); repeatable")
    parser.add_argument("--kept", nargs=1, action="append", dest="rows", metavar="LABEL",
                        help="a row kept by an earlier run of this script (per_user/llm_<dataset>.json in --results-dir); "
                        "repeatable, in any order with --llm (the table keeps the order given)")
    parser.add_argument("--baselines", help="classic models' results (default benchmarks/results/baselines_<dataset>.json)")
    parser.add_argument("--allow-sampled", action="store_true",
                        help="accept evaluations of a sample of the test users (the table says so)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where llm_<dataset>.json/.md go")
    args = parser.parse_args(argv)
    if not args.rows:
        parser.error("give at least one row: --llm LABEL RUN or --kept LABEL")
    return args


def main(argv: Sequence[str] | None = None) -> tuple[Path, Path]:
    args = parse_args(argv)
    labels = [entry[0] for entry in args.rows]
    if len(set(labels)) != len(labels):
        raise fail(f"--llm/--kept: each label once, got {labels}")
    results_dir = Path(args.results_dir)
    runs = [score_run(load_llm_run(entry[0], Path(entry[1]), args.dataset, args.allow_sampled)) if len(entry) == 2
            else kept_row(entry[0], args.dataset, results_dir) for entry in args.rows]
    check_same_users(runs)
    baselines = Path(args.baselines) if args.baselines else RESULTS_DIR / f"baselines_{args.dataset}.json"
    classic_from = next((run for run in runs if run.classic), None)
    rows = [run.row for run in runs]
    if baselines.is_file():
        rows += baseline_rows(baselines)
    elif classic_from is not None:
        rows += own_classic_rows(classic_from)
    else:
        raise fail(f"{baselines}: missing, and no LLM row has classic models trained beside it; the table needs "
                   "classic rows (pass --baselines FILE)")
    rows += paper_rows(args.dataset)
    budgets = [run.budget for run in runs]
    paired = [row for run in runs for row in paired_rows(run)]
    sampled = any(run.sampled for run in runs)
    bench = BenchmarkRun(f"llm_{args.dataset}", results_dir=results_dir, description=(
        f"The fine-tuned LLM on {args.dataset} ({runs[0].users:,} test users{', SAMPLED' if sampled else ''}) beside "
        "the classic models and the paper; leave-one-out, full ranking over all items."))
    for row in rows:
        bench.add_row(row)
    bench.extra.update(dataset=args.dataset, sampled=sampled, budgets=budgets, llm_vs_classic=paired,
                       runs={run.label: run.source for run in runs},
                       kept={run.label: run.kept for run in runs if run.kept},
                       baselines_file=shown_path(baselines) if baselines.is_file() else None,
                       paper_source=(PAPER.get(args.dataset) or {}).get("source"))
    outputs = bench.finish(notes=table_notes(args.dataset, runs, budgets, baselines, classic_from, sampled),
                           body=results_markdown(rows, budgets, paired))
    commit = read_record(outputs[0], "the results just written")["git_commit"]
    kept = read_per_user(results_dir, f"llm_{args.dataset}", "llm_dataset").get("entries") or {}
    kept.update({run.label: kept_entry(run, run.commit or commit) for run in runs})  # rows of other tables stay kept
    write_per_user(results_dir, f"llm_{args.dataset}", kept,
                   f"benchmarks/llm_dataset.py: the LLM rows of llm_{args.dataset} (--kept LABEL)")
    return outputs


if __name__ == "__main__":
    os.environ.setdefault("ALIGNREC_PROGRESS", "0")
    print(*main())
