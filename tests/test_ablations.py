"""benchmarks/ablations.py on a tiny sweep (configs/tiny.yaml, two cells) run with two seeds: the
table's means and standard deviations are those of the cells' own figures; replicates that
cannot be compared are refused."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from benchmark_scripts import TINY, load_script

from alignrec.cli import main as alignrec
from alignrec.utils.io import read_json

CELLS = ("full", "lr 0.02")


@pytest.fixture(scope="module")
def script():
    return load_script("ablations")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Path]:
    """The sweep's folders for finetune seeds 42 (the default) and 7, with their results written beside them."""
    root = tmp_path_factory.mktemp("ablations")
    config = root / "sweep.yaml"
    config.write_text(f"name: tiny_ablations\nbase: {TINY}\ncells:\n  - {{name: full, set: {{}}}}\n"
                      "  - {name: lr 0.02, set: {finetune.learning_rate: 0.02}}\n")
    folders = {}
    for name, overrides in (("seed42", []), ("seed7", ["--set", "finetune.seed=7"])):
        folders[name] = root / name
        assert alignrec(["sweep", str(config), "--set", "threads=1", *overrides, "--out", str(folders[name]),
                         "--results", str(root / f"results-{name}")]) == 0
        assert sorted(p.name for p in (folders[name] / "cells").glob("*.json")) == ["full.json", "lr_0.02.json"]
        assert (root / f"results-{name}" / "tiny_ablations_synthetic.json").is_file()  # --results, not benchmarks/results
    return folders


def cell_figures(folder: Path, cell: str) -> dict:
    return read_json(folder / "cells" / f"{cell.replace(' ', '_')}.json")["row"]


def test_two_seeds_give_mean_and_sd(script, sweeps, tmp_path):
    json_path, md_path = script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed42"]), "--sweep",
                                      str(sweeps["seed7"]), "--results-dir", str(tmp_path)])
    record = read_json(json_path)
    rows = {row["cell"]: row for row in record["rows"]}
    assert [row["cell"] for row in record["rows"]] == ["full", "lr 0.02"]  # the reference first
    for cell in CELLS:
        a, b = cell_figures(sweeps["seed42"], cell), cell_figures(sweeps["seed7"], cell)
        row = rows[cell]
        assert row["seeds"] == 2 and row["users"] == 48 and row["ci95"] is None
        assert [s["finetune"] for s in row["seed_values"]] == [42, 7]
        for metric in ("hr@5", "ndcg@10"):
            assert row["mean"][metric] == pytest.approx((a[metric] + b[metric]) / 2)
            assert row["sd"][metric] == pytest.approx(abs(a[metric] - b[metric]) / math.sqrt(2))  # sd of two values
    seeds_differ = [cell_figures(sweeps["seed42"], c)["ndcg@10"] != cell_figures(sweeps["seed7"], c)["ndcg@10"]
                    for c in CELLS]
    assert any(seeds_differ)  # the seed changes the results: the sd checks can fail
    lr = rows["lr 0.02"]
    assert lr["vs_reference"]["ndcg@10"] == pytest.approx(lr["mean"]["ndcg@10"] / rows["full"]["mean"]["ndcg@10"] - 1)
    assert rows["full"]["paper_hr@5_vs_full"] == 0.0 and lr["paper_hr@5"] is None
    markdown = md_path.read_text()
    full = rows["full"]
    assert (f"| full | 2 seeds | 48 | {full['mean']['hr@1']:.4f} ± {full['sd']['hr@1']:.4f} |") in markdown
    assert f"| {100 * lr['vs_reference']['ndcg@10']:+.1f}% |" in markdown


def test_one_seed_says_so(script, sweeps, tmp_path):
    json_path, md_path = script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed7"]), "--reference", "lr 0.02",
                                      "--results-dir", str(tmp_path)])
    rows = {row["cell"]: row for row in read_json(json_path)["rows"]}
    figures = cell_figures(sweeps["seed7"], "full")
    assert rows["full"]["mean"] == {m: figures[m] for m in script.METRICS}
    assert rows["full"]["sd"]["ndcg@10"] is None and rows["full"]["ci95"] == figures["ci95"]
    interval = figures["ci95"]["ndcg@10"]
    assert (f"| full | 1 seed | 48 | {figures['hr@1']:.4f} | {figures['hr@5']:.4f} | {figures['hr@10']:.4f} | "
            f"{figures['ndcg@5']:.4f} | {figures['ndcg@10']:.4f} | [{interval[0]:.4f}, {interval[1]:.4f}] |") in md_path.read_text()
    assert rows["lr 0.02"]["vs_reference"]["hr@5"] == 0.0
    # the paired difference from the reference cell, user by user: its mean is the difference of the two cells' figures
    lr = cell_figures(sweeps["seed7"], "lr 0.02")
    paired = rows["full"]["paired_vs_reference"]["ndcg@10"]
    assert paired["difference"] == pytest.approx(figures["ndcg@10"] - lr["ndcg@10"], abs=1e-9)
    assert figures["ndcg@10"] != lr["ndcg@10"] and paired["ci95"][0] <= paired["difference"] <= paired["ci95"][1]
    assert rows["lr 0.02"]["paired_vs_reference"] is None
    low, high = paired["ci95"]
    assert f"| {paired['difference']:+.4f} [{low:+.4f}, {high:+.4f}] |" in md_path.read_text()


