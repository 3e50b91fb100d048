"""Live recommendations through ``alignrec serve --live``: latency, batching, and cached reads beside them.

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/serve_live.py --run runs/ml100k

The run's fine-tuned model (read only: the cache, the items registry and the report of the
pre-cache go to a temporary folder) is pre-cached for every user (``alignrec precache --exclude
history``), then ``alignrec serve --live`` (one uvicorn worker, exclusion ``auto``: history plus
the request's list, as ml-100k's items are not repeat-consumed) is started as its own process on
loopback and a separate load-generator process (benchmarks/loadgen.py, open loop, latency from
each request's scheduled send time) sends:

1. ``POST /v1/recommendations`` with a history of 20 items (the newest 20 items of a random
   user's sequence) at fixed rates: live latency (target: p99 <= 100 ms at 20 requests/s);
2. the same above capacity, with the micro-batcher (``--live-max-batch 16``) and without it
   (``--live-max-batch 1``: one beam search per request): throughput at saturation, as 200s
   completed per second (target: batched >= 2x unbatched);
3. cached ``GET /v1/users/{id}/recommendations`` at 1,000 requests/s alone (the control: what
   the machine's load does to them), then while live POSTs run at 10/s from a second load
   generator (target: cached p99 <= 5 ms).

The server, the two load generators and the search share the machine's cores: the load average
beside the figures says what else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, BenchmarkRun  # noqa: E402
from serve_latency import free_port, wait_for  # noqa: E402

PYTHON = sys.executable
HISTORY = 20


def write_bodies(run_dir: Path, path: Path, count: int = 2000, seed: int = 0) -> None:
    """Live request bodies: the newest HISTORY items of random users' sequences, k = 10."""
    import numpy as np

    from alignrec.data.dataset import load_dataset

    dataset = load_dataset(run_dir / "dataset")
    rng = np.random.default_rng(seed)
    ids = dataset.item_ids
    lines = []
    for user in rng.integers(0, dataset.num_users, count):
        sequence = dataset.sequences[int(user)][-HISTORY:]
        lines.append(json.dumps({"history": [ids[int(i)] for i in sequence], "k": 10}))
    path.write_text("\n".join(lines) + "\n")


def precache(run_dir: Path, cache_url: str, folder: Path) -> dict:
    command = [PYTHON, "-m", "alignrec.cli", "--log-level", "WARNING", "precache", "--model", str(run_dir), "--cache", cache_url,
               "--items-registry", str(folder / "items_registry.json"), "--exclude", "history", "--device", "cpu",
               "--dtype", "float32", "--batch-size", "32"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ALIGNREC_PROGRESS": "0"}, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout)


def serve(run_dir: Path, cache_url: str, folder: Path, port: int, max_batch: int, args: argparse.Namespace) -> subprocess.Popen:
    command = [PYTHON, "-m", "alignrec.cli", "--log-level", "WARNING", "serve", "--run", str(run_dir), "--cache", cache_url,
               "--items-registry", str(folder / "items_registry.json"), "--port", str(port), "--live",
               "--live-max-batch", str(max_batch), "--live-max-wait-ms", str(args.max_wait_ms), "--live-queue", str(args.queue),
               "--live-threads", str(args.threads), "--live-nice", str(args.nice), "--live-idle" if args.idle else "--no-live-idle"]
    env = {**os.environ, "ALIGNREC_PROGRESS": "0", "ALIGNREC_ADMIN_TOKEN": ""}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def loadgen(port: int, rate: float, duration: float, connections: int, bodies: Path | None = None, users: int = 943,
            warmup: float = 1.0) -> dict:
    command = [PYTHON, str(REPO_ROOT / "benchmarks" / "loadgen.py"), "--port", str(port), "--rate", str(rate),
               "--duration", str(duration), "--connections", str(connections), "--warmup", str(warmup)]
    if bodies is not None:
        command += ["--path", "/v1/recommendations", "--bodies", str(bodies)]
    else:
        command += ["--prefix", "", "--users", str(users)]  # ml-100k's user ids are 1..943 (0 is a 404)
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 180)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout)


