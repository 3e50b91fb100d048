"""Regenerate the README's results section from the files in benchmarks/results/.

    .venv/bin/python benchmarks/readme_results.py           # rewrite README.md in place
    .venv/bin/python benchmarks/readme_results.py --check   # exit 1 if README.md is out of date

Every figure in the section is read from a results file; each block names its source file,
command, date and commit. A results file that does not exist yet is listed as missing rather
than guessed; the LLM and ablation tables of a data set (``llm_<dataset>``, ``ablations_<dataset>``)
appear only once their files exist. Where a results file holds 95% bootstrap intervals over
users (``ci95`` on a row, ``llm_vs_classic`` paired differences), the tables and the verdict
show them; older files without them are shown as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/readme_results.py` from anywhere

from alignrec.utils.io import atomic_write_text  # noqa: E402
from alignrec.utils.tables import markdown_table as _markdown_table  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
README = REPO_ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
METRICS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")
INTERVAL_METRICS = ("hr@10", "ndcg@10")
BASELINE_DATASETS = ("ml-100k", "instruments", "games")
REAL_DATASETS = ("instruments", "games", "industrial")  # llm_<dataset> and ablations_<dataset> results


def markdown_table(rows: list[dict[str, Any]]) -> str:
    return _markdown_table(rows).rstrip("\n")


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _metric(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


def _interval(values: Any) -> str:
    return "" if not values else f"[{values[0]:.4f}, {values[1]:.4f}]"


def _metric_columns(values: dict[str, Any], intervals: dict[str, Any] | None) -> dict[str, str]:
    """HR@K / NDCG@K cells; with ``intervals`` ({metric: [low, high]}) a 95% CI cell after each one that has one."""
    cells: dict[str, str] = {}
    for m in METRICS:
        cells[m.upper()] = _metric(values.get(m))
        if intervals is not None and m in INTERVAL_METRICS:
            cells[f"{m.upper()} 95% CI"] = _interval(intervals.get(m))
    return cells


def _source(name: str, record: dict[str, Any]) -> str:
    """One line naming where a block's figures come from."""
    parts = [f"[`{name}.md`](benchmarks/results/{name}.md)"]
    if record.get("command"):
        parts.append(f"`{record['command']}`")
    date = record.get("date") or record.get("updated")
    if date:
        parts.append(str(date)[:10])
    if record.get("git_commit"):
        parts.append(f"commit `{str(record['git_commit'])[:12]}`")
    load = record.get("load_average") or record.get("loadavg_start")
    if load:
        parts.append(f"load average {load[0]}")
    return "Source: " + ", ".join(parts) + "."


# ----------------------------------------------------------------------------- blocks


def block_main_job() -> list[str]:
    record = _load("e2e_ml-100k")
    if record is None:
        return ["*Not run yet* (`benchmarks/results/e2e_ml-100k.json`)."]
    with_intervals = any("ci95" in row for row in record["comparison_same_users"])
    rows = [{"model": row["model"], "users": row["users"],
             **_metric_columns(row, row.get("ci95", {}) if with_intervals else None)}
            for row in record["comparison_same_users"]]
    finetune = record.get("finetune") or {}
    tokenizer = record.get("tokenizer") or {}
    collisions = tokenizer.get("collisions") or {}
    ds = record["dataset"]
    lines = [
        f"MovieLens-100K ({ds['users']:,} users, {ds['items']:,} items), the CPU budget of `configs/ml100k.yaml`: "
        f"every model scored on the same {rows[0]['users']} test users (full ranking for the classic models; "
        f"{_llm_ranking(finetune)}).",
        "",
        markdown_table(rows),
        "",
        f"Total {(record.get('stage_seconds_sum') or record['total_seconds']) / 60:.1f} min on "
        f"{record['machine'].get('cpu_count')} CPU cores (every stage once, from an empty run folder); "
        f"fine-tune {finetune.get('steps')} steps ({_fine_tune_shape(finetune)}) at "
        f"{finetune.get('train_tokens_per_second') or 0:.0f} tokens/s{_code_rate(finetune)}; "
        f"codes {tokenizer.get('levels')} x {tokenizer.get('codebook_size')}, raw collision rate "
        f"{_percent(collisions.get('raw'))}. " + _verdict(record["comparison_same_users"], record.get("llm_vs_classic")),
        "",
    ]
    if with_intervals:
        lines += ["Intervals: 95% bootstrap over the same users; the differences' intervals are paired bootstraps.", ""]
    return lines + [_source("e2e_ml-100k", record)] + block_protocols()


