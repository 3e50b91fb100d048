"""Each model learns what a tiny data set with a known answer demands."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignrec.collab.config import CollabConfig
from alignrec.collab.registry import get_model_spec
from alignrec.collab.trainer import train
from alignrec.data import load_dataset

# Tiny settings that still leave each model enough steps to learn the rings exactly.
SEQUENTIAL = {
    "sasrec": ({"embedding_dim": 16, "num_heads": 1, "ffn_dim": 32, "dropout": 0.0, "lr": 0.01, "batch_size": 32}, 30, 5),
    "sasrec-sampled": ({"embedding_dim": 16, "num_heads": 1, "ffn_dim": 32, "dropout": 0.0, "lr": 0.01, "batch_size": 32,
                        "loss": "sampled_ce", "num_negatives": 12}, 80, 10),
    "sasrec-bce": ({"embedding_dim": 16, "num_heads": 1, "ffn_dim": 32, "dropout": 0.0, "lr": 0.01,
                    "batch_size": 32, "loss": "bce"}, 80, 10),
    "fmlp": ({"embedding_dim": 16, "ffn_dim": 32, "dropout": 0.1, "lr": 0.01, "batch_size": 32}, 30, 5),
    "bert4rec": ({"embedding_dim": 16, "num_heads": 1, "ffn_dim": 32, "dropout": 0.0, "lr": 0.004, "batch_size": 64,
                  "mask_prob": 0.3, "last_mask_prob": 0.3}, 220, 20),
}


@pytest.mark.parametrize("name", sorted(SEQUENTIAL))
def test_sequential_models_learn_deterministic_next_item(name, cyclic_run, tmp_path):
    settings, epochs, every = SEQUENTIAL[name]
    model = name.split("-")[0]
    result = train(
        CollabConfig(model=model, epochs=epochs, eval_every=every, patience=0, seed=1, checkpoint_every=epochs),
        get_model_spec(model).config_class(**settings),
        cyclic_run,
        tmp_path / name,
    )
    assert result.metrics["test"]["hr@1"] >= 0.9, result.metrics["test"]


GRAPH = {
    "lightgcn": {"embedding_dim": 16, "num_layers": 2, "lr": 0.01, "batch_size": 256, "l2_reg": 1e-4},
    "dccf": {"embedding_dim": 16, "num_layers": 2, "num_intents": 8, "lr": 0.01, "batch_size": 256},
}


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_graph_models_put_the_planted_partner_first(name, pairs_run, tmp_path):
    result = train(
        CollabConfig(model=name, epochs=10, eval_every=10, patience=0, seed=1, checkpoint_every=10),
        get_model_spec(name).config_class(**GRAPH[name]),
        pairs_run,
        tmp_path / name,
    )
    dataset = load_dataset(pairs_run)
    embeddings = torch.nn.functional.normalize(result.model.item_embeddings(), dim=1)
    similarity = embeddings @ embeddings.T
    similarity.fill_diagonal_(-np.inf)
    nearest = similarity.argmax(dim=1).numpy()
    hits = 0
    for item in range(40):
        index = dataset.item_index_of[str(item)]
        hits += dataset.item_ids[nearest[index]] == str(item ^ 1)  # partner of 2k is 2k+1 and back
    assert hits >= 36, f"{hits}/40 items have their planted partner as nearest neighbour"


def test_popularity_scores_by_hand(tmp_path, write_raw):
    # training parts: u1 [a b], u2 [a c], u3 [a b b] -> counts a 3, b 3, c 1, d 0 (d only held out)
    run = write_raw(tmp_path / "run", {"u1": ["a", "b", "d", "d"], "u2": ["a", "c", "d", "c"],
                                       "u3": ["a", "b", "b", "c", "d"]})
    result = train(CollabConfig(model="pop"), get_model_spec("pop").config_class(), run, tmp_path / "pop")
    dataset = load_dataset(run)
    index = dataset.item_index_of
    scores = result.model.score(torch.zeros(1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long))[0]
    order = [dataset.item_ids[i] for i in torch.argsort(scores, descending=True).tolist()]
    # a and b tie on 3: the lower item index goes first
    first = "a" if index["a"] < index["b"] else "b"
    assert order == [first, "b" if first == "a" else "a", "c", "d"]
    # test targets: u1 d (rank 3), u2 c (rank 2), u3 d (rank 3)
    assert result.metrics["test"]["hr@5"] == 1.0
    assert result.metrics["test"]["hr@1"] == 0.0
    expected_ndcg5 = np.mean([1 / np.log2(3 + 2), 1 / np.log2(2 + 2), 1 / np.log2(3 + 2)])
    assert result.metrics["test"]["ndcg@5"] == pytest.approx(expected_ndcg5)
    assert result.metrics["epochs_run"] == 0
    # seen items excluded (training items + the validation item, never the target):
    # u1 test d, a b out -> c d: rank 1; u2 test c, a d out -> b c: rank 1; u3 test d, a b c out -> rank 0
    seen = result.metrics["test_seen_excluded"]
    assert seen["hr@1"] == pytest.approx(1 / 3)
    assert seen["ndcg@5"] == pytest.approx(np.mean([1 / np.log2(3), 1 / np.log2(3), 1.0]))
