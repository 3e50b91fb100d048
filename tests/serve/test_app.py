"""The HTTP API: cached lookups, fallback, validation (4xx never 5xx), new items, health, metrics."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignrec.cli import main
from alignrec.serve.app import ServeConfig, create_app
from alignrec.serve.store import CacheEntry, CachedItem, CacheError, open_store

TOKEN = "s3cret-token"


def fill(url: str, users: int = 5, items: int = 12, catalogues: dict[str, str] | None = None, current: str | None = None) -> None:
    """``users`` cached users; ``catalogues`` {user: catalogue version of the entry},
    ``current`` the cache's current catalogue version (None: a cache from before versions)."""
    with open_store(url, create=True) as store:
        store.put_many(
            [
                CacheEntry(
                    f"u{u}",
                    [CachedItem(f"item{u}-{n}", f"Title {n}", f"<a_{n}><b_{u}>", -float(n + u)) for n in range(items)],
                    "v1",
                    "v1:b20:k12",
                    "fp",
                    1234.5,
                    **({"catalogue": catalogues.get(f"u{u}", "")} if catalogues else {}),
                )
                for u in range(users)
            ]
        )
        store.set_meta(
            {"top_k": items, "model_version": "v1", "popular": [{"id": f"pop{n}", "title": f"Popular {n}", "codes": "<a_0>", "score": None} for n in range(30)]}
        )
        if current is not None:
            store.set_meta({"catalogue": current})


@pytest.fixture
def filled(store_url):
    fill(store_url)
    return store_url


@pytest.fixture
def client(filled):
    with TestClient(create_app(ServeConfig(cache=filled), admin_token=TOKEN), raise_server_exceptions=False) as c:
        yield c


def test_cached_lookup_returns_the_top_k(client):
    response = client.get("/v1/users/u2/recommendations", params={"k": 3})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {
        "user_id": "u2",
        "items": [{"id": f"item2-{n}", "title": f"Title {n}", "codes": f"<a_{n}><b_2>", "score": -float(n + 2)} for n in range(3)],
        "fallback": None,
        "model_version": "v1",
        "created": 1234.5,
        "stale": None,  # the cache records no catalogue version: unknown
    }
    assert len(client.get("/v1/users/u2/recommendations").json()["items"]) == 10  # default k
    assert len(client.get("/v1/users/u2/recommendations?k=12").json()["items"]) == 12  # max k = cached top_k


def test_unknown_user_is_a_404_or_a_flagged_fallback(filled):
    with TestClient(create_app(ServeConfig(cache=filled))) as plain:
        response = plain.get("/v1/users/stranger/recommendations")
        assert response.status_code == 404
        assert response.json() == {"error": "unknown_user", "detail": "no recommendations cached for user 'stranger'"}
    with TestClient(create_app(ServeConfig(cache=filled, fallback="popularity"))) as fallback:
        body = fallback.get("/v1/users/stranger/recommendations?k=4").json()
        assert body["fallback"] == "popularity" and [i["id"] for i in body["items"]] == ["pop0", "pop1", "pop2", "pop3"]
        assert fallback.get("/v1/users/u1/recommendations").json()["fallback"] is None  # known users are not flagged


BAD_GETS = [
    "/v1/users/u1/recommendations?k=0",
    "/v1/users/u1/recommendations?k=13",  # above the cached top_k
    "/v1/users/u1/recommendations?k=-5",
    "/v1/users/u1/recommendations?k=abc",
    "/v1/users/u1/recommendations?k=1.5",
    "/v1/users/u1/recommendations?k=99999999999999999999999",
    "/v1/users/u%201/recommendations",  # space
    "/v1/users/%00/recommendations",
    "/v1/users/" + "x" * 200 + "/recommendations",
    "/v1/users/-lead/recommendations",
    "/v1/users/u1/recommendations/extra",
    "/v1/users//recommendations",
    "/v1/users/%2e%2e/recommendations",
    "/v1/nothing",
]


@pytest.mark.parametrize("path", BAD_GETS)
def test_malformed_gets_are_4xx_with_json(client, path):
    response = client.get(path)
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
    assert "error" in response.json()


def test_wrong_methods(client):
    assert client.post("/v1/users/u1/recommendations").status_code == 405
    assert client.delete("/v1/items").status_code == 405


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.text(min_size=0, max_size=140), k=st.one_of(st.integers(-10**6, 10**6).map(str), st.text(max_size=12)))
def test_fuzzed_lookups_never_5xx(client, user, k):
    response = client.get(f"/v1/users/{quote(user, safe='')}/recommendations", params={"k": k})
    assert response.status_code < 500, (user, k, response.text)