def block_protocols() -> list[str]:
    """The main job's models under both protocols (benchmarks/protocols.py), when it was run."""
    record = _load("e2e_ml-100k_protocols")
    if record is None:
        return []
    rows = [{"model": r["model"], "users": r["users"], "HR@10": _metric(r["hr@10"]), "NDCG@10": _metric(r["ndcg@10"]),
             "HR@10 seen excluded": _metric(r["hr@10 seen excluded"]), "NDCG@10 seen excluded": _metric(r["ndcg@10 seen excluded"]),
             "NDCG@10 seen excluded 95% CI": _interval(r["ci95_seen_excluded"]["ndcg@10"])} for r in record["rows"]]
    differences = [f"{row['model']} {row['seen_excluded']['ndcg@10']['difference']:+.4f} "
                   f"{_signed_interval(row['seen_excluded']['ndcg@10']['ci95'])}" for row in record["llm_vs_classic"]]
    return ["", "Both protocols, every test user: *main* (above: every item competes) and *seen items excluded* (no item "
            "the user had before the target; for the LLM excluded inside the beam search, `alignrec evaluate --exclude "
            "both`). LLM minus each classic model on NDCG@10, seen excluded (paired 95% interval): "
            + "; ".join(differences) + ".", "", markdown_table(rows), "", _source("e2e_ml-100k_protocols", record)]


def _signed_interval(values: list[float]) -> str:
    return f"[{values[0]:+.4f}, {values[1]:+.4f}]"


def _llm_ranking(finetune: dict[str, Any]) -> str:
    """How the main job's LLM ranked, as its fine-tune recorded it (models before the item head: beam search)."""
    settings = finetune.get("settings") or {}
    ranker = settings.get("ranker", "beam")
    if ranker == "item":
        return "for the LLM, its item head over every item, the ranker chosen on validation"
    if ranker == "fused":
        return (f"for the LLM, constrained beam search re-scored by its item head at weight {settings.get('fusion_weight'):g}, "
                "the ranker chosen on validation")
    return "constrained beam search for the LLM"


def _fine_tune_shape(finetune: dict[str, Any]) -> str:
    settings = finetune.get("settings") or {}
    if not settings:
        return "LC-Rec prompts, full head, all layers"
    head = ", item head" if settings.get("item_loss_weight") else ""
    return f"{settings.get('sequential_format')} format, {settings.get('head')} head{head}, {settings.get('llm_layers')} layers"


def _code_rate(finetune: dict[str, Any]) -> str:
    rate = finetune.get("code_tokens_per_second")
    return f", {rate:.0f} supervised code tokens/s" if rate else ""


def _verdict(rows: list[dict[str, Any]], versus: list[dict[str, Any]] | None = None) -> str:
    """Say, from the figures, where the LLM stands against popularity and the best classic model
    (with the paired 95% interval of each NDCG@10 difference where the results hold one)."""
    llm = next((r for r in rows if r["model"].startswith("LLM")), None)
    pop = next((r for r in rows if r["model"] == "pop"), None)
    if llm is None or pop is None:
        return ""
    others = [r for r in rows if r is not llm and r is not pop]
    best = max(others, key=lambda r: r.get("ndcg@10") or 0.0, default=None)
    beats_pop = (llm.get("ndcg@10") or 0.0) > (pop.get("ndcg@10") or 0.0)
    text = ("At this budget the fine-tuned LLM beats popularity on NDCG@10" if beats_pop
            else "At this budget the fine-tuned LLM does not beat popularity on NDCG@10")
    paired = {row["model"]: row.get("ndcg@10") or {} for row in versus or []}

    def gap(model: str) -> str:
        difference = paired.get(model, {})
        if "ci95" not in difference:
            return ""
        return f", difference {difference['difference']:+.4f}, 95% CI {_interval(difference['ci95'])}"

    text += f" ({_metric(llm.get('ndcg@10'))} vs {_metric(pop.get('ndcg@10'))}{gap(pop['model'])}"
    if best is None:
        return text + ")."
    text += f"; the best classic model of this run, {best['model']}: {_metric(best.get('ndcg@10'))}{gap(best['model'])})"
    ratio = (llm.get("ndcg@10") or 0.0) / best["ndcg@10"] if best.get("ndcg@10") else None
    if ratio is None:
        return text + "."
    interval = paired.get(best["model"], {}).get("ci95")
    if interval is None:
        relation = "above it" if ratio >= 1.0 else "below it"
    else:  # where the results hold the paired interval, it decides
        relation = "above it" if interval[0] > 0 else "below it" if interval[1] < 0 else "a tie: the interval holds 0"
    return text + (f": the LLM is at {ratio:.2f}x that model's NDCG@10 ({relation}; the baselines table below has "
                   "the other classic models on this split).")


