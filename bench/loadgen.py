"""A closed-loop HTTP/1.1 load generator, used when `wrk` is not on PATH.

    python -m bench.loadgen URL -c 50 -d 10 -H "Authorization: Bearer T"

`-c` keep-alive connections each send a GET, read the whole answer, and send the next,
for `-d` seconds. Prints one JSON object: requests, duration_s, rps, p50_ms, p99_ms,
non_2xx, socket_errors. It runs in its own process (on uvloop when available), so its
CPU use is visible and separate; it is slower than wrk, so on a small machine it steals
more CPU from the server under test: compare ratios, not absolute figures, across tools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.non_2xx = 0
        self.errors = 0


async def _one_connection(
    host: str, port: int, request: bytes, deadline: float, stats: Stats
) -> None:
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            stats.errors += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                stats.latencies.append(time.perf_counter() - t0)
                if not 200 <= status < 400:
                    stats.non_2xx += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            stats.errors += 1
        finally:
            writer.close()


async def run(
    url: str, connections: int, duration_s: float, headers: list[str]
) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    stats = Stats()
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(
        *(_one_connection(host, port, request, deadline, stats) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    lat = stats.latencies
    return {
        "requests": len(lat),
        "duration_s": round(elapsed, 3),
        "rps": round(len(lat) / elapsed, 2),
        "p50_ms": round(_percentile(lat, 50) * 1000, 3),
        "p99_ms": round(_percentile(lat, 99) * 1000, 3),
        "non_2xx": stats.non_2xx,
        "socket_errors": stats.errors,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("url")
    p.add_argument("-c", "--connections", type=int, default=50)
    p.add_argument("-d", "--duration", type=float, default=10.0)
    p.add_argument("-H", "--header", action="append", default=[])
    args = p.parse_args()
    coro = run(args.url, args.connections, args.duration, args.header)
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        result = asyncio.run(coro)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