# ----------------------------------------------------------------------------- POST /v1/items


@pytest.fixture
def admin_app(tiny_run, tmp_path, fake_cold_start):
    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    fill(url)
    config = ServeConfig(cache=url, run=str(tiny_run), items_registry=str(tmp_path / "registry.json"), max_body_bytes=2048)
    return create_app(config, assigner=fake_cold_start, admin_token=TOKEN)


@pytest.fixture
def admin(admin_app, tmp_path, fake_cold_start):
    with TestClient(admin_app, raise_server_exceptions=False) as c:
        yield c, tmp_path / "registry.json", fake_cold_start


def registry_records(path) -> list[dict]:
    """The item records of a registry file (JSON Lines: a header, then one item per line)."""
    header, *lines = path.read_text().splitlines()
    assert json.loads(header)["version"] == 2
    return [json.loads(line) for line in lines]


def post(client, body, token=TOKEN, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/v1/items", json=body, headers=headers, **kwargs)


def test_register_item_persists_unique_codes(admin, tiny_run):
    client, registry_path, cold_start = admin
    response = post(client, {"item_id": "new-1", "title": "  Fresh guitar  ", "description": "steel strings", "categories": ["Music"]})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"] == "new-1" and body["item_index"] == 24
    assert body["code_string"] == "".join(f"<{'abc'[level]}_{code}>" for level, code in enumerate(body["codes"]))
    saved = registry_records(registry_path)
    assert saved[0]["title"] == "Fresh guitar" and saved[0]["codes"] == body["codes"]
    assert cold_start.calls == [["new-1"]]
    # the cold start saw the fine-tuned catalogue; the new codes belong to no known item
    from alignrec.tokenizer.codes import ItemCodes

    known = {tuple(row) for row in ItemCodes.load(tiny_run / "finetune").codes.tolist()}
    assert tuple(body["codes"]) not in known
    second = post(client, {"item_id": "new-2", "title": "Fresh guitar", "description": "steel strings"})  # same text
    assert second.status_code == 201 and second.json()["codes"] != body["codes"] and second.json()["item_index"] == 25
    # ids are unique across the catalogue and the registry
    assert post(client, {"item_id": "new-1", "title": "again"}).status_code == 409
    assert post(client, {"item_id": "3", "title": "clashes with a fine-tuned item"}).status_code == 409
    assert len(registry_records(registry_path)) == 2


def test_registering_an_item_makes_cached_lists_stale(tiny_run, tmp_path, fake_cold_start):
    """Registration publishes the new catalogue version in the cache metadata: this process
    flags every list computed before at once (other processes within META_TTL_S)."""
    from alignrec.serve.items import ItemRegistry, catalogue_version
    from alignrec.tokenizer.codes import ItemCodes

    base = ItemCodes.load(tiny_run / "finetune")
    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    fill(url, catalogues={f"u{u}": catalogue_version(base) for u in range(5)}, current=catalogue_version(base))
    config = ServeConfig(cache=url, run=str(tiny_run), items_registry=str(tmp_path / "registry.json"))
    with TestClient(create_app(config, assigner=fake_cold_start, admin_token=TOKEN)) as c:
        assert c.get("/v1/users/u1/recommendations").json()["stale"] is False
        assert post(c, {"item_id": "new-1", "title": "Fresh guitar"}).status_code == 201
        assert c.get("/v1/users/u1/recommendations").json()["stale"] is True
    extended, _ = ItemRegistry(tmp_path / "registry.json", base).extended_codes()
    with open_store(url) as store:
        assert store.get_meta("catalogue") == catalogue_version(extended) != catalogue_version(base)
        assert store.get_meta("catalogue_items") == base.num_items + 1 == 25


@pytest.mark.parametrize(
    ("token", "status", "error"),
    [(None, 401, "unauthorized"), ("wrong", 401, "unauthorized"), ("", 401, "unauthorized")],
)
def test_register_item_needs_the_admin_token(admin, token, status, error):
    client, registry_path, _ = admin
    response = post(client, {"item_id": "n", "title": "t"}, token=token)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert not registry_path.exists()
    assert client.post("/v1/items", json={"item_id": "n", "title": "t"}, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_registration_disabled_without_a_token_or_a_run(filled, tiny_run):
    with TestClient(create_app(ServeConfig(cache=filled, run=str(tiny_run)), admin_token="")) as c:
        assert post(c, {"item_id": "n", "title": "t"}).status_code == 403
    with TestClient(create_app(ServeConfig(cache=filled), admin_token=TOKEN)) as c:
        assert post(c, {"item_id": "n", "title": "t"}).status_code == 503


BAD_BODIES = [
    ({"title": "no id"}, 422),
    ({"item_id": "a", "title": ""}, 422),
    ({"item_id": "a b", "title": "space in id"}, 422),
    ({"item_id": "a/b", "title": "slash in id"}, 422),
    ({"item_id": "a", "title": "t", "unexpected": 1}, 422),
    ({"item_id": 5, "title": "t"}, 422),
    ({"item_id": "a", "title": "t", "categories": "not a list"}, 422),
    ({"item_id": "a", "title": "t", "embedding": []}, 422),
    ({"item_id": "a", "title": "x" * 5000}, 413),  # over the 2 KiB body limit of the fixture
    ([1, 2, 3], 422),
    ("just a string", 422),
]


@pytest.mark.parametrize(("body", "status"), BAD_BODIES)
def test_malformed_item_bodies(admin, body, status):
    client, registry_path, _ = admin
    response = post(client, body)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert not registry_path.exists()


def test_malformed_raw_bodies(admin):
    client, _, _ = admin
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    assert client.post("/v1/items", content=b"{not json", headers=headers).status_code == 400
    assert client.post("/v1/items", content=b"\xff\xfe", headers=headers).status_code == 400
    assert client.post("/v1/items", content=b'{"item_id": "a", "title": "t", "embedding": [NaN]}', headers=headers).status_code == 422
    assert client.post("/v1/items", content=b"item_id=a", headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
    assert client.post("/v1/items", content=b"{}", headers={**headers, "Content-Length": "99999999"}).status_code == 413

    def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(10):
            yield b" " * 1000

    assert client.post("/v1/items", content=chunks(), headers=headers).status_code == 413


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"item_id": "first", "title": "t", "item_id": "second"}', "item_id"),
        (b'{"item_id": "a", "title": "t", "embedding": [1.0], "embedding": [2.0]}', "embedding"),
    ],
)
def test_duplicate_json_keys_are_a_400_naming_the_key(admin, body, key):
    """A repeated key is refused (json.loads would keep the second value and register it)."""
    client, registry_path, cold_start = admin
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    response = client.post("/v1/items", content=body, headers=headers)
    assert (response.status_code, response.json()) == (400, {"error": "invalid_json", "detail": f"duplicate key {key!r} in a JSON object"})
    assert not registry_path.exists() and cold_start.calls == []


