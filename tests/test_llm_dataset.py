"""benchmarks/llm_dataset.py on tiny pipeline runs: the rows hold the figures of the run folders
and of the baselines file, worked out here by hand; runs that cannot be compared are refused."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import load_script, run_tiny_pipeline

from alignrec.data import load_dataset
from alignrec.metrics import bootstrap_interval
from alignrec.utils.io import read_json

BASELINES = {"models": {"sasrec": {
    "test": {"hr@1": 0.11, "hr@5": 0.22, "hr@10": 0.33, "ndcg@5": 0.15, "ndcg@10": 0.19},
    "test_ci95": {"hr@10": [0.30, 0.36], "ndcg@10": [0.17, 0.21]}, "git_commit": "0123456789abcdef0123",
    "stop_reason": "early_stopping"}, "fmlp": {
    "test": {"hr@1": 0.12, "hr@5": 0.23, "hr@10": 0.34, "ndcg@5": 0.16, "ndcg@10": 0.95},
    "git_commit": "fedcba9876543210", "stop_reason": "time_budget"}}}


@pytest.fixture(scope="module")
def script():
    return load_script("llm_dataset")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny pipeline runs on different data (synthetic seeds 3 and 4) and a sampled copy of the first."""
    from alignrec.evaluate.recipe import EvaluateConfig, evaluate

    root = tmp_path_factory.mktemp("llm-dataset")
    first = run_tiny_pipeline(root / "a")
    other = run_tiny_pipeline(root / "b", "data.synthetic.seed=4")
    sampled = root / "sampled"
    shutil.copytree(first, sampled)
    evaluate(EvaluateConfig(beam_size=10, users=20, seed=1), sampled, out=sampled / "evaluate", resume=False)
    return {"a": first, "b": other, "sampled": sampled}


