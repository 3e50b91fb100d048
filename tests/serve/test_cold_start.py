"""POST /v1/items with the tokenizer stage's real cold start (a trained behaviour tokenizer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("alignrec.tokenizer.coldstart")

TOKEN = "cold-start-token"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory):
    """Clustered synthetic data (24 items, 4 groups), behaviour vectors that cluster by group, a
    behaviour-only residual k-means tokenizer trained on them, and a tiny model whose item codes
    are the tokenizer's (as `alignrec finetune` copies them)."""
    from safetensors.numpy import save_file

    from alignrec.data import load_dataset
    from alignrec.data.synthetic import write_synthetic
    from alignrec.llm.tiny_run import build_tiny_finetune_run
    from alignrec.tokenizer.config import TokenizerConfig
    from alignrec.tokenizer.train import train_tokenizer

    run = tmp_path_factory.mktemp("cold") / "run"
    write_synthetic(run, num_users=40, num_items=24, groups=4, length=6, kind="clusters", seed=0)
    dataset = load_dataset(run)
    groups = np.array([int(item_id) % 4 for item_id in dataset.item_ids])
    centers = 5.0 * np.eye(8)[:4]
    vectors = (centers[groups] + 0.3 * np.random.default_rng(1).standard_normal((24, 8))).astype(np.float32)
    embeddings = run / "item_embeddings.safetensors"
    save_file({"item_embeddings": vectors}, str(embeddings))
    config = TokenizerConfig(method="rqkmeans", levels=2, codebook_size=8, llm="none", rounds=3, steps_per_round=5, kmeans_iterations=20)
    result = train_tokenizer(config, run, embeddings=str(embeddings), out_dir=run / "tokenizer")
    build_tiny_finetune_run(run, codes=result.item_codes, write_dataset=False)
    return run, groups, centers


def client_for(run: Path, tmp_path: Path):
    from alignrec.serve.app import ServeConfig, create_app
    from alignrec.serve.store import CacheEntry, CachedItem, open_store

    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    with open_store(url, create=True) as store:
        store.put_many([CacheEntry("u0", [CachedItem("0", "t", "<a_0><b_0>", -1.0)], "v", "k", "f")])
        store.set_meta({"top_k": 1})
    config = ServeConfig(cache=url, run=str(run), items_registry=str(tmp_path / "registry.json"))
    return TestClient(create_app(config, admin_token=TOKEN))  # no assigner given: the tokenizer's own


def post(client, body):
    return client.post("/v1/items", json=body, headers={"Authorization": f"Bearer {TOKEN}"})


def test_new_items_get_their_groups_codes_and_stay_unique(trained_run, tmp_path):
    from alignrec.serve.items import ItemRegistry
    from alignrec.tokenizer.codes import ItemCodes

    run, groups, centers = trained_run
    known = ItemCodes.load(run / "finetune")
    with client_for(run, tmp_path) as client:
        created = []
        for n in range(6):
            group = n % 4
            response = post(client, {"item_id": f"cold-{n}", "title": f"new item {n}", "embedding": centers[group].tolist()})
            assert response.status_code == 201, response.text
            created.append((group, response.json()["codes"]))
        # a behaviour-only tokenizer cannot place a text-only item: a clear 4xx, nothing stored
        text_only = post(client, {"item_id": "cold-text", "title": "only text"})
        assert text_only.status_code == 422 and "behaviour embedding" in text_only.json()["detail"]
    # the new item lands in the first-level code of the group whose behaviour it shares
    for group, codes in created:
        group_first_codes = known.codes[groups == group, 0]
        assert codes[0] == np.bincount(group_first_codes).argmax()
    # unique against the catalogue and each other, and persisted in the registry
    everything = [tuple(row) for row in known.codes.tolist()] + [tuple(c) for _, c in created]
    assert len(set(everything)) == len(everything)
    saved = ItemRegistry(tmp_path / "registry.json", known).items()
    assert [item.item_id for item in saved] == [f"cold-{n}" for n in range(6)]


def test_codes_registered_by_another_process_are_reserved(trained_run, tmp_path):
    """A restarted server (a fresh cold-start assigner) must not hand out codes already in the registry."""
    run, _, centers = trained_run
    with client_for(run, tmp_path) as first:
        a = post(first, {"item_id": "a", "title": "a", "embedding": centers[1].tolist()}).json()["codes"]
    with client_for(run, tmp_path) as restarted:
        b = post(restarted, {"item_id": "b", "title": "b", "embedding": centers[1].tolist()}).json()["codes"]
    assert a != b


def test_embeddings_that_overflow_float32_are_refused(trained_run):
    """The adapter casts embeddings to float32; a value that becomes inf is a 422, not codes."""
    from alignrec.serve.items import NewItem, RegistrationError, load_code_assigner
    from alignrec.tokenizer.codes import ItemCodes

    run, _, centers = trained_run
    assigner = load_code_assigner(run / "tokenizer")
    existing = ItemCodes.load(run / "finetune")
    with pytest.raises(RegistrationError, match="finite float32") as caught:
        assigner.assign([NewItem("huge", "t", embedding=[1e300] + [0.0] * 7)], existing)
    assert caught.value.status == 422
    codes = assigner.assign([NewItem("fine", "t", embedding=centers[2].tolist())], existing)
    assert codes.shape == (1, 2) and tuple(codes[0]) not in {tuple(r) for r in existing.codes.tolist()}
