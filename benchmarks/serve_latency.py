"""Latency of ``alignrec serve`` for cached lookups under load, SQLite vs. Redis.

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/serve_latency.py

For each store the cache is filled with one 20-item entry per user (50,546 users: the Games
data set's user count), ``alignrec serve`` is started as its own process on loopback, and a
separate load-generator process (benchmarks/loadgen.py, open loop) requests
``/v1/users/u<random>/recommendations?k=10`` at fixed rates, stepping up until the server
saturates. p50/p99 are measured from each request's scheduled time. A closed-loop ``wrk`` run
(when installed) gives the saturation throughput. Redis is a fresh ``redis-server`` on
loopback.

"Reads during registration": the SQLite server is restarted with ``--run`` (a tiny run whose
tokenizer was trained with SmolLM2 text vectors, so a text-only item needs the LLM text
embedder) and, from the moment ``/healthz`` first answers, reads at 1,000 req/s run while a
thread sends one text-only ``POST /v1/items`` per second; then the same again on the warm
server; then on a server whose registry already holds 2,000 items. Target: read p99 <= 5 ms.

"Reads while Redis is paused": reads at 1,000 req/s on the Redis server while the redis-server
process is stopped (SIGSTOP) for 2 s; every answer must come within the store timeout (a 503
``cache_error`` while Redis does not answer), none later.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, BenchmarkRun  # noqa: E402

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120.0, interval: float = 0.2) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def fill(url: str, users: int, items: int) -> float:
    from alignrec.serve.store import CacheEntry, CachedItem, open_store

    started = time.perf_counter()
    with open_store(url, create=True) as store:
        batch = []
        for user in range(users):
            batch.append(
                CacheEntry(
                    f"u{user}",
                    [
                        CachedItem(f"B00{(user * 31 + n) % 16859:06d}", f"Some game title number {(user + n) % 997} (Deluxe Edition)", f"<a_{n}><b_{user % 256}><c_{(user + n) % 256}><d_{n * 7 % 256}>", -3.5 - n / 10)
                        for n in range(items)
                    ],
                    "benchmark-model",
                    "benchmark-model:b20:k20",
                    f"fp{user}",
                )
            )
            if len(batch) == 5000:
                store.put_many(batch)
                batch = []
        store.put_many(batch)
        store.set_meta({"top_k": items, "model_version": "benchmark-model", "popular": []})
    return time.perf_counter() - started


def loadgen(port: int, users: int, rate: float, duration: float, connections: int, warmup: float = 1.0) -> dict:
    command = [PYTHON, str(REPO_ROOT / "benchmarks" / "loadgen.py"), "--port", str(port), "--users", str(users),
               "--rate", str(rate), "--duration", str(duration), "--connections", str(connections), "--warmup", str(warmup)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout)


def wrk_saturation(port: int, users: int, duration: int, connections: int, folder: Path) -> dict | None:
    if shutil.which("wrk") is None:
        return None
    script = folder / "random_user.lua"
    script.write_text(
        f'math.randomseed(1)\nrequest = function()\n  return wrk.format("GET", "/v1/users/u" .. math.random(0, {users - 1}) .. "/recommendations?k=10")\nend\n'
    )
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration + 60,
    )
    out = result.stdout
    parsed: dict = {"raw": out.strip().splitlines()[-12:]}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            parsed["requests_per_s"] = float(line.split()[1])
        for q in ("50%", "99%"):
            if line.startswith(q):
                value = line.split()[1]
                scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
                unit = next(u for u in ("us", "ms", "s") if value.endswith(u))
                parsed[f"p{q[:-1]}_ms"] = round(float(value[: -len(unit)]) * scale[unit], 3)
    return parsed


def serve(cache_url: str, port: int, workers: int, extra: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "ALIGNREC_PROGRESS": "0", **(env or {})}
    return subprocess.Popen(
        [PYTHON, "-m", "alignrec.cli", "--log-level", "WARNING", "serve", "--cache", cache_url, "--port", str(port),
         "--workers", str(workers), *(extra or [])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


REGISTRY_LEVELS, REGISTRY_CODEBOOK = 4, 8  # 4,096 code sequences: room for 2,000 registered items and more
PREREGISTERED = 2000
PAUSE_S = 2.0
STORE_TIMEOUT_S = 1.0  # alignrec serve's default --store-timeout-s


def build_text_run(folder: Path) -> Path:
    """A tiny fine-tuned run whose tokenizer was trained with SmolLM2 text vectors (a ridge map
    from text to behaviour), so registering a text-only item needs the LLM text embedder."""
    import numpy as np
    from safetensors.numpy import save_file

    from alignrec.data import load_dataset
    from alignrec.data.synthetic import write_synthetic
    from alignrec.llm.tiny_run import build_tiny_finetune_run
    from alignrec.tokenizer.config import TokenizerConfig
    from alignrec.tokenizer.train import train_tokenizer

    run = folder / "run"
    write_synthetic(run, num_users=40, num_items=24, groups=4, length=6, kind="clusters", seed=0)
    dataset = load_dataset(run)
    groups = np.array([int(item_id) % 4 for item_id in dataset.item_ids])
    vectors = (5.0 * np.eye(8)[:4][groups] + 0.3 * np.random.default_rng(1).standard_normal((24, 8))).astype(np.float32)
    save_file({"item_embeddings": vectors}, str(run / "item_embeddings.safetensors"))
    config = TokenizerConfig(method="rqkmeans", levels=REGISTRY_LEVELS, codebook_size=REGISTRY_CODEBOOK, llm="smollm2",
                             rounds=3, steps_per_round=5, kmeans_iterations=20)
    result = train_tokenizer(config, run, embeddings=str(run / "item_embeddings.safetensors"), out_dir=run / "tokenizer")
    build_tiny_finetune_run(run, codes=result.item_codes, write_dataset=False)
    return run


class PostDriver(threading.Thread):
    """Sends one text-only POST /v1/items every ``interval`` seconds until stopped."""

    def __init__(self, port: int, token: str, prefix: str, interval: float = 1.0):
        super().__init__(daemon=True)
        self.port, self.token, self.prefix, self.interval = port, token, prefix, interval
        self.stop = threading.Event()
        self.latencies_ms: list[float] = []
        self.statuses: dict[int, int] = {}

    def run(self) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        started = time.perf_counter()
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120) as client:
            n = 0
            while not self.stop.is_set():
                body = {"item_id": f"{self.prefix}-{n}", "title": f"Retro racing game {n}", "description": f"Arcade racer, edition {n}, new this week"}
                sent = time.perf_counter()
                status = client.post("/v1/items", json=body, headers=headers).status_code
                self.latencies_ms.append(round(1000 * (time.perf_counter() - sent), 1))
                self.statuses[status] = self.statuses.get(status, 0) + 1
                n += 1
                self.stop.wait(max(0.0, started + n * self.interval - time.perf_counter()))


class NextFreeCodes:
    """A stand-in cold start for filling a registry quickly: the next code sequence no item has."""

    def __init__(self) -> None:
        self.flat = 0

    def assign(self, items, existing):
        import numpy as np

        taken = {tuple(row) for row in existing.codes.tolist()}
        sizes = existing.codebook_sizes
        while tuple(np.unravel_index(self.flat, sizes)) in taken:
            self.flat += 1
        return np.asarray([np.unravel_index(self.flat, sizes)], dtype=np.int64)


def preregister(registry_path: Path, run_dir: Path, count: int) -> float:
    """Register ``count`` items through :class:`ItemRegistry` (the server's own path); seconds taken."""
    from alignrec.serve.items import ItemRegistry, NewItem
    from alignrec.tokenizer.codes import ItemCodes

    started = time.perf_counter()
    registry = ItemRegistry(registry_path, ItemCodes.load(run_dir / "finetune"))
    assigner = NextFreeCodes()
    for n in range(count):
        registry.register(NewItem(f"pre-{n}", f"Registered game {n}", "An item registered before the benchmark"), assigner)
    return time.perf_counter() - started


def reads_during_registration(
    cache_url: str, run_dir: Path, registry_path: Path, args: argparse.Namespace, run: BenchmarkRun,
    phases: tuple[str, ...] = ("right after a restart", "warm"), registered: int = 0,
) -> None:
    """Restart the server with --run; reads at --registration-rate with one POST per second,
    from the first moment /healthz answers ("right after a restart"), then again ("warm").
    ``registered``: items already in the registry at ``registry_path``."""
    import psutil

    token = "benchmark-admin-token"
    port = free_port()
    launched = time.perf_counter()
    server = serve(cache_url, port, args.workers, ["--run", str(run_dir), "--items-registry", str(registry_path)],
                   {"ALIGNREC_ADMIN_TOKEN": token})
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", server, timeout=300, interval=0.05)
        startup_s = round(time.perf_counter() - launched, 2)
        server_process = psutil.Process(server.pid)
        for phase in phases:
            warmup = 0.0 if phase == "right after a restart" else 1.0
            cpu_before = sum(server_process.cpu_times()[:2])
            driver = PostDriver(port, token, prefix=f"bench-{phase.split()[0]}")
            driver.start()
            try:
                result = loadgen(port, args.users, args.registration_rate, args.duration, args.connections, warmup=warmup)
            finally:
                driver.stop.set()
                driver.join(180)
            server_cpu = sum(server_process.cpu_times()[:2]) - cpu_before
            print(f"registration {phase} {args.registration_rate}/s: {result}; posts {driver.statuses} {driver.latencies_ms}", file=sys.stderr)
            ok = result["statuses"].get("200", 0)
            latencies = sorted(driver.latencies_ms)
            run.add_row(
                {
                    "store": "sqlite",
                    "load": f"reads during registration (POST /v1/items 1/s), {phase}"
                            + (f", {registered:,} items registered" if registered else ""),
                    "target_rate": args.registration_rate,
                    "achieved_rate": result["achieved_rate"],
                    "p50_ms": result["p50_ms"],
                    "p90_ms": result["p90_ms"],
                    "p99_ms": result["p99_ms"],
                    "p999_ms": result["p999_ms"],
                    "max_ms": result["max_ms"],
                    "ok_responses": ok,
                    "failed": result["completed"] - ok + result["errors"] + result["unfinished"],
                    "server_cpu_us_per_request": round(1e6 * server_cpu / max(1, result["sent"] + len(latencies)), 1),
                    "client_cpu_us_per_request": round(1e6 * result["client_cpu_s"] / max(1, result["sent"]), 1),
                    "posts": f"{driver.statuses.get(201, 0)}/{len(latencies)} created",
                    "post_p50_ms": latencies[len(latencies) // 2] if latencies else None,
                    "post_max_ms": latencies[-1] if latencies else None,
                    "startup_s": startup_s if phase == "right after a restart" else None,
                    "meets_target_p99_5ms": (result["p99_ms"] or 1e9) <= 5.0,
                }
            )
    finally:
        server.terminate()
        server.wait(30)


def reads_while_redis_pauses(port: int, redis_process: subprocess.Popen, args: argparse.Namespace, run: BenchmarkRun) -> None:
    """Reads at --registration-rate while redis-server is stopped (SIGSTOP) for PAUSE_S seconds,
    from about 2 s into the measured window. Enough connections that the client never queues:
    every answer's latency is the server's."""
    import signal

    def pause() -> None:
        time.sleep(3.0)  # the load generator's start-up and warm-up, then 2 s of normal reads
        os.kill(redis_process.pid, signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)
        finally:
            os.kill(redis_process.pid, signal.SIGCONT)

    pauser = threading.Thread(target=pause, daemon=True)
    pauser.start()
    connections = int(args.registration_rate * (STORE_TIMEOUT_S + 0.5))  # every read waiting on the paused store in flight at once
    try:
        result = loadgen(port, args.users, args.registration_rate, args.duration, connections)
    finally:
        pauser.join(30)
    print(f"redis paused {PAUSE_S} s at {args.registration_rate}/s: {result}", file=sys.stderr)
    ok = result["statuses"].get("200", 0)
    run.add_row(
        {
            "store": "redis",
            "load": f"reads while redis-server is stopped for {PAUSE_S:g} s (SIGSTOP), {connections} connections",
            "target_rate": args.registration_rate,
            "achieved_rate": result["achieved_rate"],
            "p50_ms": result["p50_ms"],
            "p90_ms": result["p90_ms"],
            "p99_ms": result["p99_ms"],
            "p999_ms": result["p999_ms"],
            "max_ms": result["max_ms"],
            "ok_responses": ok,
            "failed": result["completed"] - ok + result["errors"] + result["unfinished"],
            "answers_503": result["statuses"].get("503", 0),
            "other_statuses": {k: v for k, v in result["statuses"].items() if k not in ("200", "503")} or None,
            "store_timeout_ms": 1000 * STORE_TIMEOUT_S,
            "bounded_by_store_timeout": (result["max_ms"] or 1e9) <= 1000 * STORE_TIMEOUT_S + 250,  # + 250 ms for queueing on 2 cores
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50546)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--rates", type=float, nargs="+", default=[250, 500, 1000, 1500, 2000, 3000, 4000])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "redis"], choices=["sqlite", "redis"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--registration-rate", type=float, default=1000.0, help="read rate of the reads-during-registration rows (0: skip them)")
    args = parser.parse_args()

    run = BenchmarkRun(
        "serve_latency",
        description=(
            "Cached lookups GET /v1/users/{id}/recommendations?k=10 through `alignrec serve` (uvicorn, "
            f"{args.workers} worker) on loopback; open-loop load from a separate process at fixed rates "
            "(latency from the scheduled send time); SQLite vs Redis; the same reads while items are "
            "registered (POST /v1/items at 1/s), right after a restart, warm, and with 2,000 items registered; "
            "and reads while Redis is paused."
        ),
    )
    folder = Path(tempfile.mkdtemp(prefix="alignrec-serve-bench-"))
    redis_process = None
    fills = {}
    text_run = None
    if args.registration_rate > 0 and "sqlite" in args.stores:
        from alignrec.errors import MissingDependencyError

        started = time.perf_counter()
        try:
            text_run = build_text_run(folder)  # before any timing: it trains a tokenizer (SmolLM2 text vectors)
            print(f"text run built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        except MissingDependencyError as error:
            print(f"skipping the reads-during-registration rows: {error}", file=sys.stderr)
    try:
        for store in args.stores:
            if store == "sqlite":
                cache_url = f"sqlite:///{folder / 'cache.sqlite'}"
            else:
                if shutil.which("redis-server") is None:
                    print("redis-server not installed: skipping Redis", file=sys.stderr)
                    continue
                redis_port = free_port()
                (folder / "redis").mkdir(exist_ok=True)
                redis_process = subprocess.Popen(
                    ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(folder / "redis"), "--save", "", "--appendonly", "no"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                time.sleep(0.5)
                cache_url = f"redis://127.0.0.1:{redis_port}/0?namespace=bench"
            fills[store] = round(fill(cache_url, args.users, args.items), 2)
            port = free_port()
            server = serve(cache_url, port, args.workers)
            try:
                wait_for(f"http://127.0.0.1:{port}/healthz", server)
                loadgen(port, args.users, 200, 2, args.connections)  # warm-up
                import psutil

                server_process = psutil.Process(server.pid)
                for rate in args.rates:
                    cpu_before = sum(server_process.cpu_times()[:2])
                    result = loadgen(port, args.users, rate, args.duration, args.connections)
                    server_cpu = sum(server_process.cpu_times()[:2]) - cpu_before
                    print(f"{store} {rate}/s: {result}", file=sys.stderr)
                    ok = result["statuses"].get("200", 0)
                    run.add_row(
                        {
                            "store": store,
                            "load": "open loop",
                            "target_rate": rate,
                            "achieved_rate": result["achieved_rate"],
                            "p50_ms": result["p50_ms"],
                            "p90_ms": result["p90_ms"],
                            "p99_ms": result["p99_ms"],
                            "p999_ms": result["p999_ms"],
                            "max_ms": result["max_ms"],
                            "ok_responses": ok,
                            "failed": result["completed"] - ok + result["errors"] + result["unfinished"],
                            # CPU per request (warm-up included in both numerator and count), independent of machine load
                            "server_cpu_us_per_request": round(1e6 * server_cpu / max(1, result["sent"]), 1),
                            "client_cpu_us_per_request": round(1e6 * result["client_cpu_s"] / max(1, result["sent"]), 1),
                        }
                    )
                    if result["achieved_rate"] < 0.9 * rate or (result["p99_ms"] or 0) > 1000:
                        break  # saturated: higher rates only queue
                if store == "redis" and args.registration_rate > 0:
                    reads_while_redis_pauses(port, redis_process, args, run)
                saturation = wrk_saturation(port, args.users, int(args.duration), args.connections, folder)
                if saturation is not None:
                    print(f"{store} wrk: {saturation}", file=sys.stderr)
                    run.add_row(
                        {
                            "store": store,
                            "load": f"closed loop (wrk, {args.connections} connections)",
                            "target_rate": None,
                            "achieved_rate": saturation.get("requests_per_s"),
                            "p50_ms": saturation.get("p50_ms"),
                            "p99_ms": saturation.get("p99_ms"),
                        }
                    )
            finally:
                server.terminate()
                server.wait(30)
            if store == "sqlite" and text_run is not None:
                reads_during_registration(cache_url, text_run, folder / "registry.json", args, run)
                filled_registry = folder / f"registry-{PREREGISTERED}.json"
                seconds = preregister(filled_registry, text_run, PREREGISTERED)
                print(f"{PREREGISTERED} items registered in {seconds:.1f} s", file=sys.stderr)
                reads_during_registration(cache_url, text_run, filled_registry, args, run, phases=("warm",), registered=PREREGISTERED)
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    run.extra.update({"users": args.users, "items_per_entry": args.items, "fill_seconds": fills, "workers": args.workers})
    columns = [*run.rows[0].keys(), "posts", "post_p50_ms", "post_max_ms", "startup_s", "answers_503", "other_statuses", "store_timeout_ms",
               "bounded_by_store_timeout"]
    _, md_path = run.finish(
        columns=columns,
        notes=[
            f"{args.users} cached users x {args.items} items; k=10; uniformly random users; {args.connections} keep-alive connections",
            "server and load generator share the machine's 2 cores (and whatever else runs on it: see the load average)",
            "open loop stops at the first rate the server cannot sustain (achieved < 90% of target or p99 > 1 s)",
            "server_cpu_us_per_request: CPU time of the server process / requests sent (the load-independent cost of a lookup)",
            "reads during registration: a tiny run (24 items, a 4x8 residual k-means tokenizer trained with SmolLM2 text "
            "vectors) for the items, the 50,546-user cache for the reads; the POSTs are text-only items (so they need the "
            "LLM text embedder). 'right after a restart': a fresh server process, reads and POSTs start as soon as "
            "/healthz first answers, no warm-up; startup_s = launch to first /healthz (includes loading the cold start "
            "and its text embedder, which the server does before it opens its port); posts = created/sent; "
            "post_*_ms: POST latency seen by the client; target read p99 <= 5 ms",
            f"'{PREREGISTERED:,} items registered': the same server restarted on a registry that already holds "
            f"{PREREGISTERED:,} items (registered through ItemRegistry before the run), warm; target read p99 <= 5 ms",
            f"reads while redis-server is stopped: SIGSTOP for {PAUSE_S:g} s about 2 s into the measured window; the "
            f"server's store timeout is {STORE_TIMEOUT_S:g} s (--store-timeout-s), so every read must be answered within "
            "it (503 cache_error while Redis is silent); bounded_by_store_timeout: max_ms <= timeout + 250 ms",
            "the machine is shared with other CPU-heavy jobs (other engineers' tests and benchmarks): see the load "
            "average above; p99 and max are sensitive to it",
        ]
    )
    print(md_path.read_text())


if __name__ == "__main__":
    main()
