"""``alignrec precache``: contents, incremental runs, two processes under torchrun, new items, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignrec.cli import main
from alignrec.data.dataset import load_dataset
from alignrec.serve.items import ItemRegistry, NewItem
from alignrec.serve.precache import PrecacheConfig, history_fingerprint, precache
from alignrec.serve.store import open_store
from alignrec.tokenizer.codes import ItemCodes


def all_entries(url: str, users) -> dict:
    with open_store(url) as store:
        return {u: store.get(u) for u in users}


def test_entries_are_the_recommenders_top_k(tiny_run, tiny_recommender, store_url):
    config = PrecacheConfig(top_k=8, beam_size=10, commit_every=7, batch_size=5)
    report = precache(config, tiny_run, store_url, recommender=tiny_recommender)
    dataset = load_dataset(tiny_run)
    assert report["computed"] == report["users"] == report["entries_in_store"] == dataset.num_users == 40
    histories = [seq[-dataset.max_history :].tolist() for seq in dataset.sequences]
    expected = tiny_recommender.recommend(histories, 8, 10, show_progress=False)
    entries = all_entries(store_url, dataset.user_ids)
    codes = tiny_recommender.codes
    for row, user in enumerate(dataset.user_ids):
        got = entries[user]
        assert [i.id for i in got.items] == [dataset.item_ids[i] for i in expected.items[row].tolist()]
        assert [i.score for i in got.items] == pytest.approx(expected.scores[row].tolist(), abs=1e-5)
        first = dataset.item_index_of[got.items[0].id]
        assert got.items[0].title == dataset.items[first].title and got.items[0].codes == codes.item_string(first)
        assert got.model_version == tiny_recommender.version and got.run_key == f"{tiny_recommender.version}:b10:k8"
        assert got.fingerprint == history_fingerprint([dataset.item_ids[i] for i in histories[row]])
    with open_store(store_url) as store:
        assert store.get_meta("top_k") == 8 and store.get_meta("model_version") == tiny_recommender.version
        popular = store.get_meta("popular")
    counts = dataset.item_popularity()
    assert [dataset.item_index_of[p["id"]] for p in popular][:3] == sorted(range(24), key=lambda i: (-counts[i], i))[:3]


def test_incremental_runs_compute_only_changed_and_new_users(tiny_run, tiny_recommender, tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    config = PrecacheConfig(top_k=5, beam_size=5)
    precache(config, tiny_run, url, recommender=tiny_recommender)
    dataset = load_dataset(tiny_run)
    before = all_entries(url, dataset.user_ids)
    again = precache(config, tiny_run, url, recommender=tiny_recommender)
    assert (again["computed"], again["unchanged"]) == (0, 40)
    # u3 gets a new interaction, "newcomer" appears; everyone else is untouched
    histories = tmp_path / "histories.jsonl"
    u3 = [dataset.item_ids[i] for i in dataset.sequences[dataset.user_index_of["u3"]]] + ["5"]
    histories.write_text(json.dumps({"user_id": "u3", "items": u3}) + "\n" + json.dumps({"user_id": "newcomer", "items": ["1", "2"]}) + "\n")
    report = precache(config, tiny_run, url, histories=histories, recommender=tiny_recommender)
    assert (report["computed"], report["unchanged"], report["entries_in_store"]) == (2, 39, 41)
    after = all_entries(url, [*dataset.user_ids, "newcomer"])
    assert all(after[u] == before[u] for u in dataset.user_ids if u != "u3")
    assert after["u3"].fingerprint != before["u3"].fingerprint and after["u3"].created > before["u3"].created
    assert after["newcomer"].fingerprint == history_fingerprint(["1", "2"])
    # other search settings (another run key) recompute everyone; --full too
    assert precache(PrecacheConfig(top_k=4, beam_size=5), tiny_run, url, recommender=tiny_recommender)["computed"] == 40
    assert precache(PrecacheConfig(top_k=4, beam_size=5, full=True), tiny_run, url, recommender=tiny_recommender)["computed"] == 40


@pytest.mark.distributed
def test_two_processes_fill_the_store_of_one(tiny_run, tiny_recommender, torchrun, tmp_path):
    """Under torchrun the ranks split the users to compute (shards of commit_every users, shard i
    to rank i % 2) and rank 0 writes every entry: the lists of one process, in one store."""
    url = f"sqlite:///{tmp_path / 'two.sqlite'}"
    flags = ["--model", str(tiny_run), "--cache", url, "--top-k", "5", "--beam-size", "5", "--batch-size", "4",
             "--commit-every", "7", "--device", "cpu", "--dtype", "float32"]
    done = torchrun(2, "-m", "alignrec.cli", "precache", *flags)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)  # rank 0 alone prints it
    assert (report["world_size"], report["users"], report["computed"], report["entries_in_store"]) == (2, 40, 40, 40)
    assert json.loads((tmp_path / "precache.json").read_text())["world_size"] == 2  # beside the cache, not in RUN/cache
    one = f"sqlite:///{tmp_path / 'one.sqlite'}"
    precache(PrecacheConfig(top_k=5, beam_size=5, batch_size=4, commit_every=7), tiny_run, one, recommender=tiny_recommender)
    users = load_dataset(tiny_run).user_ids
    two_processes, one_process = all_entries(url, users), all_entries(one, users)
    for user in users:
        assert [i.id for i in two_processes[user].items] == [i.id for i in one_process[user].items]
        assert [i.score for i in two_processes[user].items] == pytest.approx([i.score for i in one_process[user].items],
                                                                              abs=1e-5)
        assert two_processes[user].fingerprint == one_process[user].fingerprint
    again = torchrun(2, "-m", "alignrec.cli", "precache", *flags)  # nothing changed: nothing to compute
    assert again.returncode == 0, again.stderr[-4000:]
    assert (json.loads(again.stdout)["computed"], json.loads(again.stdout)["unchanged"]) == (0, 40)


def test_registered_items_join_the_catalogue(tiny_run, tiny_recommender, fake_cold_start, tmp_path):
    from alignrec.llm.recommender import GenerativeRecommender

    registry_path = tmp_path / "registry.json"
    registry = ItemRegistry(registry_path, ItemCodes.load(tiny_run / "finetune"))
    new = registry.register(NewItem(item_id="fresh-1", title="Brand new guitar"), fake_cold_start)
    codes, _ = registry.extended_codes()
    # the same model with the extended codes (what load_recommender(..., codes=codes) builds)
    recommender = GenerativeRecommender(tiny_recommender.model, tiny_recommender.tokenizer, codes, tiny_recommender.version)
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    report = precache(PrecacheConfig(top_k=20, beam_size=20), tiny_run, url, items_registry=registry_path, recommender=recommender)
    assert report["catalogue_items"] == 25 and report["registered_items"] == 1
    entries = all_entries(url, load_dataset(tiny_run).user_ids)
    shown = [i for e in entries.values() for i in e.items if i.id == "fresh-1"]
    assert shown, "the new item should be reachable (top 20 of 25 items)"
    assert shown[0].title == "Brand new guitar" and shown[0].codes == "".join(f"<{'abc'[l]}_{c}>" for l, c in enumerate(new.codes))


def test_registered_items_make_lists_stale_until_precache_recomputes_them(tiny_run, tiny_recommender, fake_cold_start, tmp_path):
    """Every list records the catalogue version it was computed against. A registration
    (through the API) makes every earlier list stale — flagged by the API — and the next
    pre-cache runs recompute exactly the stale lists, resumably (here: 10 users, then the rest)."""
    from fastapi.testclient import TestClient

    from alignrec.llm.recommender import GenerativeRecommender
    from alignrec.serve.app import ServeConfig, create_app
    from alignrec.serve.items import catalogue_version

    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    registry_path = tmp_path / "registry.json"
    config = PrecacheConfig(top_k=5, beam_size=5)
    base = ItemCodes.load(tiny_run / "finetune")
    first = precache(config, tiny_run, url, items_registry=registry_path, recommender=tiny_recommender)
    assert (first["computed"], first["stale"], first["catalogue"]) == (40, 0, catalogue_version(base))
    users = load_dataset(tiny_run).user_ids
    assert {e.catalogue for e in all_entries(url, users).values()} == {catalogue_version(base)}

    serve = ServeConfig(cache=url, run=str(tiny_run), items_registry=str(registry_path))
    with TestClient(create_app(serve, assigner=fake_cold_start, admin_token="token")) as client:
        assert client.get("/v1/users/u1/recommendations").json()["stale"] is False
        created = client.post("/v1/items", json={"item_id": "fresh-1", "title": "Brand new guitar"}, headers={"Authorization": "Bearer token"})
        assert created.status_code == 201, created.text
        assert client.get("/v1/users/u1/recommendations").json()["stale"] is True
    extended, _ = ItemRegistry(registry_path, base).extended_codes()
    recommender = GenerativeRecommender(tiny_recommender.model, tiny_recommender.tokenizer, extended, tiny_recommender.version)

    partial = precache(PrecacheConfig(top_k=5, beam_size=5, max_users=10), tiny_run, url, items_registry=registry_path, recommender=recommender)
    assert (partial["computed"], partial["stale"], partial["unchanged"]) == (10, 10, 0)
    rest = precache(config, tiny_run, url, items_registry=registry_path, recommender=recommender)
    assert (rest["computed"], rest["stale"], rest["unchanged"], rest["catalogue_items"]) == (30, 30, 10, 25)
    assert precache(config, tiny_run, url, items_registry=registry_path, recommender=recommender)["computed"] == 0
    entries = all_entries(url, users)
    assert {e.catalogue for e in entries.values()} == {catalogue_version(extended)}
    # the recomputed lists are the beam search over the grown catalogue
    dataset = load_dataset(tiny_run)
    histories = [seq[-dataset.max_history :].tolist() for seq in dataset.sequences]
    expected = recommender.recommend(histories, 5, 5, show_progress=False)
    ids = [*dataset.item_ids, "fresh-1"]
    assert all([i.id for i in entries[u].items] == [ids[i] for i in expected.items[row].tolist()] for row, u in enumerate(users))
    with TestClient(create_app(ServeConfig(cache=url))) as client:
        assert {client.get(f"/v1/users/{u}/recommendations").json()["stale"] for u in users} == {False}


def test_bad_histories_file_is_a_clear_error(tiny_run, tiny_recommender, tmp_path, capsys):
    histories = tmp_path / "h.jsonl"
    histories.write_text('{"user_id": "u1", "items": ["1"]}\n{"user_id": "u2", "items": ["no-such-item"]}\n')
    code = main(["precache", "--model", str(tiny_run), "--cache", str(tmp_path / "c.sqlite"), "--histories", str(histories)])
    assert code == 2
    assert "h.jsonl: line 2, field items: unknown item id 'no-such-item'" in capsys.readouterr().err


def _count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # tables not created yet


def test_kill_9_midway_then_resume(tmp_path):
    """A real `alignrec precache` process is killed with SIGKILL after some transactions; a
    second run finishes: every user exactly once, the same lists as an uninterrupted run."""
    from alignrec.llm.tiny_run import build_tiny_finetune_run

    run = build_tiny_finetune_run(tmp_path / "run", num_users=160, num_items=24)
    cache = run / "cache" / "cache.sqlite"
    command = [sys.executable, "-m", "alignrec.cli", "precache", "--model", str(run), "--commit-every", "4",
               "--batch-size", "4", "--top-k", "10", "--beam-size", "10", "--device", "cpu"]
    env = {**os.environ, "ALIGNREC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _count(cache) < 8:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "precache made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    done_at_kill = _count(cache)
    assert 8 <= done_at_kill < 160, f"the kill should land midway ({done_at_kill} of 160 done)"
    assert done_at_kill % 4 == 0  # whole transactions only

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads(finished.stdout)
    assert report["unchanged"] == done_at_kill and report["computed"] == 160 - done_at_kill
    with sqlite3.connect(cache) as connection:
        users = [row[0] for row in connection.execute("SELECT user_id FROM entries")]
    assert len(users) == len(set(users)) == 160
    # nothing lost or mangled: entries written before and after the kill are the model's
    # answers (checked for users on both sides of the kill)
    from alignrec.llm.tiny_run import load_tiny_recommender

    recommender = load_tiny_recommender(run)
    dataset = load_dataset(run)
    entries = all_entries(str(cache), users)
    with sqlite3.connect(cache) as connection:
        order = [row[0] for row in connection.execute("SELECT user_id FROM entries ORDER BY json_extract(value, '$.created')")]
    sample = order[: 6] + order[done_at_kill - 3 : done_at_kill + 3] + order[-6:]
    histories = [dataset.sequences[dataset.user_index_of[u]][-dataset.max_history :].tolist() for u in sample]
    expected = recommender.recommend(histories, 10, 10, show_progress=False)
    for row, user in enumerate(sample):
        assert [i.id for i in entries[user].items] == [dataset.item_ids[i] for i in expected.items[row].tolist()]
        assert [i.score for i in entries[user].items] == pytest.approx(expected.scores[row].tolist(), abs=1e-4)
