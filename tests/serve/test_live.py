"""Live recommendations (``alignrec serve --live``): live == precache, events, exclusion, batching, errors."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from alignrec.serve.app import ServeConfig, create_app
from alignrec.serve.live import LiveJob, MicroBatcher, QueueFull, repeat_consumed, resolve_exclude, yield_cpu
from alignrec.serve.precache import PrecacheConfig, precache
from alignrec.serve.store import open_store

TOKEN = "s3cret-token"
TOP_K = 6


def precached(tiny_run, tmp_path, exclude: str = "history", histories=None) -> dict:
    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    config = PrecacheConfig(top_k=TOP_K, beam_size=TOP_K, batch_size=8, device="cpu", dtype="float32", exclude=exclude)
    return precache(config, tiny_run, url, items_registry=tmp_path / "registry.json", histories=histories) | {"url": url}


def live_config(url: str, tiny_run, tmp_path, **overrides) -> ServeConfig:
    settings = {"cache": url, "run": str(tiny_run), "live": True, "exclude": "history+request",
                "items_registry": str(tmp_path / "registry.json"), "live_max_wait_ms": 1.0,
                "live_process": False} | overrides  # the search in a thread here (fast to start); a process: below
    return ServeConfig(**settings)


@pytest.fixture
def live(tiny_run, tmp_path, fake_cold_start):
    report = precached(tiny_run, tmp_path)
    app = create_app(live_config(report["url"], tiny_run, tmp_path), admin_token=TOKEN, assigner=fake_cold_start)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app.state.serve, report["url"]


def dataset_of(tiny_run):
    from alignrec.data.dataset import load_dataset

    return load_dataset(tiny_run / "dataset")


def history_ids(dataset, user: int) -> list[str]:
    return [dataset.item_ids[int(i)] for i in dataset.sequences[user]]


@pytest.mark.parametrize("exclude", ["off", "history"])
def test_a_live_list_equals_precache_for_the_same_history(tiny_run, tmp_path, exclude):
    report = precached(tiny_run, tmp_path, exclude=exclude)
    config = live_config(report["url"], tiny_run, tmp_path, exclude="history" if exclude == "history" else "off")
    dataset = dataset_of(tiny_run)
    with TestClient(create_app(config), raise_server_exceptions=False) as client, open_store(report["url"]) as store:
        for user in range(0, 40, 3):
            user_id = dataset.user_ids[user]
            cached = store.get(user_id)
            response = client.post("/v1/recommendations", json={"history": history_ids(dataset, user), "k": TOP_K})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["live"] is True and len(body["items"]) == TOP_K
            assert [i["id"] for i in body["items"]] == [i.id for i in cached.items]
            assert [i["title"] for i in body["items"]] == [i.title for i in cached.items]
            assert [i["codes"] for i in body["items"]] == [i.codes for i in cached.items]
            for got, want in zip(body["items"], cached.items, strict=True):
                assert got["score"] == pytest.approx(want.score, abs=1e-4)
            if exclude == "history":
                assert not {i["id"] for i in body["items"]} & set(history_ids(dataset, user))
        # a GET with no events since pre-cache is the cached list itself
        user_id = dataset.user_ids[1]
        body = client.get(f"/v1/users/{user_id}/recommendations", params={"k": 3}).json()
        assert "live" not in body and [i["id"] for i in body["items"]] == [i.id for i in store.get(user_id).items[:3]]


def test_events_make_the_next_get_live_written_through_and_survive_a_restart(tiny_run, tmp_path, live):
    client, state, url = live
    dataset = dataset_of(tiny_run)
    user_id = dataset.user_ids[4]
    base = history_ids(dataset, 4)
    before = client.get(f"/v1/users/{user_id}/recommendations").json()
    new_item = before["items"][0]["id"]  # the user consumes its top recommendation
    response = client.post(f"/v1/users/{user_id}/events", json={"items": [new_item]})
    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": user_id, "appended": 1, "dropped": [], "history_length": len(base) + 1}
    after = client.get(f"/v1/users/{user_id}/recommendations", params={"k": TOP_K})
    body = after.json()
    assert after.status_code == 200 and body["live"] is True and body["stale"] is False
    assert new_item not in [i["id"] for i in body["items"]]  # consumed: excluded now
    # the same list as a live request for the new history
    same = client.post("/v1/recommendations", json={"history": base + [new_item], "k": TOP_K}).json()
    assert [i["id"] for i in same["items"]] == [i["id"] for i in body["items"]]
    # written through: the next GET is the cached list (no search)
    deadline = time.monotonic() + 5
    while "live" in (again := client.get(f"/v1/users/{user_id}/recommendations", params={"k": TOP_K}).json()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert [i["id"] for i in again["items"]] == [i["id"] for i in body["items"]]
    # ... with pre-cache's fingerprint and run key: a pre-cache run for that history computes nothing for the user
    histories = tmp_path / "histories.jsonl"
    histories.write_text(json.dumps({"user_id": user_id, "items": base + [new_item]}) + "\n")
    report = precached(tiny_run, tmp_path, histories=histories)
    assert report["computed"] == 0 and report["unchanged"] == 40
    # a restart keeps the history; a new event appends to it
    state.batcher.close()
    config = live_config(url, tiny_run, tmp_path)
    with TestClient(create_app(config), raise_server_exceptions=False) as restarted:
        response = restarted.post(f"/v1/users/{user_id}/events", json={"items": [before["items"][1]["id"]]})
        assert response.json()["history_length"] == len(base) + 2
    with open_store(url) as store:
        assert store.get_history(user_id) == base + [new_item, before["items"][1]["id"]]


def test_a_new_user_from_events_alone(live):
    client, _, _ = live
    assert client.get("/v1/users/newcomer/recommendations").status_code == 404
    client.post("/v1/users/newcomer/events", json={"items": ["1", "2"]})
    body = client.get("/v1/users/newcomer/recommendations", params={"k": 4}).json()
    assert body["live"] is True and len(body["items"]) == 4 and not {"1", "2"} & {i["id"] for i in body["items"]}


def test_exclusion_never_returns_an_excluded_item_and_fills_the_list(live, tiny_run):
    client, _, _ = live
    dataset = dataset_of(tiny_run)
    history = history_ids(dataset, 7)
    first = client.post("/v1/recommendations", json={"history": history, "k": TOP_K}).json()["items"]
    banned = [first[0]["id"], first[2]["id"]]
    second = client.post("/v1/recommendations", json={"history": history, "k": TOP_K, "exclude": banned}).json()["items"]
    ids = [i["id"] for i in second]
    assert len(ids) == TOP_K and not set(ids) & (set(banned) | set(history))
    kept = [i["id"] for i in first if i["id"] not in banned]
    # the others stay, in order; the freed beams found more (a prefix whose items are all excluded
    # holds no beam, so its beam may find a better item than the first search did)
    assert [i for i in ids if i in kept] == kept
    scores = [i["score"] for i in second]
    assert scores == sorted(scores, reverse=True)


def test_empty_history_gets_popularity_without_excluded_items(live):
    client, _, _ = live
    popular = client.post("/v1/recommendations", json={"history": [], "k": 5}).json()
    assert popular["fallback"] == "popularity" and len(popular["items"]) == 5
    top = popular["items"][0]["id"]
    without = client.post("/v1/recommendations", json={"history": [], "k": 5, "exclude": [top]}).json()
    assert top not in [i["id"] for i in without["items"]] and len(without["items"]) == 5


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"history": ["1", "nope", "zzz"]}, 422, "unknown_items"),
        ({"history": ["1"], "k": 0}, 422, "invalid_request"),
        ({"history": ["1"], "k": TOP_K + 1}, 422, "invalid_request"),
        ({"history": ["1"], "k": "3"}, 422, "invalid_request"),
        ({"history": "1"}, 422, "invalid_request"),
        ({"history": ["1"], "extra": 1}, 422, "invalid_request"),
        ({"history": ["a b"]}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ([1, 2], 422, "invalid_request"),
    ],
)
def test_bad_live_bodies_are_4xx_json(live, body, status, error):
    client, _, _ = live
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == status and response.json()["error"] == error
    if error == "unknown_items":
        assert response.json()["detail"] == {"field": "history", "unknown": ["nope", "zzz"], "count": 2}


def test_bad_raw_bodies_and_events(live):
    client, _, _ = live
    assert client.post("/v1/recommendations", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/v1/recommendations", content=b'{"history": [], "history": []}',
                       headers={"content-type": "application/json"}).json()["error"] == "invalid_json"
    assert client.post("/v1/recommendations", content=b"history=1").status_code == 415
    assert client.post("/v1/recommendations", content=b"x" * 70000, headers={"content-type": "application/json"}).status_code == 413
    assert client.post("/v1/users/u1/events", json={"items": []}).status_code == 422
    unknown = client.post("/v1/users/u1/events", json={"items": ["1", "nope"]})
    assert unknown.status_code == 422 and unknown.json()["detail"]["unknown"] == ["nope"]
    assert client.post("/v1/users/bad%20id/events", json={"items": ["1"]}).status_code == 422


def test_unknown_items_dropped_when_configured(tiny_run, tmp_path):
    report = precached(tiny_run, tmp_path)
    with TestClient(create_app(live_config(report["url"], tiny_run, tmp_path, unknown_items="drop"))) as client:
        body = client.post("/v1/recommendations", json={"history": ["1", "nope", 2]}).json()
        assert body["dropped"] == ["nope"] and body["live"] is True
        assert client.post("/v1/users/x/events", json={"items": ["nope"]}).json() == {
            "user_id": "x", "appended": 0, "dropped": ["nope"], "history_length": None}


def test_an_exclude_list_is_refused_when_the_setting_does_not_take_one(tiny_run, tmp_path):
    report = precached(tiny_run, tmp_path)
    with TestClient(create_app(live_config(report["url"], tiny_run, tmp_path, exclude="history"))) as client:
        response = client.post("/v1/recommendations", json={"history": ["1"], "exclude": ["2"]})
        assert response.status_code == 422 and response.json()["error"] == "exclude_disabled"


def test_a_registered_item_reaches_live_lists_without_a_restart(live):
    client, state, _ = live
    created = client.post("/v1/items", json={"item_id": "brand-new", "title": "A new thing"},
                          headers={"authorization": f"Bearer {TOKEN}"})
    assert created.status_code == 201, created.text
    response = client.post("/v1/recommendations", json={"history": ["1", "brand-new"]})
    assert response.status_code == 200 and response.json()["live"] is True
    recommender = state.live.searcher.recommender
    assert recommender.num_items == 25 and recommender.trie.num_items == 25
    # lists computed before are stale now: the next GET of a known user is recomputed live, with the new catalogue
    body = client.get("/v1/users/" + state.live.dataset.user_ids[0] + "/recommendations").json()
    assert body["live"] is True and body["stale"] is False


def test_saturated_live_path_serves_the_cached_list_as_stale(live, tiny_run, monkeypatch):
    client, state, _ = live
    user_id = state.live.dataset.user_ids[2]
    cached = client.get(f"/v1/users/{user_id}/recommendations").json()
    client.post(f"/v1/users/{user_id}/events", json={"items": ["3"]})
    monkeypatch.setattr(state.batcher, "saturated", lambda: True)
    body = client.get(f"/v1/users/{user_id}/recommendations").json()
    assert body["stale"] is True and "live" not in body and body["items"] == cached["items"]
    metrics = client.get("/metrics").text
    assert 'alignrec_answers_total{source="stale"} 1.0' in metrics


def test_a_full_queue_is_a_503_with_retry_after(live, monkeypatch):
    client, state, _ = live
    app = client.app
    release, searching = threading.Event(), threading.Event()
    search = state.live.search

    def blocked(jobs):
        searching.set()
        release.wait(10)
        return search(jobs)

    state.batcher.close()
    state.batcher = MicroBatcher(blocked, max_batch=1, max_wait_s=0, max_queue=2)

    async def until(condition):
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            def post(n):
                return asyncio.create_task(http.post("/v1/recommendations", json={"history": ["1", str(n + 2)]}))

            tasks = [post(0)]
            await until(searching.is_set)  # the worker holds the first request, in its search
            tasks += [post(n) for n in range(1, 6)]
            await until(lambda: sum(t.done() for t in tasks) == 3)  # two queued, three refused at once
            assert state.batcher.depth() == 2
            release.set()
            return await asyncio.gather(*tasks)

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 503, 503, 503]  # one searching, two queued; the rest refused at once
    refused = [r for r in responses if r.status_code == 503][0]
    assert refused.json()["error"] == "overloaded" and int(refused.headers["retry-after"]) >= 1
    state.batcher.close()


def test_the_batcher_batches_concurrent_jobs_and_bounds_its_queue():
    sizes, release, searching = [], threading.Event(), threading.Event()

    def search(jobs):
        searching.set()
        release.wait(10)
        sizes.append(len(jobs))
        return [job.history[0] * 10 for job in jobs]

    batcher = MicroBatcher(search, max_batch=4, max_wait_s=0.05, max_queue=6)
    first = batcher.submit(LiveJob([0], frozenset()))
    assert searching.wait(10)  # the worker holds job 0 (blocked in the search)
    futures = [batcher.submit(LiveJob([n], frozenset())) for n in range(1, 7)]
    assert batcher.depth() == 6 and batcher.saturated()
    with pytest.raises(QueueFull) as refused:
        batcher.submit(LiveJob([9], frozenset()))
    assert refused.value.retry_after_s >= 1
    release.set()
    assert [f.result(5) for f in [first, *futures]] == [0, 10, 20, 30, 40, 50, 60]
    assert sizes == [1, 4, 2]  # at most max_batch per search, in arrival order
    batcher.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_the_batcher_nices_its_worker_thread_only():
    seen = []

    def search(jobs):
        tid = threading.get_native_id()
        seen.append((os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))
        return [0 for _ in jobs]

    before = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
    batcher = MicroBatcher(search, max_batch=1, max_wait_s=0, max_queue=1, niceness=3)
    batcher.submit(LiveJob([1], frozenset())).result(10)
    batcher.close()
    assert seen == [(os.SCHED_OTHER, min(before[1] + 3, 19))]  # (19: the most a nice value goes)
    assert (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)) == before  # the server's threads are untouched


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_yield_cpu_puts_a_thread_in_the_idle_class():
    seen = []

    def lowered():
        yield_cpu(5, True, threading.get_native_id())
        tid = threading.get_native_id()
        seen.append((os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))

    before = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join(10)
    assert seen == [(os.SCHED_IDLE, before)]  # idle class; the niceness is not added on top
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_live_metrics_are_exported(live, tiny_run):
    client, _, _ = live
    client.post("/v1/recommendations", json={"history": ["1", "2"]})
    text = client.get("/metrics").text
    for name in ("alignrec_live_duration_seconds_count 1.0", "alignrec_live_batch_size_count 1.0",
                 'alignrec_answers_total{source="live"} 1.0', "alignrec_live_queue_depth 0.0", "alignrec_live_rejected_total 0.0"):
        assert name in text, name


def test_exclude_auto_follows_repeat_consumption():
    import numpy as np

    assert not repeat_consumed([np.array([1, 2, 3]), np.array([4])]) and repeat_consumed([np.array([1, 2, 1])])
    assert resolve_exclude("auto", [np.array([1, 2])]) == "history+request"
    assert resolve_exclude("auto", [np.array([1, 1])]) == "off"
    assert resolve_exclude("history", [np.array([1, 1])]) == "history"
    with pytest.raises(ValueError):
        resolve_exclude("everything", [])
    with pytest.raises(ValueError, match="--live needs --run"):
        ServeConfig(cache="x.sqlite", live=True)


def test_events_and_live_lists_on_either_store(tiny_run, tmp_path, store_url):
    """The live path on SQLite and on a real Redis: events stored, the next GET live, written through."""
    config = PrecacheConfig(top_k=TOP_K, beam_size=TOP_K, batch_size=8, device="cpu", dtype="float32", exclude="history")
    precache(config, tiny_run, store_url, items_registry=tmp_path / "registry.json")
    dataset = dataset_of(tiny_run)
    user_id = dataset.user_ids[3]
    with TestClient(create_app(live_config(store_url, tiny_run, tmp_path))) as client:
        assert client.post(f"/v1/users/{user_id}/events", json={"items": ["2"]}).json()["history_length"] == len(dataset.sequences[3]) + 1
        body = client.get(f"/v1/users/{user_id}/recommendations").json()
        assert body["live"] is True
        want = client.post("/v1/recommendations", json={"history": history_ids(dataset, 3) + ["2"]}).json()
        assert [i["id"] for i in body["items"]] == [i["id"] for i in want["items"]]
    with open_store(store_url) as store:
        assert store.get_history(user_id) == history_ids(dataset, 3) + ["2"]
        deadline = time.monotonic() + 5
        while [i.id for i in store.get(user_id).items[:10]] != [i["id"] for i in body["items"]]:
            assert time.monotonic() < deadline  # the write-through lands
            time.sleep(0.02)


def test_a_failing_search_serves_the_cached_list_or_a_json_500(live, monkeypatch):
    client, state, _ = live
    user_id = state.live.dataset.user_ids[5]
    cached = client.get(f"/v1/users/{user_id}/recommendations").json()

    def broken(jobs):
        raise RuntimeError("boom")

    monkeypatch.setattr(state.batcher, "search", broken)
    client.post(f"/v1/users/{user_id}/events", json={"items": ["4"]})
    body = client.get(f"/v1/users/{user_id}/recommendations").json()  # the fast path
    assert body["stale"] is True and body["items"] == cached["items"]
    client.post("/v1/users/stranger/events", json={"items": ["4"]})
    response = client.get("/v1/users/stranger/recommendations")
    assert response.status_code == 500 and response.json()["error"] == "internal_error"
    response = client.post("/v1/recommendations", json={"history": ["1"]})
    assert response.status_code == 500 and response.json()["error"] == "internal_error"


def test_the_search_in_its_own_process_gives_the_same_lists_and_follows_the_registry(tiny_run, tmp_path, fake_cold_start):
    """``--live-process`` (serve's default): the same lists as the in-process search; registered
    items reach it; it stops with the app."""
    report = precached(tiny_run, tmp_path)
    dataset = dataset_of(tiny_run)
    bodies = [{"history": history_ids(dataset, user), "k": TOP_K} for user in (0, 5, 9)]
    with TestClient(create_app(live_config(report["url"], tiny_run, tmp_path))) as client:
        want = [client.post("/v1/recommendations", json=body).json()["items"] for body in bodies]
    app = create_app(live_config(report["url"], tiny_run, tmp_path, live_process=True), admin_token=TOKEN, assigner=fake_cold_start)
    process = app.state.serve.live.searcher.process
    with TestClient(app, raise_server_exceptions=False) as client:
        assert process.is_alive()
        if hasattr(os, "SCHED_IDLE"):  # --live-idle (default): the search yields the CPU to the server
            assert os.sched_getscheduler(process.pid) == os.SCHED_IDLE
        assert [client.post("/v1/recommendations", json=body).json()["items"] for body in bodies] == want
        created = client.post("/v1/items", json={"item_id": "brand-new", "title": "A new thing"},
                              headers={"authorization": f"Bearer {TOKEN}"})
        assert created.status_code == 201
        response = client.post("/v1/recommendations", json={"history": ["1", "brand-new"]})
        assert response.status_code == 200 and response.json()["live"] is True
        user_id = dataset.user_ids[2]
        client.post(f"/v1/users/{user_id}/events", json={"items": ["3"]})
        assert client.get(f"/v1/users/{user_id}/recommendations").json()["live"] is True
        assert client.get("/healthz").json()["live"] == {"queue": 0}
        process.kill()  # a search process that dies: /healthz says so, live requests fail cleanly
        process.join(10)
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        response = client.post("/v1/recommendations", json={"history": ["1"]})
        assert response.status_code == 500 and response.json()["error"] == "internal_error"
    assert not process.is_alive()