def _span(dates: list[str]) -> str:
    return dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _baseline_row(label: str, test: dict[str, Any], run: dict[str, Any], budget_note: bool = False,
                  intervals: bool = False) -> dict[str, Any]:
    """One README row: test metrics (with the run's ``test_ci95`` intervals when the table shows
    intervals), then what the run cost (blank for figures quoted from a paper)."""
    epochs = run.get("epochs_run", "")
    if budget_note and run.get("stop_reason") == "time_budget":
        epochs = f"{epochs} (time budget)"
    return {"model": label, **_metric_columns(test, run.get("test_ci95", {}) if intervals else None),
            "epochs": epochs, "s/epoch": run.get("seconds_per_epoch", ""), "peak RSS MB": run.get("peak_rss_mb", "")}


def block_baselines() -> list[str]:
    lines: list[str] = []
    for dataset in BASELINE_DATASETS:
        name = f"baselines_{dataset}"
        record = _load(name)
        lines += [f"**{dataset}**", ""]
        if record is None:
            lines += [f"*Not run yet* (`benchmarks/results/{name}.json`).", ""]
            continue
        models, peer = record.get("models", {}), record.get("peer") or {}
        intervals = any("test_ci95" in row for row in [*models.values(), *peer.values()])
        rows = [_baseline_row(model, row["test"], row, budget_note=True, intervals=intervals) for model, row in models.items()]
        rows += [_baseline_row(f"{model} (RecBole 1.2.1)", row["test"], row, intervals=intervals)
                 for model, row in peer.items() if "test" in row]
        rows += [_baseline_row(f"{model} (paper, Table 1)", values, {}, intervals=intervals)
                 for model, values in (record.get("paper") or {}).items()]
        dates = sorted(str(row.get("date", ""))[:10] for row in record.get("models", {}).values() if row.get("date"))
        lines += [markdown_table(rows), "",
                  f"Source: [`{name}.md`](benchmarks/results/{name}.md) (commands, settings, machine and load per row"
                  + (f"; run {_span(dates)}" if dates else "") + ").", ""]
    return lines


def block_tokenizer() -> list[str]:
    rows, sources = [], []
    for dataset in ("games", "instruments", "industrial"):
        name = f"tokenizer_{dataset}"
        record = _load(name)
        if record is None:
            continue
        sources.append(f"[`{name}.md`](benchmarks/results/{name}.md)")
        for row in record["rows"]:
            if row.get("method") in ("alignment", "rqvae", "rqkmeans") and row.get("L") in (2, 3, 4):
                rows.append({"data set": dataset, "method": row["method"], "L": row["L"],
                             "raw collisions %": row.get("raw_collision_%"), "final %": row.get("final_collision_%"),
                             "utilisation": row.get("utilisation"), "train s": row.get("train_s")})
    if not rows:
        return ["*Not run yet* (`benchmarks/results/tokenizer_*.json`)."]
    return ["Collision rates of 256-code levels on the DCCF behaviour embeddings (raw: before any de-duplication):", "",
            markdown_table(rows), "", "Sources: " + ", ".join(sources) + " (commands, machine and load inside)."]


