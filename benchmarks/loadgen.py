"""Open-loop HTTP load generator (a separate process from the server under test).

Sends GET requests at a fixed rate over persistent HTTP/1.1 connections and prints one JSON
object with latency percentiles (and this process's CPU time). When a request is due while its
connection still waits for the previous answer, its latency is measured from its *scheduled*
send time, so a server that falls behind shows its queueing in the numbers instead of silently
lowering the rate (no coordinated omission)::

    python benchmarks/loadgen.py --port 8000 --rate 1000 --duration 10 --users 50546

Paths are ``--path`` with ``{user}`` replaced by ``{prefix}<n>`` for a uniformly random n.
With ``--bodies FILE`` (JSON lines) every request is a POST to ``--path`` whose body is a
random line of the file (``benchmarks/serve_live.py``: live recommendations for histories).
Standard library only (uvloop is used when installed).
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
    """Request i is due at ``start + i / rate`` and goes on connection ``i % connections``; each
    connection sends its requests in order, as soon as due and the previous answer is in. One
    coroutine per connection (no task per request): the client stays cheap at high rates."""
    rng = random.Random(args.seed)
    total = int(args.rate * (args.warmup + args.duration))
    host = args.host.encode()
    if args.bodies:
        with open(args.bodies, "rb") as handle:
            bodies = [line.strip() for line in handle if line.strip()]
        head = b"POST " + args.path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\ncontent-type: application/json\r\n"
        requests = [head + b"content-length: %d\r\n\r\n" % len(body) + body
                    for body in (bodies[rng.randrange(len(bodies))] for _ in range(total))]
    else:
        paths = [args.path.format(user=f"{args.prefix}{rng.randrange(args.users)}").encode() for _ in range(total)]
        requests = [b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n" for path in paths]
    clock = time.perf_counter  # not loop.time(): uvloop's clock ticks in whole milliseconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    unfinished = 0
    start = clock() + 0.2
    measure_from = start + args.warmup
    deadline = start + args.warmup + args.duration + args.drain_timeout

    async def connection(lane: int) -> None:
        nonlocal errors, unfinished
        reader, writer = await asyncio.open_connection(args.host, args.port)
        for i in range(lane, total, args.connections):
            scheduled = start + i / args.rate
            delay = scheduled - clock()
            # Waiting on a busy connection (the previous answer came late) counts: latency from
            # the scheduled time. A connection idle at its slot starts the clock when the request
            # really leaves: event-loop timers fire up to ~1 ms late, which is the client's delay.
            busy = delay <= 0
            if delay > 0:
                await asyncio.sleep(delay)
            if clock() > deadline:
                unfinished += 1
                continue
            sent_at = scheduled if busy else clock()
            try:
                status = await one_request(reader, writer, requests[i])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(args.host, args.port)
                continue
            if scheduled >= measure_from:
                latencies.append(clock() - sent_at)
                statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    await asyncio.gather(*(connection(lane) for lane in range(args.connections)))
    finished = clock()
    latencies.sort()

    def percentile(q: float) -> float | None:
        if not latencies:
            return None
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3)

    measured = sum(statuses.values())
    return {
        "target_rate": args.rate,
        "duration_s": args.duration,
        "sent": total - unfinished,
        "completed": measured,
        "achieved_rate": round(measured / max(1e-9, finished - measure_from), 1),
        "p50_ms": percentile(0.50),
        "p90_ms": percentile(0.90),
        "p99_ms": percentile(0.99),
        "p999_ms": percentile(0.999),
        "max_ms": round(1000 * latencies[-1], 3) if latencies else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "unfinished": unfinished,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="open-loop HTTP GET load at a fixed rate")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/users/{user}/recommendations?k=10")
    parser.add_argument("--prefix", default="u", help="user ids are PREFIX<n>")
    parser.add_argument("--users", type=int, default=1, help="n is drawn from 0..USERS-1")
    parser.add_argument("--bodies", help="JSON lines: POST a random one of them to --path instead of GETs")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    try:  # the faster event loop when installed (a cheaper client measures the server, not itself)
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["client_cpu_s"] = round(time.process_time(), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
