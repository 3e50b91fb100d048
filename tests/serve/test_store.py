"""Cache stores (SQLite, real Redis): round trips, metadata, errors, atomic entries under concurrency."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time

import pytest

from alignrec.serve.store import CacheEntry, CachedItem, CacheError, SQLiteStore, open_store


def entry(user: str, version: int, items: int = 20) -> CacheEntry:
    # Every score equals the version: a reader can tell a whole entry from a mixed one.
    return CacheEntry(
        user_id=user,
        items=[CachedItem(id=f"i{version}-{n}", title=f"title {n}", codes=f"<a_{n}>", score=float(version)) for n in range(items)],
        model_version=f"v{version}",
        run_key=f"v{version}:b20:k20",
        fingerprint=f"fp-{user}",
        created=1000.0 + version,
    )


def test_round_trip_replace_fingerprints_and_meta(store_url):
    with open_store(store_url, create=True) as store:
        store.mark_format()
        assert store.count() == 0 and store.get("u1") is None and store.fingerprints() == {}
        store.put_many([entry("u1", 1), entry("u2", 1, items=3)])
        store.put_many([entry("u2", 2, items=5)])  # replaces u2
        assert store.count() == 2
        got = store.get("u2")
        assert got == entry("u2", 2, items=5)
        assert json.loads(store.get_json("u1"))["items"][0] == {"id": "i1-0", "title": "title 0", "codes": "<a_0>", "score": 1.0}
        assert store.fingerprints() == {"u1": ("fp-u1", "v1:b20:k20"), "u2": ("fp-u2", "v2:b20:k20")}
        store.set_meta({"top_k": 20, "popular": [{"id": "x"}]})
        store.set_meta({"top_k": 10})
        assert store.get_meta("top_k") == 10 and store.get_meta("popular") == [{"id": "x"}] and store.get_meta("nope") is None
    # reopening without create finds the same data
    with open_store(store_url) as store:
        assert store.count() == 2 and store.get("u1").model_version == "v1"


def test_catalogue_versions(store_url):
    """The catalogue version each entry was computed against ("" for entries from before versions)."""
    with open_store(store_url, create=True) as store:
        store.put_many([entry("u1", 1), entry("u2", 1)])  # no version recorded
        assert store.catalogue_versions() == {"u1": "", "u2": ""}
        newer = entry("u2", 2)
        newer.catalogue = "25-abc"
        store.put_many([newer, CacheEntry("u3", [], "v", "k", "f", 1.0, catalogue="24-def")])
        assert store.catalogue_versions() == {"u1": "", "u2": "25-abc", "u3": "24-def"}
        assert store.get("u2").catalogue == "25-abc" and store.get("u1").catalogue == ""
        assert store.fingerprints()["u2"] == ("fp-u2", "v2:b20:k20")  # unchanged by versions


def test_unicode_ids_and_titles_survive(store_url):
    with open_store(store_url, create=True) as store:
        item = CachedItem(id="é-1", title="Ünïcödé ☃ \"quoted\"", codes="<a_1>", score=None)
        store.put_many([CacheEntry("ü:1", [item], "v", "k", "f", 1.0)])
        assert store.get("ü:1").items == [item]


def test_missing_corrupt_and_foreign_sqlite_files(tmp_path):
    with pytest.raises(CacheError, match="cache not found .*alignrec precache"):
        open_store(tmp_path / "missing.sqlite")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match="not a readable SQLite cache"):
        open_store(garbage)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE something (x)")
    with pytest.raises(CacheError, match="not an alignrec cache"):
        open_store(f"sqlite:///{foreign}")
    newer = tmp_path / "newer.sqlite"
    with open_store(newer, create=True) as store:
        store.set_meta({"format": {"name": "alignrec-cache", "version": 99}})
    with pytest.raises(CacheError, match="not an alignrec cache of version 1"):
        open_store(newer)
    with pytest.raises(CacheError, match="unknown cache store 'memcached'"):
        open_store("memcached://localhost")


def test_corrupt_entry_is_a_clear_error(tmp_path):
    path = tmp_path / "c.sqlite"
    with SQLiteStore(path, create=True) as store:
        store.put_many([entry("u1", 1)])
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE entries SET value = '{\"user_id\": \"u1\", \"items\": [' WHERE user_id = 'u1'")
    with SQLiteStore(path) as store, pytest.raises(CacheError, match="user 'u1'.*corrupt cache entry"):
        store.get("u1")


def test_redis_errors(redis_server, tmp_path):
    with pytest.raises(CacheError, match="no alignrec cache in this namespace"):
        open_store(redis_server.url("never-written"))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(CacheError, match="cannot reach the Redis server"):
        open_store(f"redis://127.0.0.1:{port}/0", create=True)
    with pytest.raises(CacheError, match="namespace must be"):
        open_store(redis_server.url("a:b"))


def closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_redact_url():
    from alignrec.serve.store import redact_url

    assert redact_url("redis://:s3cret@127.0.0.1:6379/0?namespace=g") == "redis://***@127.0.0.1:6379/0?namespace=g"
    assert redact_url("redis://admin:s3cret@h/0") == "redis://***@h/0"
    assert redact_url("redis://h/0?password=s3cret&namespace=g") == "redis://h/0?password=***&namespace=g"
    assert redact_url("sqlite:///tmp/c.sqlite") == "sqlite:///tmp/c.sqlite"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@127.0.0.1:{port}/0?namespace=a:b",  # a bad namespace
        "redis://user:s3cret@127.0.0.1:{port}/0?namespace=bad name",
        "rediz://:s3cret@127.0.0.1:{port}/0",  # an unknown store
        "redis://:s3cret@127.0.0.1:{port}/0",  # nobody listens
        "redis://127.0.0.1:{port}/0?password=s3cret",
        "redis://:s3cret@127.0.0.1:notaport/0",
    ],
)
def test_store_errors_never_show_a_password(url, capsys):
    from alignrec.cli import main

    url = url.format(port=closed_port())
    with pytest.raises(CacheError) as caught:
        open_store(url)
    assert "s3cret" not in str(caught.value)
    assert main(["serve", "--cache", url]) == 2
    assert "s3cret" not in capsys.readouterr().err


def test_readers_never_see_a_half_written_entry(store_url):
    """A writer rewrites 200 users' 20-item entries with a new version again and again, in
    transactions of 50 users; readers (other connections) check that every entry they get is
    whole: 20 items, all scores equal to the entry's own version."""
    users = [f"u{n}" for n in range(200)]
    with open_store(store_url, create=True) as store:
        store.put_many([entry(u, 0) for u in users])
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def write() -> None:
        with open_store(store_url) as writer:
            version = 1
            while not stop.is_set():
                for start in range(0, len(users), 50):
                    writer.put_many([entry(u, version) for u in users[start : start + 50]])
                version += 1

    def read(offset: int) -> None:
        with open_store(store_url) as reader:
            n = offset
            while not stop.is_set():
                got = reader.get(users[n % len(users)])
                n += 7
                reads[0] += 1
                version = int(got.model_version[1:])
                if len(got.items) != 20 or any(i.score != version or not i.id.startswith(f"i{version}-") for i in got.items):
                    problems.append(f"mixed entry {got}")

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read, args=(o,)) for o in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not problems, problems[:3]
    assert reads[0] > 100
    with open_store(store_url) as store:
        final = {store.get(u).model_version for u in users}
    assert final != {"v0"}  # the writer did rewrite entries while we read