def block_speed() -> list[str]:
    lines: list[str] = []
    beam = _load("beam_search")
    if beam is not None:
        rows = [{"model": r["model"], "users/s fast": r["fast_users_per_s"], "users/s HF generate": r["reference_users_per_s"],
                 "speed-up": r["speedup_wall"], "identical top-K": r["identical_top_k_lists"]} for r in beam["rows"]]
        lines += ["Constrained beam search (beam 20, 4 x 256 codes, Games items), CPU:", "", markdown_table(rows), "",
                  _source("beam_search", beam), ""]
    finetune = _load("finetune_throughput")
    if finetune is not None and all("format" in r for r in finetune["rows"]):
        rows = [{"format": r["format"], "head": r["head"], "layers": r["layers"], "tokens/s": r["tokens_per_s"],
                 "supervised code tokens/s": r["code_tokens_per_s"], "x one-target": r.get("x_lcrec_full_30"),
                 "padding": _percent(r.get("padding_share")), "s/step": r["seconds_per_step"]} for r in finetune["rows"]]
        lines += [f"LoRA fine-tuning of SmolLM2-135M on the CPU ({finetune.get('precision')}, batches of "
                  f"{finetune.get('batch_size')} examples): what a CPU learns per second is the supervised code "
                  "tokens column; `x one-target` is its ratio to LC-Rec's one-target prompts on the full model.", "",
                  markdown_table(rows), "", _source("finetune_throughput", finetune), ""]
    elif finetune is not None:
        rows = [{"setting": r["setting"], "tokens/s": r["tokens_per_s"], "s/step": r["seconds_per_step"]} for r in finetune["rows"]]
        lines += [f"LoRA fine-tuning of SmolLM2-135M on the CPU ({finetune.get('precision')}):", "", markdown_table(rows), "",
                  _source("finetune_throughput", finetune), ""]
    depth = _load("llm_depth_ml-100k")
    if depth is not None:
        rows = [{"layers": r["layers"], "minutes": r["minutes"], "steps": r["steps"], "epochs": r["epochs"],
                 "code tokens/s": r["code_tokens_per_s"], "users": r["users"], "HR@10": _metric(r["hr@10"]),
                 "NDCG@10": _metric(r["ndcg@10"])} for r in depth["rows"]]
        best = max(depth["rows"], key=lambda r: r["ndcg@10"])
        lines += [f"Decoder depth at equal CPU minutes (ml-100k, every test user): the best NDCG@10 came from "
                  f"{best['layers']} layers.", "", markdown_table(rows), "", _source("llm_depth_ml-100k", depth), ""]
    lines += block_tuning()
    serve = _load("serve_latency")
    if serve is not None:
        rows = [{"store": r["store"], "load": r["load"], "target req/s": r.get("target_rate"), "achieved req/s": r["achieved_rate"],
                 "p50 ms": r["p50_ms"], "p99 ms": r["p99_ms"]} for r in serve["rows"]]
        lines += ["Serving cached top-K lists (`alignrec serve`, one worker, load generator on the same 2 cores):", "",
                  markdown_table(rows), "", _source("serve_latency", serve), ""]
    live = _load("serve_live")
    if live is not None:
        rows = [{"what": r["what"], "target req/s": r.get("target_rate"), "200s/s": r.get("throughput_200_per_s"),
                 "p50 ms": r["p50_ms"], "p99 ms": r["p99_ms"], "mean batch": r.get("mean_batch")} for r in live["rows"]]
        lines += ["Live recommendations (`alignrec serve --live`: the LLM in the request path, micro-batched; "
                  "load generators on the same cores):", "", markdown_table(rows), "", *[f"- {note}" for note in live["notes"]],
                  "", _source("serve_live", live), ""]
    precache = _load("precache")
    if precache is not None:
        rows = [{"store": r["store"], "what": r["what"], "users": r["users"], "seconds": r["seconds"],
                 "users/s": r["users_per_s"]} for r in precache["rows"]]
        lines += ["Pre-caching:", "", markdown_table(rows), "", _source("precache", precache), ""]
    prepare = _load("prepare")
    if prepare is not None:
        rows = [{"data set": r["dataset"], "users": r.get("users"), "items": r.get("items"), "avg length": r.get("avg_seq_len"),
                 "as published": r.get("matches_expected"), "wall s": r["wall_median_s"], "peak RSS MB": r["peak_rss_mb"]}
                for r in prepare["rows"]]
        lines += ["`alignrec prepare` (median of 3 fresh processes):", "", markdown_table(rows), "", _source("prepare", prepare), ""]
    return lines or ["*Not run yet.*"]