def hand_ranks(run: Path) -> np.ndarray:
    """Rank of each test user's item in the LLM's list (10 = not in it), read from the files directly."""
    dataset = load_dataset(run / "dataset")
    test = dataset.split("test")
    target_of = {dataset.user_ids[int(u)]: dataset.item_ids[int(t)] for u, t in zip(test.user_index, test.targets, strict=True)}
    ranks = []
    for line in (run / "evaluate" / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        items = record["items"]
        target = target_of[record["user_id"]]
        ranks.append(items.index(target) if target in items else 10)
    return np.array(ranks)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    return np.array([1 / math.log2(r + 2) if r < k else 0.0 for r in ranks])


def test_rows_hold_the_run_and_baselines_figures(script, runs, tmp_path):
    baselines = tmp_path / "baselines_fake.json"
    baselines.write_text(json.dumps(BASELINES))
    json_path, md_path = script.main(["--dataset", "tiny", "--llm", "ours (alignment codes, dense)", str(runs["a"]),
                                      "--baselines", str(baselines), "--results-dir", str(tmp_path / "out")])
    assert json_path == tmp_path / "out" / "llm_tiny.json"
    record = read_json(json_path)
    llm, sasrec, fmlp = record["rows"]
    ranks = hand_ranks(runs["a"])
    assert len(ranks) == 48 and 0 < (ranks == 0).mean() < 1  # hits at the top and below it: the checks can fail
    per_user = ndcg(ranks, 10)
    assert llm["model"] == "ours (alignment codes, dense)" and llm["users"] == 48
    assert llm["hr@1"] == pytest.approx((ranks < 1).mean(), abs=1e-6)
    assert llm["hr@5"] == pytest.approx((ranks < 5).mean(), abs=1e-6)
    assert llm["ndcg@5"] == pytest.approx(ndcg(ranks, 5).mean(), abs=1e-6)
    assert llm["ndcg@10"] == pytest.approx(per_user.mean(), abs=1e-6)
    assert llm["ci95"]["ndcg@10"] == pytest.approx(list(bootstrap_interval(per_user)), abs=1e-6)
    assert llm["ci95"]["ndcg@10"][0] < per_user.mean() < llm["ci95"]["ndcg@10"][1]
    finetune = read_json(runs["a"] / "finetune" / "metrics.json")
    assert llm["steps"] == 100 == finetune["steps"]  # configs/tiny.yaml: max_steps 100
    assert llm["train_min"] == round(finetune["train_seconds_total"] / 60, 1)
    # the classic row is the file's, with its commit
    assert sasrec == {"model": "sasrec", "source": "baselines_fake.json (commit 0123456789ab)", "users": None,
                      **BASELINES["models"]["sasrec"]["test"], "ci95": BASELINES["models"]["sasrec"]["test_ci95"],
                      "stop_reason": "early_stopping"}
    # a model stopped by its time budget says on its row that it is a lower bound, and so does the README's summary
    assert fmlp["source"] == "baselines_fake.json (commit fedcba987654, time budget: a lower bound)"
    assert fmlp["ci95"] is None and fmlp["stop_reason"] == "time_budget"
    summary = load_script("readme_results")._llm_summary(record)
    assert "the best classic model here (fmlp, 0.9500, stopped by its time budget: a lower bound;" in summary
    budget = record["budgets"][0]
    assert budget["codes"] == "alignment 6 x 6" and budget["layers"] == 2 and budget["head"] == "code"
    assert budget["format"] == "dense" and budget["tokens"] == finetune["input_tokens_seen"]
    assert budget["code_tokens"] == int(finetune["code_label_tokens_per_epoch"] * finetune["epochs"])
    assert not budget["finetune_time_partial"] and not record["sampled"]
    # paired with the run's own SASRec: its NDCG@10 on every user is what its trainer recorded
    paired = {row["model"]: row for row in record["llm_vs_classic"]}
    assert set(paired) == {"dccf", "sasrec", "pop"}
    recorded = read_json(runs["a"] / "collab" / "sasrec" / "metrics.json")["test"]["ndcg@10"]
    assert paired["sasrec"]["ndcg@10"] == pytest.approx(recorded, abs=1e-6)
    difference = paired["sasrec"]["llm_minus_model"]["ndcg@10"]
    assert difference["difference"] == pytest.approx(per_user.mean() - recorded, abs=1e-6)
    assert difference["ci95"][0] < difference["difference"] < difference["ci95"][1]
    markdown = md_path.read_text()
    after_header = markdown.partition("bench lock held: ")[2].split("\n")
    assert after_header[1] == "" and after_header[2]  # a blank line between the header and the first table
    assert ("| sasrec | baselines_fake.json (commit 0123456789ab) |  | 0.1100 | 0.2200 | 0.3300 | [0.3000, 0.3600] | "
            "0.1500 | 0.1900 | [0.1700, 0.2100] |") in markdown
    assert f"| ours (alignment codes, dense) | run {runs['a']} | 48 | {(ranks < 1).mean():.4f} |" in markdown
    assert f"| sasrec | 48 | 1.0000 | {recorded:.4f} | +0.0000 [+0.0000, +0.0000] | {per_user.mean() - recorded:+.4f} [" in markdown
    assert "No paper rows for tiny" in markdown and "SAMPLED" not in markdown


def test_sampled_runs_need_the_flag_and_say_so(script, runs, tmp_path):
    out = ["--results-dir", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"evaluate/metrics.json: sampled is true \(20 of 48 test users\)"):
        script.main(["--dataset", "tiny", "--llm", "sampled", str(runs["sampled"]), *out])
    json_path, md_path = script.main(["--dataset", "tiny", "--llm", "sampled", str(runs["sampled"]), "--allow-sampled", *out])
    record = read_json(json_path)
    assert record["sampled"] and record["rows"][0]["users"] == 20
    assert "(20 test users, SAMPLED)" in md_path.read_text() and "SAMPLED: at least one" in md_path.read_text()


@pytest.mark.parametrize(("first", "second", "message"), [
    ("a", "sampled", r"'second' \(.*sampled\) and 'first' \(.*a\) were scored on different test users \(20 vs 48; "),
    ("a", "b", r"scored on different test users \(48 vs 48; first difference, \(user, test item\): \('"),
])
def test_runs_on_other_users_are_not_mixed(script, runs, tmp_path, first, second, message):
    with pytest.raises(SystemExit, match=message):
        script.main(["--dataset", "tiny", "--llm", "first", str(runs[first]), "--llm", "second", str(runs[second]),
                     "--allow-sampled", "--results-dir", str(tmp_path)])
    assert not (tmp_path / "llm_tiny.json").exists()


def test_bad_inputs_name_the_file(script, runs, tmp_path):
    out = ["--results-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=r"dataset: 48 test users, but instruments has 24,772; is this run on instruments"):
        script.main(["--dataset", "instruments", "--llm", "x", str(runs["a"]), *out])
    with pytest.raises(SystemExit, match=r"nowhere: expected a run folder or a sweep cell summary"):
        script.main(["--dataset", "tiny", "--llm", "x", str(tmp_path / "nowhere"), *out])
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(SystemExit, match=r"unfinished/evaluate/metrics.json: missing; expected the metrics of `alignrec evaluate`"):
        script.main(["--dataset", "tiny", "--llm", "x", str(tmp_path / "unfinished"), *out])
    bad = tmp_path / "baselines_bad.json"
    bad.write_text(json.dumps({"models": {"sasrec": {"test": {"hr@1": 0.1}}}}))
    with pytest.raises(SystemExit, match=r"baselines_bad.json: models.sasrec.test: expected the metrics"):
        script.main(["--dataset", "tiny", "--llm", "x", str(runs["a"]), "--baselines", str(bad), *out])
    with pytest.raises(SystemExit, match=r"each label once"):
        script.main(["--dataset", "tiny", "--llm", "x", str(runs["a"]), "--llm", "x", str(runs["a"]), *out])
    edited = tmp_path / "edited"
    shutil.copytree(runs["a"], edited, ignore=shutil.ignore_patterns("collab", "tasks", "backbone"))
    metrics = read_json(edited / "evaluate" / "metrics.json")
    metrics["metrics"]["ndcg@10"] += 0.01
    (edited / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SystemExit, match=r"predictions.jsonl: re-scored ndcg@10 is .* but metrics.json says"):
        script.main(["--dataset", "tiny", "--llm", "x", str(edited), *out])


def test_paper_rows(script):
    instruments = {row["model"]: row for row in script.paper_rows("instruments")}
    assert instruments["Semantic Convergence"] == {"model": "Semantic Convergence", "source": "paper (Llama-7B)",
                                                   "hr@1": 0.0731, "hr@5": 0.1022, "hr@10": 0.1268, "ndcg@5": 0.0879,
                                                   "ndcg@10": 0.0958}
    assert instruments["LC-Rec"]["ndcg@10"] == 0.0925 and len(instruments) == 7
    games = {row["model"]: row for row in script.paper_rows("games")}
    assert games["Semantic Convergence"]["hr@5"] == 0.0773 and "hr@1" not in games["LC-Rec"]
    assert games["DCCF"]["ndcg@10"] == 0.0486
    assert script.paper_rows("industrial") == []


def test_the_readme_block_reads_the_results_file(script, runs, tmp_path, monkeypatch):
    readme = load_script("readme_results")
    script.main(["--dataset", "tiny", "--llm", "ours", str(runs["a"]), "--results-dir", str(tmp_path)])
    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    monkeypatch.setattr(readme, "REAL_DATASETS", ("tiny",))
    block = "\n".join(readme.block_llm_datasets())
    ndcg10 = ndcg(hand_ranks(runs["a"]), 10).mean()
    assert "**tiny** (48 test users; LLM rows" in block
    assert f"| ours | run {runs['a']} | 48 |" in block and f"| {ndcg10:.4f} |" in block
    assert "| ours | sasrec | 48 | +0.0000 [+0.0000, +0.0000] |" in block


def test_a_sweep_cell_reads_like_a_run_folder_and_its_classic_models_stand_in_for_a_missing_baselines_file(
        script, runs, tmp_path):
    """A cell summary names its stage folders (alignrec sweep writes SWEEP/cells/<cell>.json): here those of run a."""
    run = runs["a"]
    cell = tmp_path / "cells" / "full.json"
    cell.parent.mkdir()
    cell.write_text(json.dumps({"cell": "full", "stages": {
        "prepare": str(run / "dataset"), "behaviour": str(run / "collab" / "dccf"),
        "baseline/sasrec": str(run / "collab" / "sasrec"), "tokenizer": str(run / "tokenizer"),
        "tasks": str(run / "tasks"), "finetune": str(run / "finetune"), "evaluate": str(run / "evaluate")}}))
    out = ["--baselines", str(tmp_path / "no_such_baselines.json")]
    from_folder = read_json(script.main(["--dataset", "tiny", "--llm", "x", str(run), *out,
                                         "--results-dir", str(tmp_path / "folder")])[0])
    json_path, md_path = script.main(["--dataset", "tiny", "--llm", "x", str(cell), *out,
                                      "--results-dir", str(tmp_path / "cell")])
    from_cell = read_json(json_path)
    llm, *classic = from_cell["rows"]
    assert llm["source"] == f"sweep cell {cell}" and from_folder["rows"][0]["source"] == f"run {run}"
    assert {k: v for k, v in llm.items() if k != "source"} == {k: v for k, v in from_folder["rows"][0].items() if k != "source"}
    assert from_cell["budgets"] == from_folder["budgets"]
    # no baselines file: the classic rows are the models trained beside the LLM, scored on every test user; the cell
    # names two of the run's three
    assert [row["model"] for row in classic] == ["dccf", "sasrec"]
    assert [row["model"] for row in from_folder["rows"][1:]] == ["dccf", "pop", "sasrec"]
    recorded = read_json(run / "collab" / "sasrec" / "metrics.json")["test"]
    assert classic[1]["users"] == 48 and classic[1]["source"] == "same run (collab/sasrec)"
    assert all(classic[1][m] == pytest.approx(recorded[m], abs=1e-6) for m in ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10"))
    assert [row["model"] for row in from_cell["llm_vs_classic"]] == ["dccf", "sasrec"]
    assert "no_such_baselines.json does not exist; the classic models trained in the first LLM run's folder" in md_path.read_text()
    cell.write_text(json.dumps({"cell": "full", "stages": {"prepare": str(run / "dataset")}}))
    with pytest.raises(SystemExit, match=r"full.json: stages: expected the folders of \['prepare', 'evaluate'"):
        script.main(["--dataset", "tiny", "--llm", "x", str(cell), *out, "--results-dir", str(tmp_path / "bad")])


def test_kept_rows_come_back_in_a_later_table_paired_and_checked_user_by_user(script, runs, tmp_path):
    """Run folders do not outlive their machine: per_user/llm_<dataset>.json keeps each row's per-user ranks."""
    out = ["--results-dir", str(tmp_path)]
    first = read_json(script.main(["--dataset", "tiny", "--llm", "ours", str(runs["a"]), *out])[0])
    kept = read_json(tmp_path / "per_user" / "llm_tiny.json")["entries"]["ours"]
    ranks = hand_ranks(runs["a"])
    assert kept["ranks"] == "".join(str(r) if r < 10 else "." for r in ranks) and kept["users"] == 48
    assert kept["git_commit"] == first["git_commit"] and set(kept["classic"]) == {"dccf", "pop", "sasrec"}
    # a later table: the kept row beside a new one scored from (here) the same run folder: identical figures and
    # paired rows, though the kept row's were computed from the kept characters alone
    json_path, md_path = script.main(["--dataset", "tiny", "--kept", "ours", "--llm", "again", str(runs["a"]), *out])
    record = read_json(json_path)
    assert [row["model"] for row in record["rows"][:2]] == ["ours", "again"]
    assert {k: v for k, v in record["rows"][0].items()} == first["rows"][0]
    assert record["rows"][1]["ndcg@10"] == first["rows"][0]["ndcg@10"]
    by_llm = {(r["llm"], r["model"]): r for r in record["llm_vs_classic"]}
    for model in ("dccf", "pop", "sasrec"):
        assert by_llm[("ours", model)]["llm_minus_model"] == by_llm[("again", model)]["llm_minus_model"]
    assert record["kept"] == {"ours": f"per_user/llm_tiny.json, commit {first['git_commit'][:12]}"}
    assert "Rows kept from an earlier run of this script" in md_path.read_text()
    # both rows stay kept; a row of other users is refused by the hash of the users
    assert set(read_json(tmp_path / "per_user" / "llm_tiny.json")["entries"]) == {"ours", "again"}
    with pytest.raises(SystemExit, match=r"'other' .* and 'ours' .* were scored on different test users \(48 vs 48; the "
                                         r"hashes of their \(user, test item\) lists differ\)"):
        script.main(["--dataset", "tiny", "--kept", "ours", "--llm", "other", str(runs["b"]), *out])
    with pytest.raises(SystemExit, match=r"--kept 'nope': no such LLM row in .*per_user/llm_tiny.json or .*llm_tiny.json; "
                                         r"kept rows: \['again', 'ours'\]"):
        script.main(["--dataset", "tiny", "--kept", "nope", *out])
    per_user = tmp_path / "per_user" / "llm_tiny.json"
    broken = read_json(per_user)
    broken["entries"]["ours"]["ranks"] = "x" + broken["entries"]["ours"]["ranks"][1:]
    per_user.write_text(json.dumps(broken))
    with pytest.raises(SystemExit, match=r"entries.ours: .*entries.ours.ranks: character 0 is 'x'; expected a digit"):
        script.main(["--dataset", "tiny", "--kept", "ours", *out])


def test_a_row_of_a_results_file_older_than_the_kept_ranks_comes_back_with_its_figures_only(script, runs, tmp_path):
    out = ["--results-dir", str(tmp_path)]
    first = read_json(script.main(["--dataset", "tiny", "--llm", "old", str(runs["a"]), *out])[0])
    (tmp_path / "per_user" / "llm_tiny.json").unlink()  # as written before rows were kept
    json_path, md_path = script.main(["--dataset", "tiny", "--kept", "old", "--llm", "new", str(runs["a"]), *out])
    record = read_json(json_path)
    assert record["rows"][0] == first["rows"][0]
    assert record["budgets"][0] == first["budgets"][0]
    assert [r for r in record["llm_vs_classic"] if r["llm"] == "old"] == first["llm_vs_classic"]
    assert record["kept"]["old"] == f"llm_tiny.json, commit {first['git_commit'][:12]}, figures only"
    assert "'figures only' rows keep their figures" in md_path.read_text()
    entry = read_json(tmp_path / "per_user" / "llm_tiny.json")["entries"]["old"]
    assert entry["ranks"] is None and entry["paired"] == first["llm_vs_classic"]
    # the figures-only row is kept from now on, and is still checked by its number of users; alone, it brings no
    # classic models of its run (their ranks were not kept): the table needs a baselines file then
    with pytest.raises(SystemExit, match=r"baselines_tiny.json: missing, and no LLM row has classic models"):
        script.main(["--dataset", "tiny", "--kept", "old", *out])
    baselines = tmp_path / "baselines_fake.json"
    baselines.write_text(json.dumps(BASELINES))
    alone = read_json(script.main(["--dataset", "tiny", "--kept", "old", "--baselines", str(baselines), *out])[0])
    assert alone["rows"][0] == first["rows"][0]
    with pytest.raises(SystemExit, match=r"'sampled' .* and 'old' .* scored on different test users \(20 vs 48; a row kept "
                                         r"without per-user ranks"):
        script.main(["--dataset", "tiny", "--kept", "old", "--llm", "sampled", str(runs["sampled"]), "--allow-sampled",
                     *out])
