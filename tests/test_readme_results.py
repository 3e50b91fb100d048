"""The README's results section is generated from benchmarks/results/ and must be up to date."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def readme_results():
    spec = importlib.util.spec_from_file_location("readme_results", ROOT / "benchmarks" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_results"] = module
    spec.loader.exec_module(module)
    return module


def test_readme_results_section_matches_the_results_files(readme_results):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_results.updated_readme(text) == text, "run .venv/bin/python benchmarks/readme_results.py"


def test_figures_come_from_the_files(readme_results, tmp_path, monkeypatch):
    record = {
        "command": "alignrec run configs/ml100k.yaml", "date": "2026-12-01T10:00:00+00:00", "git_commit": "abc123",
        "machine": {"cpu_count": 2}, "load_average": [0.5, 0.4, 0.3], "total_seconds": 600.0,
        "dataset": {"users": 943, "items": 1682, "interactions": 100000, "avg_seq_len": 106.0},
        "comparison_same_users": [
            {"model": "LLM (alignment codes)", "users": 200, "hr@1": 0.01, "hr@5": 0.05, "hr@10": 0.1234, "ndcg@5": 0.03, "ndcg@10": 0.05},
            {"model": "pop", "users": 200, "hr@1": 0.0, "hr@5": 0.02, "hr@10": 0.04, "ndcg@5": 0.01, "ndcg@10": 0.02},
            {"model": "sasrec", "users": 200, "hr@1": 0.0, "hr@5": 0.03, "hr@10": 0.08, "ndcg@5": 0.02, "ndcg@10": 0.04},
        ],
        "finetune": {"steps": 120, "train_tokens_per_second": 210.4, "code_tokens_per_second": 180.6,
                     "settings": {"head": "code", "sequential_format": "dense", "llm_layers": 4}},
        "tokenizer": {"levels": 3, "codebook_size": 32, "collisions": {"raw": 0.0012}},
    }
    (tmp_path / "e2e_ml-100k.json").write_text(json.dumps(record))
    monkeypatch.setattr(readme_results, "RESULTS", tmp_path)
    block = "\n".join(readme_results.block_main_job())
    assert "| LLM (alignment codes) | 200 | 0.0100 | 0.0500 | 0.1234 | 0.0300 | 0.0500 |" in block
    assert "Total 10.0 min on 2 CPU cores" in block
    assert "fine-tune 120 steps (dense format, code head, 4 layers) at 210 tokens/s, 181 supervised code tokens/s" in block
    # the verdict against the best classic model (popularity is not one): 0.05 / 0.04
    assert "the best classic model of this run, sasrec: 0.0400): the LLM is at 1.25x that model's NDCG@10 (above it;" in block
    assert "raw collision rate 0.12%" in block
    assert "commit `abc123`" in block
    assert "the fine-tuned LLM beats popularity on NDCG@10" in block
    # a missing file is reported as missing, never filled in
    assert readme_results.block_baselines()[2].startswith("*Not run yet*")
    with pytest.raises(SystemExit):
        readme_results.updated_readme("no markers here")


def test_intervals_are_shown_where_the_results_hold_them(readme_results, tmp_path, monkeypatch):
    rows = [
        {"model": "LLM (alignment codes)", "users": 200, "hr@1": 0.01, "hr@5": 0.05, "hr@10": 0.1, "ndcg@5": 0.03,
         "ndcg@10": 0.05, "ci95": {"hr@10": [0.06, 0.145], "ndcg@10": [0.031, 0.0712]}},
        {"model": "sasrec", "users": 200, "hr@1": 0.02, "hr@5": 0.06, "hr@10": 0.12, "ndcg@5": 0.04, "ndcg@10": 0.06,
         "ci95": {"hr@10": [0.08, 0.165], "ndcg@10": [0.04, 0.081]}},
        {"model": "pop", "users": 200, "hr@1": 0.0, "hr@5": 0.02, "hr@10": 0.04, "ndcg@5": 0.01, "ndcg@10": 0.02,
         "ci95": {"hr@10": [0.015, 0.07], "ndcg@10": [0.008, 0.034]}},
    ]
    record = {
        "machine": {"cpu_count": 2}, "total_seconds": 60.0, "dataset": {"users": 943, "items": 1682},
        "comparison_same_users": rows, "finetune": {}, "tokenizer": {},
        "llm_vs_classic": [
            {"model": "sasrec", "ndcg@10": {"difference": -0.01, "ci95": [-0.032, 0.0105]}},
            {"model": "pop", "ndcg@10": {"difference": 0.03, "ci95": [0.004, 0.0561]}},
        ],
    }
    (tmp_path / "e2e_ml-100k.json").write_text(json.dumps(record))
    baselines = {"models": {"dccf": {"test": {m: 0.1 for m in readme_results.METRICS},
                                     "test_ci95": {"hr@10": [0.08, 0.12], "ndcg@10": [0.09, 0.11]}}}}
    (tmp_path / "baselines_ml-100k.json").write_text(json.dumps(baselines))
    monkeypatch.setattr(readme_results, "RESULTS", tmp_path)
    block = "\n".join(readme_results.block_main_job())
    assert "| model | users | HR@1 | HR@5 | HR@10 | HR@10 95% CI | NDCG@5 | NDCG@10 | NDCG@10 95% CI |" in block
    assert "| LLM (alignment codes) | 200 | 0.0100 | 0.0500 | 0.1000 | [0.0600, 0.1450] | 0.0300 | 0.0500 | [0.0310, 0.0712] |" in block
    assert "(0.0500 vs 0.0200, difference +0.0300, 95% CI [0.0040, 0.0561]; " in block
    assert ("the best classic model of this run, sasrec: 0.0600, difference -0.0100, 95% CI [-0.0320, 0.0105]): the LLM is "
            "at 0.83x that model's NDCG@10 (a tie: the interval holds 0;") in block
    table = "\n".join(readme_results.block_baselines())
    assert "| dccf | 0.1000 | 0.1000 | 0.1000 | [0.0800, 0.1200] | 0.1000 | 0.1000 | [0.0900, 0.1100] |" in table

    # results written before intervals existed keep their old tables
    for row in rows:
        del row["ci95"]
    del record["llm_vs_classic"]
    (tmp_path / "e2e_ml-100k.json").write_text(json.dumps(record))
    block = "\n".join(readme_results.block_main_job())
    assert "95% CI" not in block and "| model | users | HR@1 | HR@5 | HR@10 | NDCG@5 | NDCG@10 |" in block


def test_tuning_rows_show_the_paired_gap_to_the_reference(readme_results, tmp_path, monkeypatch):
    monkeypatch.setattr(readme_results, "RESULTS", tmp_path)
    assert readme_results.block_tuning() == []  # not run: no block at all
    rows = [
        {"variant": "codes 3x32", "overrides": "tokenizer.codebook_size=32", "steps": 1000, "epochs": 3.0, "users": 943,
         "hr@10": 0.1, "ndcg@10": 0.0463, "ndcg@10_ci95": [0.037, 0.0561],
         "ndcg@10_minus_sasrec": {"difference": -0.0152, "ci95": [-0.0281, -0.0019]}},
        {"variant": "codes 3x64", "overrides": "tokenizer.codebook_size=64", "steps": 1000, "epochs": 3.0, "users": 943,
         "hr@10": 0.1177, "ndcg@10": 0.0592, "ndcg@10_ci95": [0.048, 0.0705],
         "ndcg@10_minus_sasrec": {"difference": -0.0023, "ci95": [-0.0162, 0.011]}},
    ]
    record = {"rows": rows, "command": "python benchmarks/llm_tuning.py", "date": "2026-12-02T00:00:00+00:00",
              "git_commit": "abc123", "reference": {"model": "sasrec", "users": 943, "ndcg@10": 0.0615}}
    (tmp_path / "llm_tuning_ml-100k.json").write_text(json.dumps(record))
    block = "\n".join(readme_results.block_tuning())
    assert "the base run's sasrec NDCG@10 0.0615 on the same users" in block
    assert "the best NDCG@10 came from codes 3x64." in block
    assert ("| codes 3x32 | `tokenizer.codebook_size=32` | 1,000 | 3 |  |  | 943 | 0.1000 | 0.0463 | [0.0370, 0.0561] | "
            "-0.0152 [-0.0281, -0.0019] |") in block
    # a later round gets a table of its own, after the first, with the checkpoint the validation check kept
    later = {**record, "rows": [{**rows[0], "variant": "stride 5", "valid_best_step": 2500, "valid_best_ndcg@10": 0.061}]}
    (tmp_path / "llm_regularise_ml-100k.json").write_text(json.dumps(later))
    block = "\n".join(readme_results.block_tuning())
    assert block.index("came from codes 3x64.") < block.index("came from stride 5.")
    assert "| stride 5 | `tokenizer.codebook_size=32` | 1,000 | 3 | 2,500 | 0.0610 | 943 |" in block


def test_llm_and_ablation_tables_appear_when_their_files_exist(readme_results, tmp_path, monkeypatch):
    monkeypatch.setattr(readme_results, "RESULTS", tmp_path)
    assert readme_results.block_llm_datasets() == [] and readme_results.block_ablations() == []
    assert "The LLM on the paper's data sets" not in readme_results.render()  # no file: no section at all
    assert "### Ablations" not in readme_results.render()
    llm = {
        "benchmark": "llm_games", "command": "python benchmarks/llm_dataset.py --dataset games", "git_commit": "abc123",
        "date": "2026-12-03T10:00:00+00:00", "sampled": False,
        "rows": [
            {"model": "ours", "source": "run runs/exp-games", "users": 50546, "hr@1": 0.01, "hr@5": 0.04, "hr@10": 0.07,
             "ndcg@5": 0.025, "ndcg@10": 0.035, "ci95": {"hr@10": [0.068, 0.072], "ndcg@10": [0.034, 0.036]},
             "train_min": 95.5, "eval_min": 40.2},
            {"model": "sasrec", "source": "baselines_games.json (commit f742d7c610f5)", "users": None, "hr@1": 0.0109,
             "hr@5": 0.0415, "hr@10": 0.0674, "ndcg@5": 0.0263, "ndcg@10": 0.0347, "ci95": None},
            {"model": "LC-Rec", "source": "paper (Llama-7B)", "hr@5": 0.0708, "hr@10": 0.1044, "ndcg@5": 0.0494,
             "ndcg@10": 0.0602},
        ],
        "llm_vs_classic": [{"llm": "ours", "model": "sasrec", "users": 50546, "hr@10": 0.0674, "ndcg@10": 0.0347,
                            "llm_minus_model": {"hr@10": {"difference": 0.0026, "ci95": [-0.001, 0.0061]},
                                                "ndcg@10": {"difference": 0.0003, "ci95": [-0.0012, 0.0019]}}}],
    }
    (tmp_path / "llm_games.json").write_text(json.dumps(llm))
    block = "\n".join(readme_results.block_llm_datasets())
    assert "**games** (50,546 test users; LLM rows: this CPU, 95% bootstrap intervals over users):" in block
    assert ("| ours | run runs/exp-games | 50,546 | 0.0100 | 0.0400 | 0.0700 | [0.0680, 0.0720] | 0.0250 | 0.0350 | "
            "[0.0340, 0.0360] | 95.5 | 40.2 |") in block
    assert "| sasrec | baselines_games.json (commit f742d7c610f5) |  | 0.0109 | 0.0415 | 0.0674 |  | 0.0263 | 0.0347 |  |" in block
    assert "| LC-Rec | paper (Llama-7B) |  |  | 0.0708 | 0.1044 |  | 0.0494 | 0.0602 |  |" in block
    assert "| ours | sasrec | 50,546 | +0.0026 [-0.0010, +0.0061] | +0.0003 [-0.0012, +0.0019] |" in block
    assert "commit `abc123`" in block and "instruments" not in block
    assert ("What it shows: the best LLM row (ours) has NDCG@10 0.0350 [0.0340, 0.0360], level with the best classic "
            "model here (sasrec, 0.0347; 1.01x, inside the LLM row's 95% interval); against the sasrec trained in its own run (0.0347), paired on the same users, "
            "the difference is +0.0003 [-0.0012, +0.0019], within noise. The paper's best row (LC-Rec, Llama-7B) reads 0.0602.") in block
    # an LLM row from a sweep cell is found by its label; below the classic model, a clear paired difference
    llm["runs"] = {"ours": "runs/sweeps/x/cells/full.json"}
    llm["rows"][0].update(source="sweep cell runs/sweeps/x/cells/full.json", **{"ndcg@10": 0.030})
    llm["llm_vs_classic"][0]["llm_minus_model"]["ndcg@10"] = {"difference": -0.0047, "ci95": [-0.006, -0.003]}
    (tmp_path / "llm_games.json").write_text(json.dumps(llm))
    block = "\n".join(readme_results.block_llm_datasets())
    assert "**games** (50,546 test users;" in block
    assert ("has NDCG@10 0.0300 [0.0340, 0.0360], below the best classic model here (sasrec, 0.0347; 0.86x); against "
            "the sasrec trained in its own run (0.0347), paired on the same users, the difference is -0.0047 "
            "[-0.0060, -0.0030], a clear difference.") in block
    ablations = {
        "benchmark": "ablations_industrial", "git_commit": "def456", "reference": "full", "sampled": False,
        "rows": [
            {"cell": "full", "seeds": 3, "users": 3285, "mean": {"hr@5": 0.05, "hr@10": 0.08, "ndcg@10": 0.04},
             "sd": {"hr@5": 0.002, "hr@10": 0.003, "ndcg@10": 0.001}, "vs_reference": {"hr@5": 0.0, "ndcg@10": 0.0},
             "paper_hr@5_vs_full": 0.0},
            {"cell": "ED", "seeds": 1, "users": 3285, "mean": {"hr@5": 0.045, "hr@10": 0.07, "ndcg@10": 0.036},
             "sd": {"hr@5": None, "hr@10": None, "ndcg@10": None}, "vs_reference": {"hr@5": -0.1, "ndcg@10": -0.1},
             "paired_vs_reference": {"ndcg@10": {"difference": -0.004, "ci95": [-0.007, -0.001]}},
             "paper_hr@5_vs_full": 0.0817 / 0.0858 - 1},
        ],
    }
    (tmp_path / "ablations_industrial.json").write_text(json.dumps(ablations))
    # a table an `alignrec sweep` wrote under the same name is not this benchmark's: left out
    (tmp_path / "ablations_games.json").write_text(json.dumps({"name": "ablations_games", "rows": [{"cell": "x"}]}))
    block = "\n".join(readme_results.block_ablations())
    assert "| full | 3 seeds | 3,285 | 0.0500 ± 0.0020 | 0.0800 ± 0.0030 | 0.0400 ± 0.0010 | +0.0% | +0.0% |  | +0.0% |" in block
    assert "| ED | 1 seed | 3,285 | 0.0450 | 0.0700 | 0.0360 | -10.0% | -10.0% | -0.0040 [-0.0070, -0.0010] | -4.8% |" in block
    assert "**games**" not in block and "commit `def456`" in block
    assert ("What it shows: in NDCG@10, 1 of 1 variants fall below full (ED). The paper's ordering in HR@5 (full above "
            "ED) holds for ED. Paired on the same users, the NDCG@10 change is beyond the 95% interval for ED (lower) "
            "(0 of 1 within noise); 3 training seeds per cell, 1 for ED.") in block
    ablations["rows"][0].update(seeds=1, mean={"hr@5": 0.04, "hr@10": 0.08, "ndcg@10": 0.03})
    (tmp_path / "ablations_industrial.json").write_text(json.dumps(ablations))
    block = "\n".join(readme_results.block_ablations())
    assert ("in NDCG@10, 0 of 1 variants fall below full; at or above it: ED. The paper's ordering in HR@5 (full above "
            "ED) holds for none of them and not for ED. Paired on the same users, the NDCG@10 change is beyond the 95% "
            "interval for ED (lower) (0 of 1 within noise); one training seed each.") in block
    rendered = readme_results.render()
    assert rendered.index("### The main job") < rendered.index("### The LLM on the paper's data sets") < rendered.index(
        "### Ablations") < rendered.index("### Classic baselines")


def test_llm_summary_says_level_only_when_neither_interval_tells_the_rows_apart(readme_results):
    def record(llm_ci, paired_ci):
        rows = [{"model": "ours", "source": "run runs/x", "ndcg@10": 0.0786, "ci95": {"ndcg@10": llm_ci}},
                {"model": "sasrec", "source": "baselines_x.json", "ndcg@10": 0.0775}]
        vs = [{"llm": "ours", "model": "sasrec", "ndcg@10": 0.0780,
               "llm_minus_model": {"ndcg@10": {"difference": 0.0006, "ci95": paired_ci}}}]
        return {"runs": {"ours": "runs/x"}, "rows": rows, "llm_vs_classic": vs}

    summary = readme_results._llm_summary
    # the classic figure inside the LLM's interval and a paired interval across zero: level
    text = summary(record([0.0750, 0.0820], [-0.0010, 0.0020]))
    assert "0.0786 [0.0750, 0.0820], level with the best classic model here (sasrec, 0.0775; 1.01x, inside the " \
           "LLM row's 95% interval)" in text and "+0.0006 [-0.0010, +0.0020], within noise" in text
    # the paired comparison tells them apart: the plain side, however wide the LLM's own interval
    assert "0.0820], above the best classic model here (sasrec, 0.0775; 1.01x);" in summary(
        record([0.0750, 0.0820], [0.0001, 0.0011]))
    # the classic figure outside the LLM's interval: above
    assert ", above the best classic model" in summary(record([0.0780, 0.0790], [-0.0010, 0.0020]))


def test_ablation_summary_names_the_cells_with_fewer_seeds(readme_results):
    def row(cell, seeds, ndcg):
        return {"cell": cell, "seeds": seeds, "mean": {"hr@5": ndcg, "ndcg@10": ndcg}, "paper_hr@5_vs_full": None}

    text = readme_results._ablation_summary(
        {"reference": "full", "rows": [row("full", 2, 0.07), row("ED", 2, 0.06), row("LC-Rec format", 1, 0.03)]})
    assert text == ("What it shows: in NDCG@10, 2 of 2 variants fall below full (ED, LC-Rec format); "
                    "2 training seeds per cell, 1 for LC-Rec format.")
    same = readme_results._ablation_summary({"reference": "full", "rows": [row("full", 3, 0.07), row("ED", 3, 0.08)]})
    assert same.endswith("at or above it: ED; 3 training seeds each.")


def test_seed_comparisons_say_where_the_llm_wins_and_loses(readme_results, tmp_path, monkeypatch):
    monkeypatch.setattr(readme_results, "RESULTS", tmp_path)
    assert readme_results.block_seeds() == []  # no seeds_*.json: no block

    def row(protocol, model, kind, values, gap=None):
        return {"protocol": protocol, "model": model, "kind": kind, "seeds": 2, "ndcg@10 per seed": values,
                "hr@10 per seed": values, "ndcg@10": sum(values) / 2, "hr@10": sum(values) / 2,
                **({"ndcg@10 - best classic": gap} if gap else {})}

    above = {"against": "sasrec", "difference": 0.01, "ratio": 1.15, "ci95": [0.002, 0.018]}
    below = {"against": "fmlp", "difference": -0.01, "ratio": 0.9, "ci95": [-0.02, -0.001]}
    record = {"description": "Two seeds.", "command": "python benchmarks/seeds.py", "date": "2026-12-04T00:00:00+00:00",
              "git_commit": "abc123",
              "rows": [row("main", "LLM: default", "LLM", [0.07, 0.08], above), row("main", "sasrec", "classic", [0.06, 0.07]),
                       row("seen excluded", "LLM: default", "LLM", [0.09, 0.10], below),
                       row("seen excluded", "fmlp", "classic", [0.10, 0.11])]}
    (tmp_path / "seeds_x.json").write_text(json.dumps(record))
    block = "\n".join(readme_results.block_seeds())
    assert ("Verdict (paired interval of the seed means; the best classic model these runs trained, see the baselines "
            "table for the others): main: LLM: default 1.15x sasrec (above it); "
            "seen excluded: LLM: default 0.90x fmlp (below it).") in block
    assert "| LLM: default | 0.0700, 0.0800 | 0.0750 |" in block and "*seen excluded*" in block
    assert "Source: [`seeds_x.md`](benchmarks/results/seeds_x.md)" in block


def test_fusion_block_says_what_the_llm_adds(readme_results, tmp_path, monkeypatch):
    monkeypatch.setattr(readme_results, "RESULTS", tmp_path)
    assert readme_results.block_fusion() == []  # no fusion_*.json: no block

    def rows(protocol, fused, gap):
        alone = [{"protocol": protocol, "model": m, "seeds": 1, "ndcg@10 per seed": [v], "hr@10 per seed": [v],
                  "ndcg@10": v, "hr@10": v} for m, v in (("LLM item head", 0.06), ("fmlp", 0.07))]
        mixed = {"protocol": protocol, "model": "fused", "seeds": 1, "ndcg@10 per seed": [fused], "hr@10 per seed": [fused],
                 "ndcg@10": fused, "hr@10": fused, "a per seed": [0.6],
                 "ndcg@10 - fmlp": {"difference": fused - 0.07, "ratio": fused / 0.07, "ci95": gap},
                 "ndcg@10 - LLM item head": {"difference": fused - 0.06, "ratio": fused / 0.06, "ci95": [0.001, 0.02]}}
        curve = {"protocol": protocol, "model": "test NDCG@10 by a (not used to choose)", "seeds": 1,
                 "by a": {"0.0": 0.06, "0.5": fused, "1.0": 0.07}}
        return [*alone, mixed, curve]

    record = {"description": "One seed.", "command": "python benchmarks/fusion.py", "date": "2026-12-07T00:00:00+00:00",
              "git_commit": "abc123", "classic": "fmlp",
              "rows": rows("main", 0.0714, [-0.003, 0.006]) + rows("seen excluded", 0.084, [0.004, 0.02])}
    (tmp_path / "fusion_x.json").write_text(json.dumps(record))
    block = "\n".join(readme_results.block_fusion())
    assert ("What the LLM adds to the classic model (paired interval of the seed means): main: the fusion 1.02x fmlp "
            "(a tie with it); seen excluded: the fusion 1.20x fmlp (above it).") in block
    assert "| fused | 0.0714 | 0.0714 | 0.0714 | 0.6 | +0.0014 [-0.0030, +0.0060] (1.02x) |" in block
    assert "| 0.5 | 0.0714 |" in block and "*seen excluded*" in block
    assert "Source: [`fusion_x.md`](benchmarks/results/fusion_x.md)" in block