# The main job's tuning rounds (benchmarks/llm_tuning.py --name ...), oldest first, each with what it asked.
TUNING_ROUNDS = (
    ("llm_tuning_ml-100k", "codes, learning rate and code-row init at 1,000 steps"),
    ("llm_budget_ml-100k", "2,500 steps once a step took 0.31 s (row-only forward of the code rows), LoRA rank"),
    ("llm_regularise_ml-100k", "regularisation at 2,500 steps, checkpoints picked on every validation user"),
)


def block_tuning() -> list[str]:
    """The main job's settings against each other (benchmarks/llm_tuning.py), one table per round that was run."""
    lines: list[str] = []
    for name, question in TUNING_ROUNDS:
        tuning = _load(name)
        if tuning is not None:
            lines += _tuning_round(name, question, tuning)
    return lines


def _tuning_round(name: str, question: str, tuning: dict[str, Any]) -> list[str]:
    reference = tuning.get("reference") or {}
    rows = []
    for r in tuning["rows"]:
        gap = next((v for k, v in r.items() if k.startswith("ndcg@10_minus_")), None) or {}
        rows.append({"variant": r["variant"], "overrides": f"`{r['overrides']}`", "steps": r["steps"],
                     "epochs": r["epochs"], "picked step": r.get("valid_best_step"),
                     "valid NDCG@10": _metric(r["valid_best_ndcg@10"]) if r.get("valid_best_ndcg@10") is not None else "",
                     "users": r["users"], "HR@10": _metric(r["hr@10"]), "NDCG@10": _metric(r["ndcg@10"]),
                     "NDCG@10 95% CI": _interval(r.get("ndcg@10_ci95")),
                     f"minus {reference.get('model', 'reference')}": "" if not gap else
                     f"{gap['difference']:+.4f} [{gap['ci95'][0]:+.4f}, {gap['ci95'][1]:+.4f}]"})
    best = max(tuning["rows"], key=lambda r: r["ndcg@10"])
    return [f"The main job's settings, measured against each other ({question}; ml-100k, every test user, the base "
            f"run's {reference.get('model')} NDCG@10 {reference.get('ndcg@10', float('nan')):.4f} on the same users; "
            f"paired differences with 95% intervals; `picked step`: the checkpoint kept by the validation check): "
            f"the best NDCG@10 came from {best['variant']}.", "",
            markdown_table(rows), "", _source(name, tuning), ""]


def _load_benchmark(name: str) -> dict[str, Any] | None:
    """A results file of the benchmark ``name`` (None when absent, or when the file of that name was
    written by something else, e.g. an ``alignrec sweep`` table of the same name)."""
    record = _load(name)
    return record if record is not None and record.get("benchmark") == name else None