def test_cold_start_unavailable_is_a_clear_501(filled, tiny_run, tmp_path):
    """The tiny run has item codes but no trained tokenizer model in RUN/tokenizer (or the
    installation lacks the cold-start module): registration says so instead of failing."""
    config = ServeConfig(cache=filled, run=str(tiny_run), items_registry=str(tmp_path / "r.json"))
    with TestClient(create_app(config, admin_token=TOKEN)) as c:
        response = post(c, {"item_id": "n", "title": "t"})
        assert response.status_code == 501 and "cold start" in response.json()["detail"]
        assert not (tmp_path / "r.json").exists()


def test_a_slow_registration_does_not_hold_up_other_requests(admin, monkeypatch):
    """Registration (cold start, registry lock and I/O) runs off the event loop: while one is
    stuck in the cold start, health checks and lookups are answered at once."""
    client, registry_path, cold_start = admin
    entered, release = threading.Event(), threading.Event()
    assign = cold_start.assign

    def slow_assign(items, existing):
        entered.set()
        release.wait(5)
        return assign(items, existing)

    monkeypatch.setattr(cold_start, "assign", slow_assign)
    answers = {}
    poster = threading.Thread(target=lambda: answers.update(post=post(client, {"item_id": "slow-1", "title": "Slow guitar"})))
    poster.start()
    try:
        assert entered.wait(10), "the registration never reached the cold start"
        started = time.perf_counter()
        answers["health"] = client.get("/healthz")
        answers["routed"] = client.get("/v1/users/u1/recommendations?k=2&other=1")  # through FastAPI's route
        answers["fast"] = client.get("/v1/users/u1/recommendations?k=2")
        waited = time.perf_counter() - started
        still_registering = poster.is_alive()
    finally:
        release.set()
        poster.join(30)
    assert waited < 1.0, f"requests waited {waited:.2f} s for the registration"
    assert still_registering
    assert answers["health"].status_code == answers["routed"].status_code == answers["fast"].status_code == 200
    assert answers["post"].status_code == 201 and registry_records(registry_path)[0]["item_id"] == "slow-1"