def row(what: str, result: dict, **extra) -> dict:
    ok = result["statuses"].get("200", 0)
    return {
        "what": what,
        "target_rate": result["target_rate"],
        "answered_200_per_s": round(ok / result["duration_s"], 1),
        # completed 200s over the time they took to complete (the throughput, also past saturation)
        "throughput_200_per_s": round(result["achieved_rate"] * ok / max(1, result["completed"]), 1),
        "p50_ms": result["p50_ms"],
        "p90_ms": result["p90_ms"],
        "p99_ms": result["p99_ms"],
        "max_ms": result["max_ms"],
        "statuses": result["statuses"],
        "errors": result["errors"] + result["unfinished"],
        **extra,
    }


def scrape(port: int) -> dict[str, float]:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    wanted = ("alignrec_live_batch_size_sum", "alignrec_live_batch_size_count", "alignrec_live_rejected_total",
              "alignrec_live_batch_duration_seconds_sum")
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            values[name] = float(value)
    return values


def mean_batch(before: dict[str, float], after: dict[str, float]) -> float | None:
    count = after["alignrec_live_batch_size_count"] - before["alignrec_live_batch_size_count"]
    return round((after["alignrec_live_batch_size_sum"] - before["alignrec_live_batch_size_sum"]) / count, 2) if count else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="the main job's run folder (read only)")
    parser.add_argument("--rates", type=float, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--saturation-rate", type=float, default=100.0, help="offered live load of the throughput rows (above capacity)")
    parser.add_argument("--saturation-connections", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the live search (2: a machine that serves alone)")
    parser.add_argument("--idle", action=argparse.BooleanOptionalAction, default=True, help="the live search in the SCHED_IDLE class (serve's default)")
    parser.add_argument("--nice", type=int, default=5, help="niceness of the live search when not idle-class")
    parser.add_argument("--cached-rate", type=float, default=1000.0)
    parser.add_argument("--live-rate-beside", type=float, default=10.0)
    args = parser.parse_args()
    run_dir = Path(args.run).resolve()

    run = BenchmarkRun(
        "serve_live",
        description=(
            "Live recommendations (`alignrec serve --live`, one uvicorn worker, the main job's model from "
            f"`{run_dir.name}`, exclusion of the history and the request's list) on loopback: POST /v1/recommendations "
            f"with {HISTORY}-item histories at fixed rates (open loop, latency from the scheduled send time); throughput "
            "at saturation with and without micro-batching; cached GETs at 1,000/s beside live POSTs at 10/s. "
            "Server, load generators and search share the machine's cores."
        ),
    )
    folder = Path(tempfile.mkdtemp(prefix="alignrec-live-bench-"))
    cache_url = f"sqlite:///{folder / 'cache.sqlite'}"
    bodies = folder / "bodies.jsonl"
    write_bodies(run_dir, bodies)
    started = time.perf_counter()
    report = precache(run_dir, cache_url, folder)
    print(f"precache: {report['computed']} users in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    run.extra["precache"] = {key: report[key] for key in ("users", "computed", "model_version", "run_key", "search_s", "users_per_s")}
    targets: dict[str, object] = {}

    for max_batch in (16, 1):
        port = free_port()
        server = serve(run_dir, cache_url, folder, port, max_batch, args)
        try:
            wait_for(f"http://127.0.0.1:{port}/healthz", server, timeout=300)
            loadgen(port, 10, 3, 8, bodies)  # warm-up: first searches, allocator
            label = "batched (max batch 16)" if max_batch > 1 else "unbatched (max batch 1)"
            if max_batch > 1:
                for rate in args.rates:
                    before = scrape(port)
                    result = loadgen(port, rate, args.duration, 16, bodies)
                    print(f"live {rate}/s: {result}", file=sys.stderr)
                    run.add_row(row(f"live POST, {label}", result, mean_batch=mean_batch(before, scrape(port))))
                    if rate == 20:
                        targets["live_p99_ms_at_20_per_s"] = result["p99_ms"]
                # cached reads alone (the control: what the machine's load does to them), then beside live requests
                alone = loadgen(port, args.cached_rate, args.duration, 32)
                print(f"cached alone: {alone}", file=sys.stderr)
                run.add_row(row("cached GET alone (control)", alone))
                targets["cached_p99_ms_at_1000_per_s_alone"] = alone["p99_ms"]
                results: dict[str, dict] = {}
                beside = threading.Thread(target=lambda: results.update(
                    live=loadgen(port, args.live_rate_beside, args.duration + 1, 8, bodies, warmup=0.5)))
                beside.start()
                results["cached"] = loadgen(port, args.cached_rate, args.duration, 32)
                beside.join()
                print(f"cached beside live: {results}", file=sys.stderr)
                run.add_row(row(f"cached GET beside live POST at {args.live_rate_beside:g}/s", results["cached"]))
                run.add_row(row(f"live POST beside cached GET at {args.cached_rate:g}/s, {label}", results["live"]))
                targets["cached_p99_ms_at_1000_per_s_beside_live"] = results["cached"]["p99_ms"]
            before = scrape(port)
            result = loadgen(port, args.saturation_rate, args.duration, args.saturation_connections, bodies)
            after = scrape(port)
            print(f"saturation {label}: {result}", file=sys.stderr)
            run.add_row(row(f"live POST at saturation, {label}, {args.saturation_connections} connections", result,
                            mean_batch=mean_batch(before, after),
                            rejected_503=int(after["alignrec_live_rejected_total"] - before["alignrec_live_rejected_total"])))
            targets[f"saturation_200_per_s_max_batch_{max_batch}"] = run.rows[-1]["throughput_200_per_s"]
        finally:
            server.terminate()
            server.wait(30)

    batched, unbatched = targets["saturation_200_per_s_max_batch_16"], targets["saturation_200_per_s_max_batch_1"]
    speedup = round(batched / unbatched, 2) if unbatched else None
    live_p99, cached_p99 = targets.get("live_p99_ms_at_20_per_s"), targets.get("cached_p99_ms_at_1000_per_s_beside_live")
    run.extra["targets"] = {
        "live_p99_ms_at_20_per_s": live_p99, "live_p99_target_ms": 100, "live_p99_met": live_p99 is not None and live_p99 <= 100,
        "batched_over_unbatched_throughput": speedup, "throughput_target": 2.0, "throughput_met": speedup is not None and speedup >= 2,
        "cached_p99_ms_beside_live": cached_p99, "cached_p99_ms_alone": targets.get("cached_p99_ms_at_1000_per_s_alone"), "cached_p99_target_ms": 5, "cached_p99_met": cached_p99 is not None and cached_p99 <= 5,
    }
    notes = [
        f"live p99 at 20 requests/s: {live_p99} ms (target <= 100 ms: {'met' if run.extra['targets']['live_p99_met'] else 'NOT met'})",
        f"throughput at saturation, batched / unbatched: {batched} / {unbatched} answered per s = {speedup}x "
        f"(target >= 2x: {'met' if run.extra['targets']['throughput_met'] else 'NOT met'})",
        f"cached GET p99 at {args.cached_rate:g}/s beside live POSTs at {args.live_rate_beside:g}/s: {cached_p99} ms "
        f"(target <= 5 ms: {'met' if run.extra['targets']['cached_p99_met'] else 'NOT met'}); alone, on the same machine "
        f"at the same time: {targets.get('cached_p99_ms_at_1000_per_s_alone')} ms",
        f"pre-cache of the {report['computed']} users (history excluded): {report['users_per_s']} users/s",
    ]
    columns = ["what", "target_rate", "answered_200_per_s", "throughput_200_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_batch", "rejected_503", "statuses"]
    json_path, md_path = run.finish(columns=columns, notes=notes)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
