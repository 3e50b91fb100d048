"""The LLM's item head fused with a classic model: does the LLM know anything a tuned sequential model does not?

    .venv/bin/python benchmarks/fusion.py --name ml-100k --cell 'item head' --classic fmlp \\
        --sweep runs/sweeps/item_head_ml100k_seed0 --sweep runs/sweeps/item_head_ml100k_seed1 ...

Reads finished ``alignrec sweep`` folders, one per seed (as ``benchmarks/seeds.py`` does); trains
nothing. In each folder, the cell's fine-tuned model (it must have the item head,
``finetune.item_loss_weight > 0``) gives every validation and test user a log-probability over the
whole catalogue (the item head, one forward pass of the prompt), and the classic model trained in
the same folder (``--classic``: a baseline's or the behaviour model's name) gives its own
(log-softmax of its scores). Fused: ``(1 - a) * LLM + a * classic`` for ``a`` in 0, 0.1, ..., 1;
``a`` = 0 is the item head alone, ``a`` = 1 the classic model alone, ranked exactly as its trainer
ranks the test users. ``a`` is chosen per seed and protocol on validation NDCG@10 (every validation
user); test is then read at that ``a`` only. Both protocols: main (every item competes) and seen
items excluded (every item before the target, as the evaluation excludes them).

Per protocol, three rows: the item head alone, the classic model alone and the fusion, each with
per-seed and seed-mean NDCG@10 and HR@10; the fusion's differences are paired over the same users
(per user, the metric averaged over the seeds; bootstrap 95% interval over users). A gain of the
fusion over the classic model is what the LLM adds; none means the LLM knows nothing it lacks.
Writes ``benchmarks/results/fusion_<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    BenchmarkRun,
    classic_stages,
    paired_seed_means,
    paired_text,
    read_input_json,
    script_error,
    seed_mean_per_user,
    stage_folder,
    stage_seeds,
)

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # a: the classic model's share
PROTOCOLS = ("main", "seen excluded")
METRICS = ("ndcg@10", "hr@10")


def fail(message: str) -> SystemExit:
    return script_error("fusion", message)


def cell_summary(folder: Path, cell: str) -> tuple[Path, dict[str, Any]]:
    """The summary of ``cell`` in a sweep folder (path, contents)."""
    names = []
    for path in sorted((folder / "cells").glob("*.json")):
        summary = read_input_json(path, "a cell summary written by `alignrec sweep`", "fusion")
        names.append(summary.get("cell"))
        if summary.get("cell") == cell:
            stages = summary.get("stages")
            if not isinstance(stages, dict) or not {"prepare", "finetune"} <= set(stages):
                raise fail(f"{path}: expected a cell summary with its prepare and finetune stages")
            return path, summary
    raise fail(f"{folder}/cells: no cell {cell!r}; cells: {sorted(map(str, names))}")


class Scorers:
    """The item head and the classic model of one sweep folder, scoring a split's users in batches."""

    def __init__(self, summary_path: Path, summary: dict[str, Any], classic: str):
        from alignrec.collab.export import load_trained_model
        from alignrec.collab.trainer import configs_from_record
        from alignrec.data import load_dataset
        from alignrec.errors import InputError
        from alignrec.llm.item_head import check_ranker
        from alignrec.llm.recommender import load_recommender

        stages = summary["stages"]
        self.dataset = load_dataset(stage_folder(stages["prepare"], summary_path, "fusion"))
        finetune = stage_folder(stages["finetune"], summary_path, "fusion")
        self.recommender, _ = load_recommender(finetune, device="cpu")
        try:
            check_ranker("item", self.recommender.settings)
        except InputError as error:
            raise fail(f"{finetune}: {error}") from None
        trained = classic_stages(stages, summary_path, "fusion")
        if classic not in trained:
            raise fail(f"{summary_path}: no classic model {classic!r} in the cell's run; it trained {sorted(trained)}")
        classic_dir = trained[classic]
        self.train_config, _ = configs_from_record(classic_dir)
        if self.train_config.exclude_history:
            raise fail(f"{classic_dir}: the classic model ranks with its history excluded (exclude_history); the fusion "
                       "needs one whose main protocol lets every item compete, as the LLM's does")
        self.classic = load_trained_model(classic_dir, self.dataset.path)
        self.classic.eval()
        self.classic.prepare_scoring()

    @torch.inference_mode()
    def log_probs(self, split_name: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(item head, classic) log-probabilities over the catalogue (B, N) of the split's ``rows``."""
        from alignrec.llm.item_head import prompt_states

        split = self.dataset.split(split_name)
        recommender = self.recommender
        prompts = [recommender.prompt_ids(split.history(int(r)).tolist()) for r in rows]
        llm = recommender.item_log_probs(prompt_states(recommender.model, prompts, recommender.pad_token_id)).float()
        users = torch.from_numpy(split.user_index[rows])
        classic = torch.log_softmax(self.classic.score(users, torch.from_numpy(split.histories[rows])).float(), dim=-1)
        if classic.shape != llm.shape:
            raise fail(f"the classic model scores {classic.shape[1]} items, the LLM's catalogue has {llm.shape[1]}")
        return llm, classic

    def ranks(self, split_name: str, batch_size: int) -> dict[str, np.ndarray]:
        """Per protocol, the target's 0-based rank under every fusion weight (len(WEIGHTS), users of the split)."""
        from alignrec.evaluate.recipe import seen_items
        from alignrec.metrics import ranks_from_scores

        split = self.dataset.split(split_name)
        num_items = self.recommender.num_items
        out = {p: np.empty((len(WEIGHTS), len(split)), dtype=np.int64) for p in PROTOCOLS}
        if split_name == "test" and self.train_config.test_with_valid_interactions:  # as the classic trainer scores test
            valid = self.dataset.split("valid")
            self.classic.set_scoring_interactions(valid.user_index, valid.targets)
        try:
            for start in range(0, len(split), batch_size):
                rows = np.arange(start, min(start + batch_size, len(split)))
                llm, classic = self.log_probs(split_name, rows)
                targets = torch.from_numpy(split.targets[rows])
                seen = torch.zeros(len(rows), num_items, dtype=torch.bool)
                for i, items in enumerate(seen_items(self.dataset, split_name, split.user_index[rows])):
                    seen[i, list(items)] = True
                for w, a in enumerate(WEIGHTS):
                    fused = (1 - a) * llm + a * classic if 0 < a < 1 else (llm if a == 0 else classic)
                    out["main"][w, rows] = ranks_from_scores(fused, targets)
                    out["seen excluded"][w, rows] = ranks_from_scores(fused, targets, seen)
        finally:
            self.classic.set_scoring_interactions(None, None)
        return out


def read_folder(folder: Path, cell: str, classic: str, batch_size: int) -> dict[str, Any]:
    """One seed: the ranks of every weight on validation and test, the weight validation chose, the seeds."""
    from alignrec.metrics import metrics_from_ranks

    path, summary = cell_summary(folder, cell)
    scorers = Scorers(path, summary, classic)
    valid, test = scorers.ranks("valid", batch_size), scorers.ranks("test", batch_size)
    chosen = {}
    for protocol in PROTOCOLS:
        scores = [metrics_from_ranks(r, [10])["ndcg@10"] for r in valid[protocol]]
        chosen[protocol] = int(np.argmax(scores))  # the first best: the smaller classic share on a tie
    return {"folder": str(folder), "test": test, "chosen": chosen, "users": test["main"].shape[1],
            "seeds": stage_seeds(summary["stages"], path, "fusion"),
            "valid ndcg@10": {p: [round(metrics_from_ranks(r, [10])["ndcg@10"], 6) for r in valid[p]] for p in PROTOCOLS}}


def compare(folders: list[dict[str, Any]], classic: str) -> dict[str, list[dict[str, Any]]]:
    """Per protocol: the rows (item head alone, classic alone, fused at the weight validation chose)."""
    from alignrec.metrics import metrics_from_ranks

    if len({f["users"] for f in folders}) > 1:
        raise fail("the sweep folders scored different numbers of test users: the seeds must share one split")
    tables = {}
    for protocol in PROTOCOLS:
        models = {"LLM item head": [f["test"][protocol][0] for f in folders],
                  classic: [f["test"][protocol][-1] for f in folders],
                  "fused": [f["test"][protocol][f["chosen"][protocol]] for f in folders]}
        averaged = {name: seed_mean_per_user(ranks, METRICS) for name, ranks in models.items()}
        rows = []
        for name, ranks in models.items():
            per_seed = [metrics_from_ranks(r, [10]) for r in ranks]
            row: dict[str, Any] = {"model": name, "seeds": len(ranks),
                                   **{f"{m} per seed": [round(s[m], 6) for s in per_seed] for m in METRICS},
                                   **{m: float(averaged[name][m].mean()) for m in METRICS}}
            if name == "fused":
                row["a per seed"] = [WEIGHTS[f["chosen"][protocol]] for f in folders]
                for other in ("LLM item head", classic):
                    row[f"ndcg@10 - {other}"] = paired_seed_means(averaged[name]["ndcg@10"], averaged[other]["ndcg@10"])
            rows.append(row)
        # every weight on test, for the picture only (the choice above saw validation alone)
        rows.append({"model": "test NDCG@10 by a (not used to choose)", "seeds": len(folders),
                     "by a": {str(a): float(np.mean([metrics_from_ranks(f["test"][protocol][w], [10])["ndcg@10"]
                                                      for f in folders])) for w, a in enumerate(WEIGHTS)}})
        tables[protocol] = rows
    return tables


def table_markdown(rows: list[dict[str, Any]], classic: str) -> str:
    from alignrec.utils.tables import markdown_table

    shown = [{"model": r["model"], "NDCG@10 per seed": ", ".join(f"{v:.4f}" for v in r["ndcg@10 per seed"]),
              "NDCG@10 mean": f"{r['ndcg@10']:.4f}", "HR@10 mean": f"{r['hr@10']:.4f}",
              "a per seed (validation)": ", ".join(str(a) for a in r.get("a per seed", [])),
              f"NDCG@10 - {classic} (paired)": paired_text(r.get(f"ndcg@10 - {classic}")),
              "NDCG@10 - LLM item head (paired)": paired_text(r.get("ndcg@10 - LLM item head"))}
             for r in rows if "by a" not in r]
    curve = next(r["by a"] for r in rows if "by a" in r)
    return (markdown_table(shown).rstrip() + "\n\nTest NDCG@10 (seed mean) at every a, for the picture only (a is chosen on "
            "validation):\n\n" + markdown_table([{"a": a, "NDCG@10": f"{v:.4f}"} for a, v in curve.items()]).rstrip())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="results file name: fusion_<name>.{json,md}")
    parser.add_argument("--sweep", action="append", required=True, metavar="SWEEP", help="a finished sweep folder of one seed; repeat per seed")
    parser.add_argument("--cell", required=True, help="the sweep cell whose fine-tuned model (with the item head) is fused")
    parser.add_argument("--classic", required=True, help="the classic model trained in the same runs (e.g. fmlp, sasrec)")
    parser.add_argument("--batch-size", type=int, default=64, help="users per forward pass")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--results-dir", help="where the results files go (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {"results_dir": Path(args.results_dir)} if args.results_dir else {}
    run = BenchmarkRun(f"fusion_{args.name}", **extra, description=(
        f"The item head of the LLM cell '{args.cell}' fused with {args.classic} trained in the same runs: (1 - a) x LLM + "
        f"a x {args.classic} log-probabilities, a chosen per seed and protocol on validation NDCG@10 (every validation "
        f"user), over {len(args.sweep)} sweep folder(s) (one per seed), every test user, both protocols. Differences: per "
        "user, the metric averaged over the seeds, paired bootstrap 95% interval over users."))
    folders = [read_folder(Path(f), args.cell, args.classic, args.batch_size) for f in args.sweep]
    seeds = [f["seeds"] for f in folders]
    twins = [i for i, s in enumerate(seeds) if s in seeds[:i]]
    if twins:
        raise fail(f"{args.sweep[twins[0]]} ran the same seeds as an earlier folder ({seeds[twins[0]]}): one result, not two")
    tables = compare(folders, args.classic)
    for protocol, rows in tables.items():
        for row in rows:
            run.add_row({"protocol": protocol, **row})
    run.extra.update({"sweeps": [f["folder"] for f in folders], "seeds": seeds, "cell": args.cell, "classic": args.classic,
                      "weights": list(WEIGHTS), "valid ndcg@10 by a": [f["valid ndcg@10"] for f in folders]})
    body = "\n\n".join(f"## {p.capitalize()}\n\n{table_markdown(rows, args.classic)}" for p, rows in tables.items())
    notes = ["Seeds per folder (stage: seed): " + "; ".join(f"{f['folder']}: " + ", ".join(f"{k} {v}" for k, v in f["seeds"].items())
                                                            for f in folders),
             f"a = 0: the item head alone (its ranking over every item); a = 1: {args.classic} alone, ranked as its trainer "
             "ranks test; a is the classic model's share, the first best on validation (the smaller share on a tie)."]
    json_path, md_path = run.finish(notes=notes, body=body)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