def test_cold_start_is_loaded_at_start_up_not_by_the_first_post(filled, tiny_run, tmp_path, monkeypatch, fake_cold_start):
    """The tokenizer's cold start (for a text tokenizer: the LLM's input embeddings, seconds to
    load) is loaded while the app is built, before it serves; not by the first POST."""
    from alignrec.serve import items

    loads = []

    def load(tokenizer_dir):
        loads.append(tokenizer_dir)
        return fake_cold_start

    monkeypatch.setattr(items, "load_code_assigner", load)
    config = ServeConfig(cache=filled, run=str(tiny_run), items_registry=str(tmp_path / "r.json"))
    app = create_app(config, admin_token=TOKEN)
    assert loads == [tiny_run / "tokenizer"]
    with TestClient(app) as c:
        assert post(c, {"item_id": "n1", "title": "t"}).status_code == 201
        assert post(c, {"item_id": "n2", "title": "u"}).status_code == 201
    assert len(loads) == 1 and fake_cold_start.calls == [["n1"], ["n2"]]
    # registration disabled (no token) or a start-up check: nothing to load
    create_app(config, admin_token="")
    create_app(config, admin_token=TOKEN, load_cold_start=False)
    assert len(loads) == 1


def test_deeply_nested_json_is_a_400(admin):
    client, registry_path, _ = admin
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for body in (b"[" * 1200, b"[" * 1000 + b"]" * 1000, b'{"item_id": "a", "title": "t", "categories": ' + b"[" * 1200):
        response = client.post("/v1/items", content=body, headers=headers)
        assert (response.status_code, response.json()) == (400, {"error": "invalid_json", "detail": "the JSON body is nested too deeply"})
    assert not registry_path.exists()


@pytest.mark.parametrize("value", [1e300, -1e300, 3.5e38, 1e39])
def test_embeddings_beyond_float32_are_a_422(admin, value):
    """The embedding is cast to float32: a value beyond its range would become inf."""
    client, registry_path, cold_start = admin
    response = post(client, {"item_id": "big", "title": "t", "embedding": [0.5, value, 1.0]})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and body["detail"][0]["loc"] == ["embedding", 1]
    assert not registry_path.exists() and cold_start.calls == []
    # the largest float32 is fine
    assert post(client, {"item_id": "edge", "title": "t", "embedding": [3.4028234663852886e38, -3.4e38]}).status_code == 201


def test_no_trailing_slash_redirect(client):
    """A redirect to the slash-less path would echo the Host header (a redirect to any host)."""
    for path in ("/healthz/", "/v1/users/u1/recommendations/", "/v1/items/"):
        response = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert response.status_code == 404 and "location" not in response.headers, (path, response.status_code)
        assert response.json()["error"] == "not_found"
        assert "evil.example" not in response.text


def test_answers_name_no_files_or_hosts(filled, tmp_path, monkeypatch):
    """/healthz and every 503 say what failed, not where: the store's path (or Redis host) is
    in the server log only."""
    with TestClient(create_app(ServeConfig(cache=filled)), raise_server_exceptions=False) as c:
        health = c.get("/healthz")
        assert health.status_code == 200 and health.json()["store"] in ("sqlite", "redis")
        assert str(tmp_path) not in health.text and "127.0.0.1" not in health.text
        store = c.app.state.store
        secret = f"{tmp_path}/private/cache.sqlite"

        def fail(*args):
            raise CacheError(f"{secret}: cannot read the cache (disk I/O error)")

        monkeypatch.setattr(store, "get_json", fail)
        monkeypatch.setattr(store, "get_meta", fail)
        answers = [c.get("/healthz"), c.get("/v1/users/u1/recommendations"), c.get("/v1/users/u1/recommendations?k=2&other=1")]
    for response in answers:
        assert response.status_code == 503, response.text
        assert "private" not in response.text and str(tmp_path) not in response.text
    assert answers[0].json() == {
        "status": "unavailable", "store": store.scheme, "detail": "the cache store cannot be reached or read (details in the server log)"
    }
    assert answers[1].json() == {"error": "cache_error", "detail": "the cache store cannot be reached or read (details in the server log)"}