def copy_replicate(sweep: Path, into: Path, edit) -> Path:
    """A sweep folder holding the ``full`` cell of ``sweep`` with a copy of its evaluation, edited by ``edit``."""
    summary = read_json(sweep / "cells" / "full.json")
    evaluation = into / "evaluate"
    shutil.copytree(summary["stages"]["evaluate"], evaluation)
    edit(evaluation)
    summary["stages"]["evaluate"] = str(evaluation)
    (into / "cells").mkdir(parents=True)
    (into / "cells" / "full.json").write_text(json.dumps(summary))
    return into


def test_replicates_that_cannot_be_compared(script, sweeps, tmp_path):
    out = ["--results-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=r"each sweep folder once"):
        script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed7"]), "--sweep", str(sweeps["seed7"]), *out])
    # checked before anything is read: a folder given twice is named even when it holds nothing
    with pytest.raises(SystemExit, match=r"each sweep folder once"):
        script.main(["--dataset", "tiny", "--sweep", str(tmp_path / "empty"), "--kept", str(tmp_path / "empty"), *out])
    with pytest.raises(SystemExit, match=r"cell 'full': .*seed7/cells/full.json and .*seed7/cells/full.json ran the same "
                                         r"seeds \(behaviour 2024, tokenizer 0, tasks 42, finetune 7\)"):
        script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed7"]), "--sweep", str(sweeps["seed7"]) + "/.", *out])

    def other_users(evaluation: Path) -> None:
        manifest = read_json(evaluation / "shards" / "manifest.json")
        manifest["settings"]["rows_sha256"] = "0" * 64
        (evaluation / "shards" / "manifest.json").write_text(json.dumps(manifest))

    moved = copy_replicate(sweeps["seed7"], tmp_path / "other-users", other_users)
    with pytest.raises(SystemExit, match=r"other-users/cells/full.json scored other test users than .*'rows_sha256': '0000"):
        script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed42"]), "--sweep", str(moved), *out])

    def sampled(evaluation: Path) -> None:
        metrics = read_json(evaluation / "metrics.json")
        metrics["sampled"] = True
        (evaluation / "metrics.json").write_text(json.dumps(metrics))

    sample = copy_replicate(sweeps["seed7"], tmp_path / "sampled", sampled)
    with pytest.raises(SystemExit, match=r"sampled/cells/full.json: the evaluation scored a sample of 48 of 48"):
        script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed42"]), "--sweep", str(sample), *out])
    _, md_path = script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed42"]), "--sweep", str(sample),
                              "--allow-sampled", *out])
    markdown = md_path.read_text()
    assert "SAMPLED: the evaluations" in markdown and "different numbers of seeds (1, 2)" in markdown

    broken = tmp_path / "broken" / "cells"
    broken.mkdir(parents=True)
    (broken / "full.json").write_text(json.dumps({"cell": "full", "row": {"hr@1": 0.1}, "stages": {}}))
    with pytest.raises(SystemExit, match=r"broken/cells/full.json: expected the metrics .* in row and the prepare and "
                                         r"evaluate stages; missing \['row.hr@5', 'row.hr@10', 'row.ndcg@5', 'row.ndcg@10', "
                                         r"'stages.prepare', 'stages.evaluate'\]$"):
        script.main(["--dataset", "tiny", "--sweep", str(broken.parent), *out])
    with pytest.raises(SystemExit, match=r"--reference 'nope': no such cell; cells are \['full', 'lr 0.02'\]"):
        script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed7"]), "--reference", "nope", *out])
    with pytest.raises(SystemExit, match=r"empty/cells: no cell summaries"):
        script.main(["--dataset", "tiny", "--sweep", str(tmp_path / "empty"), *out])


def test_the_readme_block_reads_the_results_file(script, sweeps, tmp_path, monkeypatch):
    readme = load_script("readme_results")
    script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed42"]), "--sweep", str(sweeps["seed7"]),
                 "--results-dir", str(tmp_path)])
    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    monkeypatch.setattr(readme, "REAL_DATASETS", ("tiny",))
    block = "\n".join(readme.block_ablations())
    rows = {row["cell"]: row for row in read_json(tmp_path / "ablations_tiny.json")["rows"]}
    lr = rows["lr 0.02"]
    assert (f"| lr 0.02 | 2 seeds | 48 | {lr['mean']['hr@5']:.4f} ± {lr['sd']['hr@5']:.4f} | "
            f"{lr['mean']['hr@10']:.4f} ± {lr['sd']['hr@10']:.4f} | {lr['mean']['ndcg@10']:.4f} ± {lr['sd']['ndcg@10']:.4f} | "
            f"{100 * lr['vs_reference']['ndcg@10']:+.1f}% |") in block


