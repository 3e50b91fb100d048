"""Open-loop HTTP load generator (a separate process from the server under test).

Sends GET requests at a fixed rate over persistent HTTP/1.1 connections and prints one JSON
object with latency percentiles. Latency is measured from each request's *scheduled* send
time, so when the server (or this client) falls behind, the queueing shows in the numbers
instead of silently lowering the rate (no coordinated omission)::

    python benchmarks/loadgen.py --port 8000 --rate 1000 --duration 10 --users 50546

Paths are ``--path`` with ``{user}`` replaced by ``{prefix}<n>`` for a uniformly random n.
Only the standard library is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time


async def one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def run(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    connections: asyncio.Queue = asyncio.Queue()
    for _ in range(args.connections):
        connections.put_nowait(await asyncio.open_connection(args.host, args.port))
    loop = asyncio.get_running_loop()
    total = int(args.rate * (args.warmup + args.duration))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    pending: set[asyncio.Task] = set()
    start = loop.time() + 0.05
    measure_from = start + args.warmup

    async def fire(scheduled: float, path: str) -> None:
        nonlocal errors
        reader, writer = await connections.get()
        try:
            request = f"GET {path} HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode()
            status = await one_request(reader, writer, request)
            done = loop.time()
            if scheduled >= measure_from:
                latencies.append(done - scheduled)
                statuses[status] = statuses.get(status, 0) + 1
            connections.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            writer.close()
            connections.put_nowait(await asyncio.open_connection(args.host, args.port))

    sent = 0
    while sent < total:
        now = loop.time()
        # Send everything that is due (bursts when the event loop wakes up late), then sleep.
        while sent < total and start + sent / args.rate <= now:
            path = args.path.format(user=f"{args.prefix}{rng.randrange(args.users)}")
            task = asyncio.create_task(fire(start + sent / args.rate, path))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        if sent < total:
            await asyncio.sleep(max(0.0, start + sent / args.rate - loop.time()))
    measured_end = loop.time()
    if pending:
        await asyncio.wait(pending, timeout=args.drain_timeout)
    finished = loop.time()
    while not connections.empty():
        _, writer = connections.get_nowait()
        writer.close()
    latencies.sort()

    def percentile(q: float) -> float | None:
        if not latencies:
            return None
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3)

    measured = sum(statuses.values())
    return {
        "target_rate": args.rate,
        "duration_s": args.duration,
        "sent": sent,
        "completed": measured,
        "achieved_rate": round(measured / max(1e-9, finished - measure_from), 1),
        "send_rate": round((sent - int(args.rate * args.warmup)) / max(1e-9, measured_end - measure_from), 1),
        "p50_ms": percentile(0.50),
        "p90_ms": percentile(0.90),
        "p99_ms": percentile(0.99),
        "p999_ms": percentile(0.999),
        "max_ms": round(1000 * latencies[-1], 3) if latencies else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "unfinished": len(pending),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="open-loop HTTP GET load at a fixed rate")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/users/{user}/recommendations?k=10")
    parser.add_argument("--prefix", default="u", help="user ids are PREFIX<n>")
    parser.add_argument("--users", type=int, required=True, help="n is drawn from 0..USERS-1")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    result = asyncio.run(run(args))
    result["wall_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