def test_lookups_say_whether_the_list_is_stale(store_url):
    """An entry computed against another catalogue version than the cache's current one (items
    were registered since) is flagged ``stale``; on both the fast path and FastAPI's route."""
    fill(store_url, catalogues={"u0": "25-new", "u1": "24-old"}, current="25-new")  # u2: from before versions
    with TestClient(create_app(ServeConfig(cache=store_url))) as c:
        for query in ("?k=2", "?k=2&other=1"):
            assert [c.get(f"/v1/users/u{u}/recommendations{query}").json()["stale"] for u in range(3)] == [False, True, True]


# ----------------------------------------------------------------------------- health, metrics, errors


def test_healthz_and_metrics(client, filled):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model_version"] == "v1" and health["top_k"] == 12
    client.get("/v1/users/u1/recommendations")
    client.get("/v1/users/u2/recommendations?k=2")
    client.get("/v1/users/nobody/recommendations")
    client.get("/v1/users/u1/recommendations?k=0")
    text = client.get("/metrics").text
    assert 'alignrec_cache_lookups_total{outcome="hit"} 2.0' in text
    assert 'alignrec_cache_lookups_total{outcome="miss"} 1.0' in text
    assert 'alignrec_http_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"} 2.0' in text
    assert 'alignrec_http_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="422"} 1.0' in text
    assert 'alignrec_http_request_duration_seconds_count{route="/healthz"} 1.0' in text


def test_missing_and_corrupt_cache(tmp_path, capsys):
    with pytest.raises(CacheError, match="cache not found"):
        create_app(ServeConfig(cache=str(tmp_path / "none.sqlite")))
    assert main(["serve", "--cache", str(tmp_path / "none.sqlite")]) == 2
    assert "cache not found (run `alignrec precache` first)" in capsys.readouterr().err
    empty = tmp_path / "empty.sqlite"
    open_store(empty, create=True).close()
    with pytest.raises(CacheError, match="no entries yet"):
        create_app(ServeConfig(cache=str(empty)))
    # a corrupt entry: a clear 503 JSON error naming the user, not a crash
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    fill(url)
    import sqlite3

    with sqlite3.connect(tmp_path / "c.sqlite") as connection:
        connection.execute("UPDATE entries SET value = '[1, 2' WHERE user_id = 'u1'")
    with TestClient(create_app(ServeConfig(cache=url)), raise_server_exceptions=False) as c:
        response = c.get("/v1/users/u1/recommendations")
        assert response.status_code == 503 and response.json()["error"] == "cache_error" and "'u1'" in response.json()["detail"]
        assert c.get("/v1/users/u2/recommendations").status_code == 200


def test_a_registry_damaged_while_serving_is_a_503(admin):
    """A registry line written wrong by another process: the next POST is a 503 naming no file."""
    client, registry_path, _ = admin
    assert post(client, {"item_id": "n1", "title": "t"}).status_code == 201
    with open(registry_path, "a") as handle:
        handle.write('{"item_id": "x", "title": "t", "description": "", "brand": "", "categories": [], "codes": [999, 1, 2], "created": 1.0}\n')
    response = post(client, {"item_id": "n2", "title": "u"})
    assert (response.status_code, response.json()["error"]) == (503, "registry_error")
    assert str(registry_path) not in response.text
    assert client.get("/v1/users/u1/recommendations").status_code == 200


@pytest.mark.parametrize(
    ("key", "value"),
    [("popular", {"a": 1}), ("popular", [1, 2]), ("top_k", "12"), ("top_k", 0), ("model_version", 5), ("catalogue", [1])],
)
def test_corrupt_metadata_is_refused_at_start_up_and_a_503_later(store_url, monkeypatch, key, value):
    """Metadata of the wrong shape (e.g. popular = {"a": 1}) names the store and key at
    start-up; written while the server runs, it is a 503 (it was a 500 for unknown users)."""
    from alignrec.serve import app as app_module

    fill(store_url)
    with open_store(store_url) as store:
        whole = store.get_meta(key)
        store.set_meta({key: value})
        with pytest.raises(CacheError, match=f"corrupt metadata {key!r}"):
            create_app(ServeConfig(cache=store_url, fallback="popularity"))
        store.set_meta({key: whole})
        with TestClient(create_app(ServeConfig(cache=store_url, fallback="popularity")), raise_server_exceptions=False) as c:
            assert c.get("/v1/users/stranger/recommendations").status_code == 200
            store.set_meta({key: value})
            monkeypatch.setattr(app_module, "META_TTL_S", 0.0)  # re-read at once
            for path in ("/v1/users/stranger/recommendations", "/v1/users/stranger/recommendations?other=1", "/v1/users/u1/recommendations", "/healthz"):
                response = c.get(path)
                assert response.status_code == 503, (path, response.text)