def test_kept_sweep_folders_come_back_in_a_later_table(script, sweeps, tmp_path):
    """Sweep folders do not outlive their machine: per_user/ablations_<dataset>.json keeps each cell's per-user ranks."""
    out = ["--results-dir", str(tmp_path)]
    both = read_json(script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed42"]), "--sweep", str(sweeps["seed7"]),
                                  *out])[0])
    kept = read_json(tmp_path / "per_user" / "ablations_tiny.json")["entries"]
    assert set(kept) == {str(sweeps["seed42"]), str(sweeps["seed7"])}
    full7 = kept[str(sweeps["seed7"])]["cells"]["full"]
    assert len(full7["ranks"]) == 48 and set(full7["ranks"]) <= set("0123456789.") and full7["seeds"]["finetune"] == 7
    assert full7["row"] == cell_figures(sweeps["seed7"], "full")
    # seed 42 kept (its folder may be gone by now), seed 7 read again: the same table, the paired column included
    again = read_json(script.main(["--dataset", "tiny", "--kept", str(sweeps["seed42"]), "--sweep", str(sweeps["seed7"]),
                                   *out])[0])
    assert again["rows"] == both["rows"]
    assert again["kept"] == {str(sweeps["seed42"]): f"per_user/ablations_tiny.json, commit {both['git_commit'][:12]}"}
    with pytest.raises(SystemExit, match=r"cell 'full': .*ablations_tiny.json: entries.*seed7.cells.full and "
                                         r".*seed7/cells/full.json ran the same seeds"):
        script.main(["--dataset", "tiny", "--kept", str(sweeps["seed7"]), "--sweep", str(sweeps["seed7"]) + "/", *out])
    with pytest.raises(SystemExit, match=r"--kept nowhere: no such sweep folder in .*per_user/ablations_tiny.json"):
        script.main(["--dataset", "tiny", "--kept", "nowhere", *out])


def test_a_folder_of_a_results_file_older_than_the_kept_ranks_comes_back_with_its_figures_only(script, sweeps, tmp_path):
    out = ["--results-dir", str(tmp_path)]
    old = read_json(script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed7"]), *out])[0])
    (tmp_path / "per_user" / "ablations_tiny.json").unlink()  # as written before replicates were kept
    json_path, md_path = script.main(["--dataset", "tiny", "--kept", str(sweeps["seed7"]), *out])
    record = read_json(json_path)
    assert record["rows"] == old["rows"]  # figures, seeds, interval and the paired column as they were
    assert "figures only" in record["kept"][str(sweeps["seed7"])] and "'figures only' folders" in md_path.read_text()
    # a second seed beside it: mean and sd of the two, the paired column now from the folder with per-user ranks
    two = {row["cell"]: row for row in read_json(script.main(
        ["--dataset", "tiny", "--kept", str(sweeps["seed7"]), "--sweep", str(sweeps["seed42"]), *out])[0])["rows"]}
    a, b = cell_figures(sweeps["seed7"], "lr 0.02"), cell_figures(sweeps["seed42"], "lr 0.02")
    assert two["lr 0.02"]["seeds"] == 2 and two["lr 0.02"]["mean"]["ndcg@10"] == pytest.approx((a["ndcg@10"] + b["ndcg@10"]) / 2)
    assert two["lr 0.02"]["paired_vs_reference"]["folder"] == str(sweeps["seed42"])
    paired = two["lr 0.02"]["paired_vs_reference"]["ndcg@10"]["difference"]
    assert paired == pytest.approx(b["ndcg@10"] - cell_figures(sweeps["seed42"], "full")["ndcg@10"], abs=1e-9)


def test_a_cell_with_fewer_seeds_is_measured_against_the_reference_of_its_own_seeds(script, sweeps, tmp_path):
    # a second seed folder that ran the reference cell only (a seed split over sessions)
    only_full = tmp_path / "seed7-full-only"
    (only_full / "cells").mkdir(parents=True)
    shutil.copy(sweeps["seed7"] / "cells" / "full.json", only_full / "cells" / "full.json")
    json_path, md_path = script.main(["--dataset", "tiny", "--sweep", str(sweeps["seed42"]), "--sweep", str(only_full),
                                      "--results-dir", str(tmp_path / "out")])
    rows = {row["cell"]: row for row in read_json(json_path)["rows"]}
    assert rows["full"]["seeds"] == 2 and rows["lr 0.02"]["seeds"] == 1
    full42, lr42 = cell_figures(sweeps["seed42"], "full"), cell_figures(sweeps["seed42"], "lr 0.02")
    full7 = cell_figures(sweeps["seed7"], "full")
    assert full42["ndcg@10"] != full7["ndcg@10"]  # else the mean over both seeds would give the same change
    lr = rows["lr 0.02"]
    assert lr["vs_reference"]["ndcg@10"] == pytest.approx(lr42["ndcg@10"] / full42["ndcg@10"] - 1)
    assert lr["vs_reference_folders"] == [str(sweeps["seed42"])]
    assert rows["full"]["vs_reference"]["ndcg@10"] == 0.0
    assert f"| {100 * lr['vs_reference']['ndcg@10']:+.1f}% |" in md_path.read_text()
