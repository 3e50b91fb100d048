"""Latency of ``alignrec serve`` for cached lookups under load, SQLite vs. Redis.

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/serve_latency.py

For each store the cache is filled with one 20-item entry per user (50,546 users: the Games
data set's user count), ``alignrec serve`` is started as its own process on loopback, and a
separate load-generator process (benchmarks/loadgen.py, open loop) requests
``/v1/users/u<random>/recommendations?k=10`` at fixed rates, stepping up until the server
saturates. p50/p99 are measured from each request's scheduled time. A closed-loop ``wrk`` run
(when installed) gives the saturation throughput. Redis is a fresh ``redis-server`` on
loopback.
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, BenchmarkRun  # noqa: E402

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
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
        time.sleep(0.2)
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


def loadgen(port: int, users: int, rate: float, duration: float, connections: int) -> dict:
    command = [PYTHON, str(REPO_ROOT / "benchmarks" / "loadgen.py"), "--port", str(port), "--users", str(users),
               "--rate", str(rate), "--duration", str(duration), "--connections", str(connections)]
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


def serve(cache_url: str, port: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "ALIGNREC_PROGRESS": "0"}
    return subprocess.Popen(
        [PYTHON, "-m", "alignrec.cli", "--log-level", "WARNING", "serve", "--cache", cache_url, "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
    args = parser.parse_args()

    run = BenchmarkRun(
        "serve_latency",
        description=(
            "Cached lookups GET /v1/users/{id}/recommendations?k=10 through `alignrec serve` (uvicorn, "
            f"{args.workers} worker) on loopback; open-loop load from a separate process at fixed rates "
            "(latency from the scheduled send time); SQLite vs Redis."
        ),
    )
    folder = Path(tempfile.mkdtemp(prefix="alignrec-serve-bench-"))
    redis_process = None
    fills = {}
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
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    run.extra.update({"users": args.users, "items_per_entry": args.items, "fill_seconds": fills, "workers": args.workers})
    _, md_path = run.finish(
        notes=[
            f"{args.users} cached users x {args.items} items; k=10; uniformly random users; {args.connections} keep-alive connections",
            "server and load generator share the machine's 2 cores (and whatever else runs on it: see the load average)",
            "open loop stops at the first rate the server cannot sustain (achieved < 90% of target or p99 > 1 s)",
            "server_cpu_us_per_request: CPU time of the server process / requests sent (the load-independent cost of a lookup)",
        ]
    )
    print(md_path.read_text())


if __name__ == "__main__":
    main()
