"""The whole stage on a tiny data set: outputs, the inference == training property, uniqueness,
cold start, code descriptions, the CLI and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from alignrec.cli import main
from alignrec.data import load_dataset
from alignrec.errors import InputError
from alignrec.tokenizer.codes import ItemCodes, code_token
from alignrec.tokenizer.coldstart import ColdStartAssigner
from alignrec.tokenizer.model import TokenizerModel
from alignrec.tokenizer.train import load_raw_codes, train_tokenizer
from alignrec.utils.io import read_json

from tokenizer_helpers import same_partition, small_config

EXPECTED_FILES = {
    "codebooks.safetensors", "item_codes.parquet", "codes_meta.json", "assignment.safetensors", "report.json",
    "report.md", "report.png", "code_descriptions.json", "config.json",
}


@pytest.fixture(scope="module")
def trained(cluster_run, tiny_embedder, tmp_path_factory: pytest.TempPathFactory):
    """One training run shared by the tests of this module (they only read its folder)."""
    run, embeddings, groups = cluster_run
    config = small_config(levels=3, codebook_size=4, llm="tiny", llm_weight=0.5)
    out = tmp_path_factory.mktemp("trained") / "tok"
    result = train_tokenizer(config, run, embeddings=str(embeddings), out_dir=out, embedder=tiny_embedder)
    return result, run, embeddings, groups


def test_outputs_codes_and_report(trained) -> None:
    result, run, embeddings, groups = trained
    out = result.out_dir
    assert EXPECTED_FILES | {"text_embeddings.safetensors", "text_to_behaviour.safetensors"} <= {p.name for p in out.iterdir()}
    codes = ItemCodes.load(out)
    assert codes.num_items == 32 and codes.collision_rate() == 0.0
    assert codes.item_ids == load_dataset(run).item_ids
    # the four behaviour groups are exactly the level-1 codes (8 items each, capacity 8)
    assert same_partition(codes.codes[:, 0], groups)
    report = read_json(out / "report.json")
    assert report["collisions"]["final"] == 0.0
    assert report["text"]["items_with_vector"] == 32 and report["text"]["excluded_from_llm_loss"] == 0
    assert report["method_info"]["llm_alignment"] is True
    assert report["levels_final"][0]["used"] == 4 and report["levels_final"][0]["normalised_entropy"] == pytest.approx(1.0)
    assert "level1_match" in report["cold_start"]
    assert "raw (assignment rule" in (out / "report.md").read_text()
    assert read_json(out / "config.json")["stage"] == "tokenize"


def test_inference_on_training_embeddings_returns_training_codes(trained) -> None:
    result, _, embeddings, _ = trained
    vectors = load_file(str(embeddings))["item_embeddings"]
    model = TokenizerModel.load(result.out_dir)
    raw = load_raw_codes(result.out_dir)
    assert np.array_equal(model.encode(vectors), raw)
    assert np.array_equal(raw, result.raw_codes)


def test_code_descriptions_name_the_group_words(trained) -> None:
    result, run, _, groups = trained
    descriptions = read_json(result.out_dir / "code_descriptions.json")
    codes = ItemCodes.load(result.out_dir)
    assert list(descriptions) == codes.vocabulary()
    from alignrec.data.synthetic import GROUP_WORDS

    for code in range(4):
        entry = descriptions[code_token(0, code)]
        group = int(groups[codes.codes[:, 0] == code][0])
        assert entry["items"] == 8
        # the group's three words are in all its items and in no other group's (equal scores:
        # alphabetical); words every item has ("model", "music", ...) are not keywords
        assert entry["keywords"] == sorted(GROUP_WORDS[group])
        first, second, third = sorted(GROUP_WORDS[group])
        assert entry["description"].startswith(f"Items about {first}, {second} and {third}, e.g. ")


def test_cold_start_codes_are_unique_and_reserved(trained, tiny_embedder) -> None:
    result, _, embeddings, _ = trained
    vectors = load_file(str(embeddings))["item_embeddings"]
    assigner = ColdStartAssigner.load(result.out_dir, embedder=tiny_embedder)
    existing = {tuple(r) for r in assigner.codes.tolist()}
    # behaviour path: exact copies of existing items' embeddings must still get new codes
    copies = assigner.assign(behaviour_embeddings=vectors[:10], item_ids=[f"copy{i}" for i in range(10)])
    # text path through the ridge map
    texts = assigner.assign(texts=["Guitar string model 99", "A snare drum accessory"], item_ids=["t1", "t2"])
    new = [tuple(r) for r in np.concatenate([copies, texts]).tolist()]
    assert len(set(new)) == len(new) and not (set(new) & existing)
    extended = assigner.item_codes()
    assert extended.num_items == 44 and extended.collision_rate() == 0.0
    assert extended.item_ids[-2:] == ["t1", "t2"]
    assigner.save(result.out_dir.parent / "extended", new_from=32)
    reloaded = ItemCodes.load(result.out_dir.parent / "extended")
    assert np.array_equal(reloaded.codes, extended.codes)
    listed = read_json(result.out_dir.parent / "extended" / "new_items.json")
    assert [row["item_id"] for row in listed][:2] == ["copy0", "copy1"] and len(listed) == 12
    with pytest.raises(InputError, match="empty title"):
        assigner.assign(texts=["   "])
    # both text paths exist for an alignment tokenizer trained with text; each stays unique
    assert assigner.projection is not None and read_json(result.out_dir / "coldstart.json")["text_path"] in {"ridge", "projection"}
    for path in ("ridge", "projection"):
        assigner.text_path = path
        more = assigner.assign(texts=["Violin bow rosin", "Violin bow"])
        assert ItemCodes(assigner.codes, assigner.codebook_sizes).collision_rate() == 0.0 and more.shape == (2, 3)


def test_many_new_items_never_collide(trained) -> None:
    result, _, embeddings, _ = trained
    assigner = ColdStartAssigner.load(result.out_dir)
    rng = np.random.default_rng(0)
    vectors = load_file(str(embeddings))["item_embeddings"]
    crowd = np.repeat(vectors[:1], 20, axis=0) + 1e-6 * rng.standard_normal((20, vectors.shape[1])).astype(np.float32)
    codes = assigner.assign(behaviour_embeddings=crowd)
    assert ItemCodes(assigner.codes, assigner.codebook_sizes).collision_rate() == 0.0
    # the crowd stays near its neighbour: same level-1 code while that subtree has room (4 x 4 = 16 paths)
    assert (codes[:, 0] == codes[0, 0]).sum() >= 8


def test_behaviour_only_data_says_so(cluster_run, tmp_path: Path) -> None:
    run, embeddings, _ = cluster_run
    result = train_tokenizer(small_config(method="rqkmeans", llm="none", levels=1, codebook_size=4), run, embeddings=str(embeddings), out_dir=tmp_path / "km")
    report = result.report
    # L = 1 cannot hold 32 items in 4 codes: the resolver falls back to an extra level
    assert report["collisions"]["raw"] == pytest.approx(1 - 4 / 32)
    assert report["resolution"]["strategy"] == "extra_level" and result.item_codes.num_levels == 2
    assert result.item_codes.collision_rate() == 0.0
    assert "behaviour only" in report["text"]["summary"]
    assigner = ColdStartAssigner.load(result.out_dir)
    with pytest.raises(InputError, match="behaviour embedding"):
        assigner.assign(texts=["a guitar"])


def test_embedding_rows_must_match_the_data_set(cluster_run, tmp_path: Path) -> None:
    run, _, _ = cluster_run
    bad = tmp_path / "bad.safetensors"
    save_file({"item_embeddings": np.zeros((5, 3), dtype=np.float32)}, str(bad))
    with pytest.raises(InputError, match="5 embedding rows, but the data set has 32 items"):
        train_tokenizer(small_config(), run, embeddings=str(bad), out_dir=tmp_path / "x")
    with pytest.raises(InputError, match="no --embeddings given"):
        train_tokenizer(small_config(), run, out_dir=tmp_path / "x")


def test_cli_train_and_assign(cluster_run, tmp_path: Path, capsys) -> None:
    from alignrec.data.synthetic import GROUP_WORDS
    from alignrec.llm.tiny import build_tiny_backbone

    run, embeddings, _ = cluster_run
    words = [w for g in GROUP_WORDS for w in g] + [w.title() for g in GROUP_WORDS for w in g]
    model, tokenizer = build_tiny_backbone(words=words + ["model", "A", "accessory", "number"], hidden_size=16)
    llm_dir = tmp_path / "tiny-llm"
    model.save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    out = tmp_path / "cli-tok"
    argv = [
        "tokenize", "train", "--data", str(run), "--embeddings", str(embeddings), "--out", str(out), "--levels", "3",
        "--codebook-size", "4", "--rounds", "2", "--steps-per-round", "3", "--llm", str(llm_dir),
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["final_collision_rate"] == 0.0 and summary["items"] == 32
    items = tmp_path / "new.jsonl"
    items.write_text('{"item_id": "n1", "title": "Violin bow", "description": "rosin"}\n{"item_id": "n2", "title": "Flute reed"}\n')
    assert main(["tokenize", "assign", "--tokenizer", str(out), "--items", str(items), "--out", str(tmp_path / "ext")]) == 0
    extended = ItemCodes.load(tmp_path / "ext")
    assert extended.num_items == 34 and extended.collision_rate() == 0.0 and extended.item_ids[-2:] == ["n1", "n2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "n1"}\n{"title": "no id"}\n')
    assert main(["tokenize", "assign", "--tokenizer", str(out), "--items", str(bad), "--out", str(tmp_path / "e2")]) == 2
    assert "line 2: missing field 'item_id'" in capsys.readouterr().err


def test_cold_start_evaluation_fits_apart_from_the_production_tokenizer(cluster_run, tiny_embedder, tmp_path: Path) -> None:
    """Holding text out for the cold-start score must not change the tokenizer later stages use."""
    run, embeddings, _ = cluster_run
    runs = {}
    for holdout in (0.25, 0.0):
        config = small_config(levels=3, codebook_size=4, llm="tiny", llm_weight=0.5, coldstart_holdout=holdout)
        runs[holdout] = train_tokenizer(config, run, embeddings=str(embeddings), out_dir=tmp_path / str(holdout),
                                        embedder=tiny_embedder)
    evaluated, plain = runs[0.25], runs[0.0]
    assert np.array_equal(ItemCodes.load(evaluated.out_dir).codes, ItemCodes.load(plain.out_dir).codes)
    for name in ("codebooks.safetensors", "assignment.safetensors", "text_to_behaviour.safetensors"):
        first, second = load_file(str(evaluated.out_dir / name)), load_file(str(plain.out_dir / name))
        assert sorted(first) == sorted(second) and all(np.array_equal(first[k], second[k]) for k in first), name
    assert any(key.startswith("extra.llm_projection.") for key in load_file(str(evaluated.out_dir / "codebooks.safetensors")))

    cold = evaluated.report["cold_start"]
    assert cold["held_out_items"] == 8 and cold["warm_items"] == 24
    assert cold["protocol"].startswith("a separate evaluation fit (same settings and seed) with the text of 8 of 32 items")
    assert "separate evaluation fit" in (evaluated.out_dir / "report.md").read_text()
    assert "skipped" in plain.report["cold_start"]