def _real_dataset_results(benchmark: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``(data set, results name, record)`` of each real data set that has ``<benchmark>_<data set>`` results."""
    found = [(dataset, f"{benchmark}_{dataset}") for dataset in REAL_DATASETS]
    return [(dataset, name, record) for dataset, name in found if (record := _load_benchmark(name)) is not None]


def _signed(difference: dict[str, Any]) -> str:
    low, high = difference["ci95"]
    return f"{difference['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"


def block_llm_datasets() -> list[str]:
    """The LLM on each real data set (benchmarks/llm_dataset.py); nothing for data sets not run yet."""
    lines: list[str] = []
    for dataset, name, record in _real_dataset_results("llm"):
        rows = [{"model": r["model"], "source": r["source"], "users": r.get("users"),
                 **_metric_columns(r, r.get("ci95") or {}), "train min": r.get("train_min"), "eval min": r.get("eval_min")}
                for r in record["rows"]]
        llm_rows = _llm_rows(record)
        users = llm_rows[0]["users"] if llm_rows else None
        lines += [f"**{dataset}** ({users:,} test users" + (", a sample: see the source" if record.get("sampled") else "")
                  + "; LLM rows: this CPU, 95% bootstrap intervals over users):", "", markdown_table(rows), ""]
        summary = _llm_summary(record)
        if summary:
            lines += [summary, ""]
        paired = [{"LLM": r["llm"], "classic model (same run)": r["model"], "users": r["users"],
                   "LLM - model HR@10": _signed(r["llm_minus_model"]["hr@10"]),
                   "LLM - model NDCG@10": _signed(r["llm_minus_model"]["ndcg@10"])}
                  for r in record.get("llm_vs_classic") or []]
        if paired:
            lines += ["Paired with the classic models trained in the same run folder (same users, 95% interval of the "
                      "difference):", "", markdown_table(paired), ""]
        lines += [_source(name, record), ""]
    return lines


def _llm_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The LLM rows of an ``llm_<dataset>`` record (the labels of its ``--llm`` runs)."""
    labels = set(record.get("runs") or {})
    return [r for r in record["rows"] if r["model"] in labels or str(r.get("source", "")).startswith("run ")]


def _llm_summary(record: dict[str, Any]) -> str:
    """One sentence on what an LLM table shows: its best LLM row against its best classic row (and the paper's)."""
    llm_rows = _llm_rows(record)
    classic = [r for r in record["rows"] if r not in llm_rows and not str(r.get("source", "")).startswith("paper")
               and r.get("ndcg@10") is not None]
    if not llm_rows or not classic:
        return ""
    llm = max(llm_rows, key=lambda r: r["ndcg@10"])
    best = max(classic, key=lambda r: r["ndcg@10"])
    interval = (llm.get("ci95") or {}).get("ndcg@10")
    shown = _metric(llm["ndcg@10"]) + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
    side = "above" if llm["ndcg@10"] > best["ndcg@10"] else "below"
    paired = next((r for r in record.get("llm_vs_classic") or [] if r["llm"] == llm["model"] and r["model"] == best["model"]),
                  None)
    paired_ci = paired["llm_minus_model"]["ndcg@10"]["ci95"] if paired is not None else None
    if (interval and interval[0] <= best["ndcg@10"] <= interval[1]
            and (paired_ci is None or paired_ci[0] <= 0 <= paired_ci[1])):
        side = "level with"  # inside the LLM row's interval, and not told apart by the paired comparison either
    lower_bound = ", stopped by its time budget: a lower bound" if best.get("stop_reason") == "time_budget" else ""
    inside = ", inside the LLM row's 95% interval" if side == "level with" else ""
    text = (f"What it shows: the best LLM row ({llm['model']}) has NDCG@10 {shown}, {side} the best classic model "
            f"here ({best['model']}, {_metric(best['ndcg@10'])}{lower_bound}; "
            f"{llm['ndcg@10'] / best['ndcg@10']:.2f}x{inside})")
    if paired is not None:
        difference = paired["llm_minus_model"]["ndcg@10"]
        low, high = difference["ci95"]
        verdict = "within noise" if low <= 0 <= high else "a clear difference"
        text += (f"; against the {best['model']} trained in its own run ({_metric(paired['ndcg@10'])}), paired on the "
                 f"same users, the difference is {_signed(difference)}, {verdict}")
    papers = [r for r in record["rows"] if str(r.get("source", "")).startswith("paper") and r.get("ndcg@10") is not None]
    if papers:
        top = max(papers, key=lambda r: r["ndcg@10"])
        text += f". The paper's best row ({top['model']}, {top['source'].removeprefix('paper ').strip('()')}) reads {_metric(top['ndcg@10'])}"
    return text + "."


def _ablation_summary(record: dict[str, Any]) -> str:
    """One sentence on an ablation table: which cells fall below the reference cell, and the paper's ordering."""
    reference = record.get("reference", "full")
    rows = {r["cell"]: r for r in record["rows"]}
    if reference not in rows:
        return ""
    base = rows[reference]["mean"]["ndcg@10"]
    below = [name for name, r in rows.items() if name != reference and r["mean"]["ndcg@10"] < base]
    above = [name for name, r in rows.items() if name != reference and r["mean"]["ndcg@10"] >= base]
    text = (f"What it shows: in NDCG@10, {len(below)} of {len(rows) - 1} variants fall below {reference}"
            + (f" ({', '.join(below)})" if below else "") + (f"; at or above it: {', '.join(above)}" if above else ""))
    paper = [name for name, r in rows.items() if name != reference and r.get("paper_hr@5_vs_full") is not None]
    if paper:
        holds = [name for name in paper if rows[name]["mean"]["hr@5"] < rows[reference]["mean"]["hr@5"]]
        broken = [name for name in paper if name not in holds]
        text += (f". The paper's ordering in HR@5 ({reference} above {', '.join(paper)}) holds for "
                 f"{', '.join(holds) or 'none of them'}" + (f" and not for {', '.join(broken)}" if broken else ""))
    paired = {name: r["paired_vs_reference"]["ndcg@10"] for name, r in rows.items() if r.get("paired_vs_reference")}
    if paired:
        lower = [name for name, d in paired.items() if d["ci95"][1] < 0]
        higher = [name for name, d in paired.items() if d["ci95"][0] > 0]
        text += (f". Paired on the same users, the NDCG@10 change is beyond the 95% interval for "
                 + ("; ".join(part for part in (f"{', '.join(lower)} (lower)" if lower else "",
                                                f"{', '.join(higher)} (higher)" if higher else "") if part)
                    or "none of them")
                 + f" ({len(paired) - len(lower) - len(higher)} of {len(paired)} within noise)")
    seeds = {r["seeds"] for r in rows.values()}
    if seeds == {1}:
        text += "; one training seed each"
    elif len(seeds) == 1:
        text += f"; {seeds.pop()} training seeds each"
    else:
        fewest = [name for name, r in rows.items() if r["seeds"] == min(seeds)]
        text += f"; {max(seeds)} training seeds per cell, {min(seeds)} for {', '.join(fewest)}"
    return text + "."


def _spread(row: dict[str, Any], metric: str) -> str:
    mean, sd = row["mean"][metric], row["sd"][metric]
    return _metric(mean) if sd is None else f"{mean:.4f} ± {sd:.4f}"


def block_ablations() -> list[str]:
    """The ablation table of each real data set (benchmarks/ablations.py); nothing for data sets not run yet."""
    lines: list[str] = []
    for dataset, name, record in _real_dataset_results("ablations"):
        reference = record.get("reference", "full")
        rows = [{"cell": r["cell"], "seeds": "1 seed" if r["seeds"] == 1 else f"{r['seeds']} seeds",
                 "users": r.get("users"), "HR@5": _spread(r, "hr@5"), "HR@10": _spread(r, "hr@10"),
                 "NDCG@10": _spread(r, "ndcg@10"),
                 f"NDCG@10 vs {reference}": _change((r.get("vs_reference") or {}).get("ndcg@10")),
                 f"HR@5 vs {reference}": _change((r.get("vs_reference") or {}).get("hr@5")),
                 f"NDCG@10 - {reference}, paired": _signed(paired) if (paired := (r.get("paired_vs_reference") or {})
                                                                         .get("ndcg@10")) else "",
                 "paper HR@5 vs full (Games)": _change(r.get("paper_hr@5_vs_full"))} for r in record["rows"]]
        lines += [f"**{dataset}** (mean ± standard deviation over seeds" + (", a sample of the test users"
                  if record.get("sampled") else "") + "):", "", markdown_table(rows), ""]
        summary = _ablation_summary(record)
        lines += [summary, ""] if summary else []
        lines += [_source(name, record), ""]
    return lines


def block_preference() -> list[str]:
    """``alignrec prefer`` against the fine-tuned model (benchmarks/align.py), where it has been measured."""
    lines: list[str] = []
    for dataset in ("ml-100k", *REAL_DATASETS):
        name = f"align_{dataset}"
        record = _load(name)
        if record is None:
            continue
        columns = ("variant", "seeds", "hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "Δ ndcg@10", "Δ ndcg@10 95% CI",
                   "Δ hr@10 95% CI", "valid Δ ndcg@10 last", "selected steps", "prompts/s")
        rows = [{key: row.get(key, "") for key in columns} for row in record["rows"]]
        validated = (f"{record['eval_users']:,} sampled validation users" if record.get("eval_users")
                     else "every validation user")
        lines += [f"{dataset}: the stage after fine-tuning, each objective for the same training minutes "
                  f"({record.get('minutes')} min a run); checkpoints chosen on {validated}; mean over seeds on every "
                  "test user, paired with the fine-tuned model on the same users (step 0, the fine-tuned model, is a "
                  "selection candidate).", "",
                  markdown_table(rows), "", _source(name, record), ""]
    return lines[:-1] if lines else []


def _change(value: Any) -> str:
    return "" if value is None else f"{100 * value:+.1f}%"


def _side(gap: dict[str, Any]) -> str:
    """Where a paired difference's 95% interval puts a model against the other: above, below or a tie with it."""
    low, high = gap["ci95"]
    return "above" if low > 0 else "below" if high < 0 else "a tie with"


def block_seeds() -> list[str]:
    """Each ``seeds_<name>.json`` (benchmarks/seeds.py): sweep cells against the classic models over seeds."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from seeds import table_markdown  # the results file's own tables

    lines: list[str] = []
    for path in sorted(RESULTS.glob("seeds_*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        name = path.stem
        by_protocol: dict[str, list[dict[str, Any]]] = {}
        for row in record["rows"]:
            by_protocol.setdefault(row["protocol"], []).append(row)
        verdicts = []
        for protocol, rows in by_protocol.items():
            for row in rows:
                gap = row.get("ndcg@10 - best classic")
                if row["kind"] == "LLM" and gap:
                    verdicts.append(f"{protocol}: {row['model']} {gap['ratio']:.2f}x {gap['against']} ({_side(gap)} it)")
        lines += ["", f"**{name.removeprefix('seeds_')}**: {record.get('description', '')}", "",
                  "Verdict (paired interval of the seed means; the best classic model these runs trained, see the baselines "
                  "table for the others): " + "; ".join(verdicts) + "."]
        for protocol, rows in by_protocol.items():
            lines += ["", f"*{protocol}*", "", table_markdown(rows).rstrip("\n")]
        lines += ["", _source(name, record)]
    return lines[1:]


def block_fusion() -> list[str]:
    """Each ``fusion_<name>.json`` (benchmarks/fusion.py): the LLM's item head mixed with a classic model."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from fusion import table_markdown  # the results file's own tables

    lines: list[str] = []
    for path in sorted(RESULTS.glob("fusion_*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        name, classic = path.stem, record["classic"]
        by_protocol: dict[str, list[dict[str, Any]]] = {}
        for row in record["rows"]:
            by_protocol.setdefault(row["protocol"], []).append(row)
        verdicts = []
        for protocol, rows in by_protocol.items():
            gap = next(r for r in rows if r["model"] == "fused")[f"ndcg@10 - {classic}"]
            verdicts.append(f"{protocol}: the fusion {gap['ratio']:.2f}x {classic} ({_side(gap)} it)")
        lines += ["", f"**{name.removeprefix('fusion_')}**: {record.get('description', '')}", "",
                  "What the LLM adds to the classic model (paired interval of the seed means): " + "; ".join(verdicts) + "."]
        for protocol, rows in by_protocol.items():
            lines += ["", f"*{protocol}*", "", table_markdown(rows, classic).rstrip("\n")]
        lines += ["", _source(name, record)]
    return lines[1:]


SECTIONS: tuple[tuple[str, Callable[[], list[str]]], ...] = (
    ("The main job", block_main_job),
    ("The LLM against the best classic model, over seeds", block_seeds),
    ("The LLM fused with the best classic model", block_fusion),
    ("The LLM on the paper's data sets", block_llm_datasets),
    ("Ablations", block_ablations),
    ("Preference alignment after fine-tuning", block_preference),
    ("Classic baselines on the same split", block_baselines),
    ("Item codes", block_tokenizer),
    ("Speed", block_speed),
)


def render() -> str:
    """The results section; a section whose block has nothing to show (no results file yet) is left out."""
    lines: list[str] = []
    for title, block in SECTIONS:
        shown = block()
        if shown:
            lines += [f"### {title}", "", *shown, ""]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def updated_readme(text: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"{README}: the markers {START} and {END} are missing")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the regenerated text")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    new = updated_readme(text)
    if args.check:
        if new != text:
            sys.exit("README.md results section is out of date: run benchmarks/readme_results.py")
        return
    atomic_write_text(README, new)
    print(f"updated {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