def test_a_registry_entry_outside_the_codebooks_is_a_start_up_error(tiny_run, tmp_path, fake_cold_start, capsys):
    """A registry record with codes [999, 1, 2] (codebooks of 4): create_app and `alignrec
    precache` refuse it naming the file (the server used to start, then answer the next POST with
    a 500, and precache crashed)."""
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({
        "format": "alignrec-items-registry", "version": 1, "codebook_sizes": [4, 4, 4],
        "items": [{"item_id": "bad", "title": "t", "description": "", "brand": "", "categories": [], "codes": [999, 1, 2], "created": 1.0}],
    }))
    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    fill(url)
    from alignrec.errors import InputError

    with pytest.raises(InputError, match=r"registry.json: items\[0\] \('bad'\) has codes \[999, 1, 2\] outside the codebooks"):
        create_app(ServeConfig(cache=url, run=str(tiny_run), items_registry=str(registry)), assigner=fake_cold_start, admin_token=TOKEN)
    assert main(["precache", "--model", str(tiny_run), "--cache", url, "--items-registry", str(registry)]) == 2
    assert "outside the codebooks" in capsys.readouterr().err


def test_a_deleted_or_replaced_cache_file_is_noticed(tmp_path, monkeypatch):
    """A server holds its SQLite file open: deleted, it kept serving the unlinked file and
    /healthz said ok; replaced (a rebuilt cache moved into place), it kept the old one."""
    from alignrec.serve.store import SQLiteStore

    path = tmp_path / "cache.sqlite"
    fill(f"sqlite:///{path}")
    with TestClient(create_app(ServeConfig(cache=str(path))), raise_server_exceptions=False) as c:
        assert c.get("/v1/users/u1/recommendations").json()["model_version"] == "v1"
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"cache.sqlite{suffix}").unlink(missing_ok=True)
        monkeypatch.setattr(SQLiteStore, "FILE_CHECK_S", 0.0, raising=False)  # lookups check at most every second
        assert c.get("/v1/users/u1/recommendations").status_code == 503
        assert c.get("/healthz").status_code == 503  # and every health check
        assert not path.exists()  # not recreated as an empty database
        rebuilt = tmp_path / "rebuilt" / "cache.sqlite"
        with open_store(rebuilt, create=True) as store:
            store.put_many([CacheEntry("u1", [CachedItem("fresh", "Fresh", "<a_1>", -1.0)], "v2", "v2:b20:k12", "fp", 99.0)])
            store.set_meta({"top_k": 12, "model_version": "v2", "popular": []})
        os.replace(rebuilt, path)
        health = c.get("/healthz")
        assert health.status_code == 200 and health.json()["model_version"] == "v2"
        body = c.get("/v1/users/u1/recommendations").json()
        assert (body["model_version"], [item["id"] for item in body["items"]]) == ("v2", ["fresh"])
        assert c.get("/v1/users/u1/recommendations?other=1").json()["model_version"] == "v2"


def test_redis_going_away_is_a_503(fresh_redis):
    server = fresh_redis
    url = server.url("gone")
    fill(url)
    with TestClient(create_app(ServeConfig(cache=url)), raise_server_exceptions=False) as c:
        assert c.get("/v1/users/u1/recommendations").status_code == 200
        server.stop()
        response = c.get("/v1/users/u1/recommendations")
        assert response.status_code == 503 and response.json()["error"] == "cache_error"
        assert c.get("/healthz").status_code == 503


def test_a_hung_redis_is_a_prompt_503_and_other_routes_do_not_wait(fresh_redis):
    """Redis paused (SIGSTOP): a lookup is a 503 within the store timeout (default 1 s) instead
    of 10-30 s, and /metrics and /openapi.json, which do not touch the store, answer at once
    (the fast path used to read Redis in the event loop)."""
    import signal

    server = fresh_redis
    url = server.url("hung")
    fill(url)
    answers, waited = {}, {}

    def timed(name, path):
        started = time.perf_counter()
        answers[name] = c.get(path)
        waited[name] = time.perf_counter() - started

    with TestClient(create_app(ServeConfig(cache=url)), raise_server_exceptions=False) as c:
        assert c.get("/v1/users/u1/recommendations").status_code == 200
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            readers = [threading.Thread(target=timed, args=(name, path)) for name, path in (
                ("fast", "/v1/users/u1/recommendations"), ("routed", "/v1/users/u1/recommendations?other=1"), ("health", "/healthz")
            )]
            for reader in readers:
                reader.start()
            time.sleep(0.2)  # the reads are waiting on Redis
            timed("metrics", "/metrics")
            timed("openapi", "/openapi.json")
            for reader in readers:
                reader.join(60)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert waited["metrics"] < 0.5 and waited["openapi"] < 0.5, waited
        for name in ("fast", "routed", "health"):
            assert answers[name].status_code == 503 and waited[name] < 2.5, (name, answers[name].text, waited)
        assert answers["fast"].json() == {"error": "cache_error", "detail": "the cache store cannot be reached or read (details in the server log)"}
        deadline = time.monotonic() + 10  # and once Redis answers again, so does the server
        while c.get("/v1/users/u1/recommendations").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@contextlib.contextmanager
