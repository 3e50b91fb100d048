"""The shared loop: outputs, save/load, resume, embeddings export, early stopping, CLI, config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alignrec.cli import main
from alignrec.collab import load_item_embeddings, load_trained_model, resolve_configs
from alignrec.collab.config import CollabConfig, ConfigError
from alignrec.collab.export import load_weights
from alignrec.collab.models.dccf import DCCFConfig
from alignrec.collab.models.sasrec import SASRecConfig
from alignrec.collab.trainer import rank_split, train
from alignrec.data import load_dataset
from alignrec.errors import InputError

TINY_SASREC = {"embedding_dim": 8, "num_heads": 1, "ffn_dim": 16, "dropout": 0.2, "lr": 0.01, "batch_size": 16}
TINY_DCCF = {"embedding_dim": 8, "num_intents": 4, "lr": 0.01, "batch_size": 64, "ssl_max_nodes": 16}


def _train(run, out, model="sasrec", epochs=3, **overrides):
    settings = {"sasrec": TINY_SASREC, "dccf": TINY_DCCF}[model]
    config_class = {"sasrec": SASRecConfig, "dccf": DCCFConfig}[model]
    train_config = {"model": model, "epochs": epochs, "patience": 0, "seed": 5}
    train_config.update({k: v for k, v in overrides.items() if k in CollabConfig.__dataclass_fields__})
    model_settings = {**settings, **{k: v for k, v in overrides.items() if k not in CollabConfig.__dataclass_fields__}}
    return train(CollabConfig(**train_config), config_class(**model_settings), run, out)


def test_outputs_and_metrics_keys(cyclic_run, tmp_path):
    result = _train(cyclic_run, tmp_path / "out", epochs=2)
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test.hr@1", "test.hr@5", "test.hr@10", "test.ndcg@5", "test.ndcg@10", "valid.ndcg@10"):
        assert key in metrics
        assert metrics[key] == metrics[key.split(".")[0]][key.split(".")[1]]
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] in (1, 2)
    log = json.loads((out / "train_log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2] and all("valid" in r and "loss" in r for r in log)
    record = json.loads((out / "config.json").read_text())
    assert record["stage"] == "collab" and record["config"]["model"]["embedding_dim"] == 8
    assert result.metrics["users"] == {"valid": 60, "test": 60}


def test_save_load_round_trip_gives_identical_scores(cyclic_run, tmp_path):
    result = _train(cyclic_run, tmp_path / "out")
    loaded = load_trained_model(tmp_path / "out")
    split = load_dataset(cyclic_run).split("test")
    users, histories = torch.from_numpy(split.user_index), torch.from_numpy(split.histories)
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(users, histories), result.model.score(users, histories), rtol=0, atol=0)
    np.testing.assert_array_equal(rank_split(loaded, split), rank_split(result.model, split))


def test_graph_model_save_load_round_trip(cyclic_run, tmp_path):
    result = _train(cyclic_run, tmp_path / "out", model="dccf", epochs=2)
    loaded = load_trained_model(tmp_path / "out")
    split = load_dataset(cyclic_run).split("test")
    np.testing.assert_array_equal(rank_split(loaded, split), rank_split(result.model, split))


def test_popularity_reloads_without_a_weights_file(cyclic_run, tmp_path):
    from alignrec.collab.models.pop import PopConfig

    result = train(CollabConfig(model="pop", seed=5), PopConfig(), cyclic_run, tmp_path / "pop")
    assert not (tmp_path / "pop" / "model.safetensors").exists()
    loaded = load_trained_model(tmp_path / "pop")
    split = load_dataset(cyclic_run).split("test")
    ranks = rank_split(loaded, split)
    np.testing.assert_array_equal(ranks, rank_split(result.model, split))
    assert ranks.min() >= 0 and ranks.max() < 24  # real ranks over the 24 items, not a placeholder


def test_item_embeddings_export_round_trip(cyclic_run, tmp_path):
    result = _train(cyclic_run, tmp_path / "out", model="dccf", epochs=1)
    embeddings, item_ids = load_item_embeddings(tmp_path / "out")
    assert embeddings.dtype == np.float32 and embeddings.shape == (24, 8)
    assert item_ids == load_dataset(cyclic_run).item_ids
    np.testing.assert_array_equal(embeddings, result.model.item_embeddings().numpy())


def test_item_embeddings_loader_errors(cyclic_run, tmp_path):
    with pytest.raises(InputError, match="item_embeddings.safetensors: file not found"):
        load_item_embeddings(tmp_path)
    _train(cyclic_run, tmp_path / "out", epochs=1)
    (tmp_path / "out" / "item_ids.json").write_text(json.dumps(["1", "2"]))
    with pytest.raises(InputError, match="item_ids.json: expected a list of 24 item ids"):
        load_item_embeddings(tmp_path / "out")


def test_item_embeddings_file_reader_is_shared(tmp_path):
    """One reader of the item_embeddings format: the collab export, the tokenizer's --embeddings
    file and the cold-start file of new items all reject the same bad files with the file named."""
    from safetensors.numpy import save_file

    from alignrec.collab.export import read_item_embeddings
    from alignrec.tokenizer.embeddings import _read_embedding_file
    from alignrec.tokenizer.items_file import read_embeddings_file

    def write(name, **tensors):
        save_file(tensors, str(tmp_path / name))
        return tmp_path / name

    good = write("good.safetensors", item_embeddings=np.arange(6, dtype=np.float64).reshape(3, 2))
    vectors = read_item_embeddings(good)
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(read_embeddings_file(good, rows=3), vectors)
    assert _read_embedding_file(good)[1] is None  # no item_ids.json beside it
    with pytest.raises(InputError, match=r"good.safetensors: 'item_embeddings' must be \(2, d\)"):
        read_embeddings_file(good, rows=2)
    bad = {
        "key.safetensors": ({"vectors": np.zeros((3, 2), np.float32)}, r"expected a tensor named 'item_embeddings', found \['vectors'\]"),
        "flat.safetensors": ({"item_embeddings": np.zeros(3, np.float32)}, r"must be 2-D \(items, dim\), got shape \(3,\)"),
        "nan.safetensors": ({"item_embeddings": np.array([[0.0, np.nan]], np.float32)}, "NaN or infinite"),
    }
    for name, (tensors, message) in bad.items():
        path = write(name, **tensors)
        for reader in (read_item_embeddings, _read_embedding_file, lambda p: read_embeddings_file(p, rows=1)):
            with pytest.raises(InputError, match=f"{name}: .*{message}"):
                reader(path)


@pytest.mark.parametrize("model", ["sasrec", "dccf"])
def test_resume_continues_identically(model, cyclic_run, tmp_path):
    straight = _train(cyclic_run, tmp_path / "straight", model=model, epochs=4)
    _train(cyclic_run, tmp_path / "resumed", model=model, epochs=2)
    settings = {"sasrec": TINY_SASREC, "dccf": TINY_DCCF}[model]
    config_class = {"sasrec": SASRecConfig, "dccf": DCCFConfig}[model]
    resumed = train(CollabConfig(model=model, epochs=4, patience=0, seed=5), config_class(**settings), cyclic_run,
                    tmp_path / "resumed", resume=True)
    assert [r["epoch"] for r in resumed.log] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in straight.log]
    a = load_weights(tmp_path / "straight" / "model.safetensors")
    b = load_weights(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert resumed.metrics["test"] == straight.metrics["test"]


def test_resume_refuses_changed_settings(cyclic_run, tmp_path):
    _train(cyclic_run, tmp_path / "out", epochs=1)
    with pytest.raises(InputError, match="cannot resume with different settings.*lr"):
        train(CollabConfig(model="sasrec", epochs=2, seed=5), SASRecConfig(**{**TINY_SASREC, "lr": 0.5}),
              cyclic_run, tmp_path / "out", resume=True)


def test_early_stopping_restores_best_epoch(cyclic_run, tmp_path):
    # lr so high that the model gets worse after its first epochs: training must stop and keep the best
    result = _train(cyclic_run, tmp_path / "out", epochs=30, patience=2, lr=0.5, dropout=0.0)
    best = result.metrics["best_epoch"]
    evaluated = [r for r in result.log if "valid" in r]
    assert result.metrics["stop_reason"] == "early_stopping"
    assert len(result.log) == best + 2
    assert result.metrics["valid"]["ndcg@10"] == pytest.approx(max(r["valid"]["ndcg@10"] for r in evaluated))


def test_config_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"\['num_heads'\] do not apply to model 'lightgcn'"):
        resolve_configs({"model": "lightgcn", "num_heads": 2})
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        resolve_configs({"model": "nope"})
    config_file = tmp_path / "c.yaml"
    config_file.write_text("model: sasrec\nlr: 0.01\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml \+ command line.*bogus"):
        resolve_configs({}, str(config_file))
    config_file.write_text("model: sasrec\nlr: 0.01\nnum_layers: 1\n")
    train_config, model_config = resolve_configs({"num_layers": 3}, str(config_file))
    assert (train_config.model, model_config.lr, model_config.num_layers) == ("sasrec", 0.01, 3)
    with pytest.raises(ConfigError, match="dropout: must be in"):
        resolve_configs({"model": "sasrec", "dropout": 1.5})


def test_cli_trains_and_writes_outputs(cyclic_run, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["collab", "train", "--model", "fmlp", "--data", str(cyclic_run), "--out", str(out), "--epochs", "1",
                 "--embedding-dim", "8", "--ffn-dim", "16", "--batch-size", "32"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["out"] == str(out) and set(printed["test"]) >= {"hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10"}
    assert (out / "item_embeddings.safetensors").exists() and (out / "model.safetensors").exists()
    code = main(["collab", "train", "--model", "pop", "--data", str(cyclic_run), "--out", str(tmp_path / "p"),
                 "--num-heads", "2"])
    assert code == 2
    assert "do not apply to model 'pop'" in capsys.readouterr().err


def test_default_out_dir_is_run_collab_model(cyclic_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cyclic_run, run)
    result = train(CollabConfig(model="pop"), resolve_configs({"model": "pop"})[1], run)
    assert result.out_dir == run / "collab" / "pop"
    assert (run / "collab" / "pop" / "metrics.json").exists()
    assert not (run / "collab" / "pop" / "item_embeddings.safetensors").exists()  # pop has no embeddings


def test_graph_test_scoring_adds_validation_items_but_never_test_items(leak_run, tmp_path):
    result = train(CollabConfig(model="lightgcn", epochs=2, patience=0), resolve_configs(
        {"model": "lightgcn", "embedding_dim": 8, "batch_size": 32})[1], leak_run, tmp_path / "out")
    model = result.model
    dataset = load_dataset(leak_run)
    valid, test = dataset.split("valid"), dataset.split("test")
    assert model._scoring_graph is None  # the trainer resets it after scoring the test split
    model.set_scoring_interactions(valid.user_index, valid.targets)
    graph = model._scoring_graph[0]
    item_degree = torch.bincount(graph.rows, minlength=graph.num_nodes)[model.num_users:]
    assert (item_degree[valid.targets] == 1).all()  # each validation item joins its user's neighbourhood
    assert (item_degree[test.targets] == 0).all()  # test items stay unseen
    users = torch.from_numpy(test.user_index)
    with torch.no_grad():
        with_valid = model.score(users, torch.from_numpy(test.histories))
        model.set_scoring_interactions(None, None)
        without = model.score(users, torch.from_numpy(test.histories))
    assert not torch.equal(with_valid, without)
    assert "validation interactions in the graph" in result.metrics["protocol"]


def test_cli_lists_models_with_defaults(capsys):
    assert main(["collab", "models"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert list(listing) == ["dccf", "lightgcn", "sasrec", "bert4rec", "fmlp", "pop"]
    assert listing["dccf"]["defaults"]["embedding_dim"] == 32
    assert listing["pop"]["defaults"] == {}