def test_histories_append_atomically_from_a_base_and_survive_reopening(store_url):
    with open_store(store_url, create=True) as store:
        assert store.get_history("u1") is None
        assert store.append_history("u1", ["i3"], base=["i1", "i2"]) == ["i1", "i2", "i3"]
        assert store.append_history("u1", ["i4", "i5"], base=["ignored"]) == ["i1", "i2", "i3", "i4", "i5"]  # base only once
        assert store.append_history("new", ["é"]) == ["é"]
        store.put_many([entry("u1", 1)])
        raw, history = store.get_with_history("u1")
        assert json.loads(raw)["user_id"] == "u1" and history == ["i1", "i2", "i3", "i4", "i5"]
        assert store.get_with_history("nobody") == (None, None)
        # concurrent appends from several threads (each its own connection): none is lost
        def add(thread: int) -> None:
            for n in range(20):
                store.append_history("busy", [f"t{thread}-{n}"], base=["b"])

        threads = [threading.Thread(target=add, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        busy = store.get_history("busy")
        assert busy[0] == "b" and sorted(busy[1:]) == sorted(f"t{t}-{n}" for t in range(4) for n in range(20))
        assert [i for i in busy if i.startswith("t2-")] == [f"t2-{n}" for n in range(20)]  # each thread's order kept
    with open_store(store_url) as store:  # a restart keeps them
        assert store.get_history("u1") == ["i1", "i2", "i3", "i4", "i5"] and store.get_history("new") == ["é"]


def test_a_cache_from_before_histories_gets_the_table_on_the_first_event(tmp_path):
    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE entries (user_id TEXT PRIMARY KEY, value TEXT NOT NULL, fingerprint TEXT NOT NULL, run_key TEXT NOT NULL) WITHOUT ROWID")
    connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
    connection.commit()
    connection.close()
    store = SQLiteStore(path)
    assert store.get_history("u1") is None
    assert store.append_history("u1", ["a"]) == ["a"] and store.get_history("u1") == ["a"]
    store.close()
