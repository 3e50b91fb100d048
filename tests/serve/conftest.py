"""Fixtures for the serving tests: a tiny fine-tuned run, a real redis-server, a fake cold start."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from alignrec.serve.items import NewItem
from alignrec.tokenizer.codes import ItemCodes

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A throw-away redis-server on a free loopback port, data in a temp folder, no persistence."""

    def __init__(self, folder: Path):
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
        self.port = free_port()
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def url(self, namespace: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?namespace={namespace}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (for tests that stop it)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    yield server
    server.stop()


_namespaces = iter(range(10**6))


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store location of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cache.sqlite'}"
    server = request.getfixturevalue("redis_server")
    return server.url(f"t{next(_namespaces)}")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alignrec.llm.tiny_run import build_tiny_finetune_run

    torch.set_num_threads(2)
    return build_tiny_finetune_run(tmp_path_factory.mktemp("serve-run") / "run", num_users=40, num_items=24)


@pytest.fixture(scope="session")
def tiny_recommender(tiny_run: Path):
    from alignrec.llm.tiny_run import load_tiny_recommender

    return load_tiny_recommender(tiny_run)


class FakeColdStart:
    """Deterministic stand-in for the tokenizer's cold start: hash the text to a code
    sequence, then take the next free one (so codes are unique, like the real contract)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def assign(self, items: Sequence[NewItem], existing: ItemCodes) -> np.ndarray:
        self.calls.append([item.item_id for item in items])
        sizes = existing.codebook_sizes
        total = int(np.prod(sizes))
        taken = {int(np.ravel_multi_index(tuple(row), sizes)) for row in existing.codes.tolist()}
        out = []
        for item in items:
            flat = sum(map(ord, item.text())) % total
            while flat in taken:
                flat = (flat + 1) % total
            taken.add(flat)
            out.append(np.unravel_index(flat, sizes))
        return np.asarray(out, dtype=np.int64)


@pytest.fixture
def fake_cold_start() -> FakeColdStart:
    return FakeColdStart()