def running_server(app, config: ServeConfig | None = None, protocol: str | None = None) -> Iterator[int]:
    """Serve ``app`` in a thread with the uvicorn options `alignrec serve` uses (``config``'s;
    ``protocol``: force uvicorn's "h11" or "httptools"), logging left to pytest; yields the port."""
    import uvicorn

    from alignrec.serve.app import uvicorn_options

    options = uvicorn_options(dataclasses.replace(config or ServeConfig(cache="unused"), port=free_port()), protocol or "auto")
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, **options))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        yield options["port"]
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
def test_unparseable_requests_get_a_json_400(filled, protocol):
    """Both of uvicorn's HTTP implementations, with the options `alignrec serve` runs them with."""
    with running_server(create_app(ServeConfig(cache=filled)), protocol=protocol) as port:
        status, headers, body = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        assert (status, headers["content-type"]) == (400, "application/json")
        assert json.loads(body) == {"error": "bad_request", "detail": "Invalid HTTP request received."}
        good = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert good[0] == 200 and json.loads(good[2])["status"] == "ok"
        # no WebSocket upgrades: the request is served as plain HTTP
        upgrade = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n"
        assert raw_exchange(port, upgrade)[0] == 200


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
def test_a_client_leaving_mid_body_is_no_server_error(admin_app, caplog, protocol):
    """A client that closes its connection halfway through a POST body: nothing is registered,
    nothing is logged as an error, and /metrics counts a 499 (client closed request), not a 500."""
    head = f"POST /v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    caplog.set_level(logging.INFO)
    with running_server(admin_app, protocol=protocol) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(head.encode() + b'{"item_id": "half')
            time.sleep(0.2)  # the route is reading the body
        deadline = time.monotonic() + 10
        while 'route="/v1/items"' not in (metrics := httpx.get(f"http://127.0.0.1:{port}/metrics").text):
            assert time.monotonic() < deadline, "the abandoned request was never counted"
            time.sleep(0.05)
    assert 'alignrec_http_requests_total{method="POST",route="/v1/items",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


