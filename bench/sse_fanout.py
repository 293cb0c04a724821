"""Benchmark 4 (issue 3): SSE fan-out on one API process.

1,000 subscribers (50 running scans x 20) on ONE `scanstream api --workers 1` process,
held by 4 client processes (raw asyncio sockets, bench/sse_peers.py) so the API's core is
measured on its own. A writer process appends progress events to every scan at a steady
rate through the real EventStore, each stamped with its send time, then completes the
scans. Figures:

- every subscriber gets every event: each stream's ids are compared with the scan's log;
- delivery latency from the writer's send (just before its XADD) to receipt: p50 / p99;
- Redis connections held by the API process while the 1,000 are connected (CLIENT LIST,
  matched to the process's own sockets through /proc);
- memory per subscriber: (RSS with everyone connected - RSS idle) / subscribers;
- the API's CPU while events flow.

Baseline, same run, same load: a bare starlette SSE endpoint where each subscriber runs
its own XREAD BLOCK loop on its own Redis connection (what the fan-out replaces).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    FOREIGN_WARN,
    USER,
    Bench,
    CpuMeter,
    Proc,
    Row,
    bearer,
    http_request,
    percentile,
    running,
    say,
)

NAME = "sse_fanout"
PREFIX = "bench4"
TARGET_P99_MS = 100.0


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"scans": 10, "per_scan": 20, "rate": 5.0, "duration_s": 6.0, "clients": 2}
    return {"scans": 50, "per_scan": 20, "rate": 5.0, "duration_s": 20.0, "clients": 4}


# -- what the process holds ------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (its fds matched to /proc/net/tcp*)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def redis_connections(b: Bench, pid: int) -> int:
    """Connections the Redis server has from this process (CLIENT LIST by address)."""
    ports = local_ports(pid)
    with b.redis() as r:
        return sum(1 for c in r.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports)


# -- one measured run ------------------------------------------------------------------


async def _create_scans(redis_url: str, count: int) -> list[str]:
    from scanstream import events as ev
    from scanstream.ids import new_scan_id
    from scanstream.storage.connection import client
    from scanstream.storage.events import EventStore
    from scanstream.storage.keys import Keys

    redis = client(redis_url)
    store = EventStore(redis, Keys(PREFIX), retention_s=3600)
    ids = []
    for _ in range(count):
        scan_id = new_scan_id()
        await store.create_scan(
            scan_id, ev.stamp(ev.ScanRequested, user_id=USER, strategies=["noop_01"], params={})
        )
        ids.append(scan_id)
    await redis.aclose()
    return ids


def _wait_lines(procs: list[Proc], word: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if all(word in p.log_tail(10_000).split() for p in procs):
            return
        for p in procs:
            if word not in p.log_tail(10_000).split():
                p.check_alive()
        if time.monotonic() > deadline:
            tails = "\n".join(p.log_tail(500) for p in procs)
            raise TimeoutError(f"subscribers not {word} within {timeout_s}s:\n{tails}")
        time.sleep(0.1)


def _stream_digests(b: Bench, scan_ids: list[str]) -> dict[str, tuple[int, str]]:
    from scanstream.storage.keys import Keys

    keys = Keys(PREFIX)
    out = {}
    with b.redis() as r:
        for scan_id in scan_ids:
            ids = [entry_id for entry_id, _ in r.xrange(keys.events(scan_id))]
            out[scan_id] = (len(ids), hashlib.sha256(b",".join(ids)).hexdigest())
    return out


def measure(b: Bench, server: Proc, label: str, sizes: dict[str, Any]) -> dict[str, Any]:
    b.flush()
    scan_ids = asyncio.run(_create_scans(b.redis_url, sizes["scans"]))
    subscribers = [scan_ids[i % len(scan_ids)] for i in range(sizes["scans"] * sizes["per_scan"])]
    shares = [subscribers[i :: sizes["clients"]] for i in range(sizes["clients"])]
    run_id = f"{label}-{time.monotonic_ns()}"  # fresh files each run (logs are appended)
    outs = [b.tmp / f"sse-{run_id}-{i}.json" for i in range(sizes["clients"])]
    client_procs = [
        Proc(
            f"sse-clients-{i}",
            [
                sys.executable,
                "-m",
                "bench.sse_peers",
                "clients",
                "--port",
                str(server.port),
                "--token",
                bearer(),
                "--out",
                str(out),
                *share,
            ],
            b.env(PREFIX),
            b.log_dir / f"sse-clients-{run_id}-{i}.log",
        )
        for i, (share, out) in enumerate(zip(shares, outs, strict=True))
    ]
    with running(server):
        time.sleep(0.5)
        idle_kib = rss_kib(server.pid)
        with running(*client_procs):
            _wait_lines(client_procs, "ready", 120)
            time.sleep(1.0)  # let the connect burst settle
            connected_kib = rss_kib(server.pid)
            conns = redis_connections(b, server.pid)
            gauges = _gauges(server) if label == "fanout" else {}
            writer = [
                sys.executable,
                "-m",
                "bench.sse_peers",
                "writer",
                "--redis-url",
                b.redis_url,
                "--prefix",
                PREFIX,
                "--rate",
                str(sizes["rate"]),
                "--duration",
                str(sizes["duration_s"]),
                *scan_ids,
            ]
            redis_pid = b.redis_proc.process.pid if b.redis_proc.process else server.pid
            with CpuMeter([server.pid, redis_pid, *(c.pid for c in client_procs)]) as cpu:
                done = subprocess.run(
                    writer,
                    capture_output=True,
                    text=True,
                    env=b.env(PREFIX),
                    timeout=sizes["duration_s"] + 120,
                    check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"the writer failed:\n{done.stderr[-3000:]}")
                _wait_lines(client_procs, "done", 120)
            peak_conns = max(conns, redis_connections(b, server.pid))
    wrote = json.loads(done.stdout.strip().splitlines()[-1])
    latencies: list[float] = []
    streams: list[dict[str, Any]] = []
    for out in outs:
        body = json.loads(out.read_text())
        latencies += body["latencies"]
        streams += body["streams"]
    expected = _stream_digests(b, scan_ids)
    complete = sum(
        1
        for s in streams
        if s["ended"] and not s["error"] and (s["count"], s["digest"]) == expected[s["scan_id"]]
    )
    n = len(subscribers)
    return {
        "subscribers": n,
        "scans": len(scan_ids),
        "events_written": wrote["events"],
        "write_rate": wrote["rate"],
        "writer_max_late_ms": wrote["max_late_ms"],
        "deliveries": len(latencies),
        "complete_streams": complete,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "redis_connections": conns,
        "redis_connections_peak": peak_conns,
        "rss_idle_mib": round(idle_kib / 1024, 1),
        "rss_connected_mib": round(connected_kib / 1024, 1),
        "kib_per_subscriber": round((connected_kib - idle_kib) / n, 1),
        "api_cpu": round(cpu.shares[0], 2),
        "redis_cpu": round(cpu.shares[1], 2),
        "clients_cpu": round(sum(cpu.shares[2:]), 2),
        "writer_cpu": round(cpu.harness, 2),
        "foreign_cpu": round(cpu.foreign, 2),
        **gauges,
    }


def _gauges(server: Proc) -> dict[str, float]:
    _, body = http_request("GET", f"{server.url}/metrics")
    out = {}
    for line in body.decode().splitlines():
        for name in ("scanstream_sse_subscribers", "scanstream_sse_watched_streams"):
            if line.startswith(name + " "):
                out[name.removeprefix("scanstream_")] = float(line.split()[1])
    return out


def naive_server(b: Bench) -> Proc:
    return b.uvicorn_app("bench.sse_peers:naive_app", "sse-naive", PREFIX)


def fanout_server(b: Bench) -> Proc:
    api = b.api(PREFIX, name="sse-api")
    api.env = {**api.env, "SCANSTREAM_SSE_MAX": "10000", "SCANSTREAM_SSE_MAX_PER_USER": "10000"}
    return api


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    sizes = _sizes(b.quick)
    n = sizes["scans"] * sizes["per_scan"]
    say(
        f"  {n} subscribers ({sizes['scans']} scans x {sizes['per_scan']}) on one API "
        f"process, {sizes['clients']} client processes, {sizes['rate']:g} events/s per scan "
        f"for {sizes['duration_s']:g}s"
    )
    fan = measure(b, fanout_server(b), "fanout", sizes)
    say(
        f"  fan-out: p50 {fan['p50_ms']} ms, p99 {fan['p99_ms']} ms, "
        f"{fan['complete_streams']}/{n} complete, {fan['redis_connections']} Redis "
        f"connections, {fan['kib_per_subscriber']} KiB/subscriber, API {fan['api_cpu']} cores"
    )
    naive = measure(b, naive_server(b), "naive", sizes)
    say(
        f"  one XREAD loop per subscriber: p50 {naive['p50_ms']} ms, p99 {naive['p99_ms']} ms, "
        f"{naive['complete_streams']}/{n} complete, {naive['redis_connections']} Redis "
        f"connections, {naive['kib_per_subscriber']} KiB/subscriber, "
        f"API {naive['api_cpu']} cores"
    )
    if max(fan["foreign_cpu"], naive["foreign_cpu"]) > FOREIGN_WARN:
        say("  note: other processes used CPU during the measurement (foreign_cpu)")

    def ratio(a: float, base: float) -> str:
        return f"{base / a:.1f}x" if a else ""

    rows = [
        Row(
            NAME,
            f"SSE {n} subscribers: p99 delivery",
            f"{fan['p99_ms']} ms",
            f"{naive['p99_ms']} ms",
            ratio(fan["p99_ms"], naive["p99_ms"]),
            f"< {TARGET_P99_MS:g} ms",
            "ok" if fan["p99_ms"] < TARGET_P99_MS else "MISSED",
        ),
        Row(
            NAME,
            f"SSE {n} subscribers: p50 delivery",
            f"{fan['p50_ms']} ms",
            f"{naive['p50_ms']} ms",
            ratio(fan["p50_ms"], naive["p50_ms"]),
        ),
        Row(
            NAME,
            "streams with every event, in order",
            f"{fan['complete_streams']}/{n}",
            f"{naive['complete_streams']}/{n}",
            target=f"{n}/{n}",
            verdict="ok" if fan["complete_streams"] == n else "MISSED",
        ),
        Row(
            NAME,
            "Redis connections held by the API",
            str(fan["redis_connections"]),
            str(naive["redis_connections"]),
            target="O(1) in subscribers",
            verdict="ok" if fan["redis_connections"] < 40 else "MISSED",
        ),
        Row(
            NAME,
            "API memory per subscriber",
            f"{fan['kib_per_subscriber']} KiB",
            f"{naive['kib_per_subscriber']} KiB",
        ),
        Row(
            NAME,
            "API CPU while events flow",
            f"{fan['api_cpu']} cores",
            f"{naive['api_cpu']} cores",
            ratio(fan["api_cpu"], naive["api_cpu"]),
        ),
    ]
    return {"sizes": sizes, "fanout": fan, "naive_xread_per_subscriber": naive}, rows


if __name__ == "__main__":  # `python -m bench.sse_fanout [--quick]`: this benchmark alone
    from bench.__main__ import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