def closed_by_server(connection: socket.socket, within_s: float) -> float | None:
    """Seconds until the server closed ``connection`` (reading and dropping what it sends), or
    None if it was still open after ``within_s``."""
    started = time.perf_counter()
    connection.settimeout(within_s)
    try:
        while connection.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.perf_counter() - started


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
def test_incomplete_requests_and_idle_connections_are_closed(filled, protocol):
    """A connection that sends nothing, half the headers, or half a body is closed after
    request_timeout_s; an idle keep-alive connection after keep_alive_timeout_s; a slow client
    sending a byte at a time cannot stretch the deadline (uvicorn held all of these forever)."""
    config = ServeConfig(cache=filled, request_timeout_s=0.5, keep_alive_timeout_s=0.3)
    with running_server(create_app(config), config, protocol) as port:
        openers = {
            "silent": b"",
            "half the headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            "half a body": b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        }
        connections = {name: socket.create_connection(("127.0.0.1", port)) for name in [*openers, "byte by byte", "kept alive"]}
        try:
            for name, data in openers.items():
                connections[name].sendall(data)
            connections["kept alive"].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(OSError):  # the server closes it midway
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
                    connections["byte by byte"].sendall(bytes([byte]))
                    time.sleep(0.1)
            closed = {name: closed_by_server(connection, within_s=3.0) for name, connection in connections.items()}
        finally:
            for connection in connections.values():
                connection.close()
        assert all(seconds is not None for seconds in closed.values()), closed
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200  # normal requests are unaffected


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_command_answers_over_http(tmp_path):
    """`alignrec serve` in its own process, queried over loopback."""
    import socket

    filled = f"sqlite:///{tmp_path / 'c.sqlite'}"
    fill(filled)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "alignrec.cli", "serve", "--cache", filled, "--port", str(port)],
        env={**os.environ, "ALIGNREC_PROGRESS": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/users/u3/recommendations?k=2", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert response.status_code == 200 and [i["id"] for i in response.json()["items"]] == ["item3-0", "item3-1"]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
        # requests uvicorn cannot parse are answered before the app: as JSON too
        for raw in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", b"\x16\x03\x01 not http\r\n\r\n"):
            status, headers, body = raw_exchange(port, raw)
            assert status == 400 and headers["content-type"] == "application/json", (raw, status, headers, body)
            assert json.loads(body)["error"] == "bad_request"
        redirect = httpx.get(f"http://127.0.0.1:{port}/healthz/", headers={"Host": "evil.example"})
        assert redirect.status_code == 404 and "location" not in redirect.headers
    finally:
        process.terminate()
        process.wait(30)
        process.stderr.close()


@pytest.mark.parametrize("user", ["u1", "stranger"])
@pytest.mark.parametrize("fallback", ["none", "popularity"])
def test_fast_path_answers_like_the_fastapi_route(filled, user, fallback):
    """Plain requests take the fast path; the same request with an extra (ignored) query
    parameter goes through FastAPI's validation. Both must answer byte for byte the same."""
    with TestClient(create_app(ServeConfig(cache=filled, fallback=fallback))) as c:
        for k in ("", "?k=1", "?k=7", "?k=12"):
            fast = c.get(f"/v1/users/{user}/recommendations{k}")
            routed = c.get(f"/v1/users/{user}/recommendations{k}{'&' if k else '?'}other=1")
            assert (fast.status_code, fast.content) == (routed.status_code, routed.content)
            assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
        metrics = c.get("/metrics").text
        # both paths are counted under the route template
        assert 'route="/v1/users/{user_id}/recommendations",status=' in metrics


@pytest.mark.parametrize("user", ["u1%0A", "u1%0D%0A", "%0Au1"])
def test_a_newline_in_the_id_is_a_422_on_both_paths(client, user):
    """`$` also matches before a final newline: the fast path must not take "u1\\n" for an id."""
    fast = client.get(f"/v1/users/{user}/recommendations")
    routed = client.get(f"/v1/users/{user}/recommendations?other=1")
    assert fast.status_code == routed.status_code == 422, (fast.text, routed.text)
    assert fast.json()["error"] == "invalid_request"


def test_worker_processes_build_the_app_from_the_environment(filled, monkeypatch):
    """`alignrec serve --workers N` hands its config to uvicorn's worker processes as JSON."""
    from alignrec.config import to_dict
    from alignrec.errors import InputError
    from alignrec.serve.app import CONFIG_ENVIRONMENT, app_from_environment

    monkeypatch.delenv(CONFIG_ENVIRONMENT, raising=False)
    with pytest.raises(InputError, match=CONFIG_ENVIRONMENT):
        app_from_environment()
    monkeypatch.setenv(CONFIG_ENVIRONMENT, json.dumps(to_dict(ServeConfig(cache=filled, max_k=5, default_k=3, workers=2))))
    with TestClient(app_from_environment()) as c:
        assert len(c.get("/v1/users/u1/recommendations").json()["items"]) == 3
        assert len(c.get("/v1/users/u1/recommendations?k=5").json()["items"]) == 5
        assert c.get("/v1/users/u1/recommendations?k=6").status_code == 422


def test_openapi_documents_both_routes(client):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {"/v1/users/{user_id}/recommendations", "/v1/items", "/healthz", "/metrics"}
    body = spec["paths"]["/v1/items"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"item_id", "title"} <= set(body["required"])


def test_a_model_beside_other_item_codes_is_refused_at_start_up(tiny_run, tmp_path, fake_cold_start):
    """Issue 13.14: serving must not hand new items codes next to a model trained with other codes."""
    import shutil

    from alignrec.errors import InputError
    from alignrec.llm.finetuned import SETTINGS_KEY

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config_path = run / "finetune" / "model" / "config.json"
    model_config = json.loads(config_path.read_text())
    model_config[SETTINGS_KEY] = {"head": "full", "sequential_format": "lcrec", "codes_version": "0123456789abcdef"}
    config_path.write_text(json.dumps(model_config))
    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    fill(url)
    config = ServeConfig(cache=url, run=str(run), items_registry=str(tmp_path / "registry.json"))
    with pytest.raises(InputError, match="mixes two runs"):
        create_app(config, assigner=fake_cold_start, admin_token=TOKEN)
