"""Benchmark 2: time from `POST /v1/scans` to `scan.completed`, 14 no-op strategies.

One `scanstream api` and ONE `scanstream worker` process. Scans run one after another:
t0 just before the POST, t1 when the client sees the terminal event, read with XREAD
BLOCK on the scan's stream straight from Redis from "0-0" (no status polling, which
would add its own latency).

Baseline in the same run, on the same Redis: the same chain done bare. The client XADDs
a request entry and 14 jobs (two round trips, as the API's create does), a bare consumer
process (bench.bare_consumer --mode chain) XREADGROUPs, appends two events per job and
XACKs, and the client XREAD BLOCKs until the last of the 29 entries. The bare jobs go on
one stream: a scan's jobs all go to one job partition in scanstream too.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import redis

from bench.harness import (
    FOREIGN_WARN,
    Bench,
    CpuMeter,
    Proc,
    Row,
    bearer,
    entry_ms,
    percentile,
    running,
    say,
    verdict,
)
from bench.noop_strategies import NAMES
from scanstream.events import TERMINAL_TYPES
from scanstream.storage.keys import Keys

NAME = "scan_latency"
PREFIX = "bench2"
WORKER_CONCURRENCY = 32  # every job of a 14-strategy scan can run at once
TIMEOUT_S = 30.0
BARE_JOBS, BARE_GROUP = "benchbare:jobs", "bare-workers"


def wait_consumer(r: redis.Redis, proc: Proc, timeout_s: float = 30.0) -> None:
    """Until `proc` sits in a blocking XREADGROUP (Redis 6.2 lists a group's consumer only
    once it has been delivered something, so ask CLIENT LIST instead of XINFO)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.check_alive()
        if any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in r.client_list()):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} is not reading jobs after {timeout_s}s:\n{proc.log_tail()}")


def _read_until(r: redis.Redis, key: str, done: Any, proc: Proc) -> list[tuple[bytes, dict]]:
    """XREAD BLOCK from "0-0" until `done(entries)`; the entries read."""
    entries: list[tuple[bytes, dict]] = []
    last = "0-0"
    deadline = time.monotonic() + TIMEOUT_S
    while not done(entries):
        if time.monotonic() > deadline:
            proc.check_alive()
            raise TimeoutError(f"{key}: not finished in {TIMEOUT_S}s ({len(entries)} entries)")
        for _key, new in r.xread({key: last}, block=1000) or []:
            entries += new
            last = new[-1][0].decode()
    return entries


def _terminal_seen(entries: list[tuple[bytes, dict]]) -> bool:
    return any(f.get(b"type", b"").decode() in TERMINAL_TYPES for _id, f in entries[-30:])


def _summary(latencies: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies]
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(sum(ms) / len(ms), 2),
    }


def run_scanstream(b: Bench, scans: int, warmup: int) -> dict[str, Any]:
    keys = Keys(PREFIX)
    api = b.api(PREFIX)
    worker = b.worker(PREFIX, WORKER_CONCURRENCY)
    body = json.dumps({"strategies": NAMES}).encode()
    headers = {"Authorization": f"Bearer {bearer()}", "Content-Type": "application/json"}
    total, post, server = [], [], []
    bad: dict[str, int] = {}
    with running(api, worker), b.redis() as r:
        wait_consumer(r, worker)
        assert api.port is not None and b.redis_proc.process is not None
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=TIMEOUT_S)
        with CpuMeter([api.pid, worker.pid, b.redis_proc.process.pid]) as cpu:
            for i in range(warmup + scans):
                t0 = time.perf_counter()
                conn.request("POST", "/v1/scans", body, headers)
                resp = conn.getresponse()
                answer = resp.read()
                t_post = time.perf_counter()
                if resp.status != 202:
                    raise RuntimeError(f"POST /v1/scans answered {resp.status}: {answer[:300]!r}")
                scan_id = json.loads(answer)["scan_id"]
                entries = _read_until(r, keys.events(scan_id), _terminal_seen, worker)
                t1 = time.perf_counter()
                terminal = entries[-1][1][b"type"].decode()
                if i < warmup:
                    continue
                if terminal != "scan.completed":
                    bad[terminal] = bad.get(terminal, 0) + 1
                total.append(t1 - t0)
                post.append(t_post - t0)
                server.append((entry_ms(entries[-1][0]) - entry_ms(entries[0][0])) / 1000)
        conn.close()
    return {
        "scans": scans,
        "worker_concurrency": WORKER_CONCURRENCY,
        "post_to_completed": _summary(total),
        "post_answered": _summary(post),
        "requested_to_terminal_redis_clock": _summary(server),
        "not_completed": bad,
        **cpu.as_dict(["api", "worker", "redis"]),
    }


def run_bare(b: Bench, scans: int, warmup: int) -> dict[str, Any]:
    consumer = b.bare_consumer("chain", [BARE_JOBS], BARE_GROUP)
    expected = 1 + 2 * len(NAMES)
    total = []
    with b.redis() as r:
        r.xgroup_create(BARE_JOBS, BARE_GROUP, id="0", mkstream=True)
        with running(consumer):
            wait_consumer(r, consumer)
            assert b.redis_proc.process is not None
            with CpuMeter([consumer.pid, b.redis_proc.process.pid]) as cpu:
                for i in range(warmup + scans):
                    key = f"benchbare:{{{i}}}:events"
                    t0 = time.perf_counter()
                    r.xadd(
                        key,
                        {
                            "type": "scan.requested",
                            "data": json.dumps(
                                {"user_id": "bench", "strategies": NAMES, "params": {}}
                            ),
                        },
                    )
                    pipe = r.pipeline(transaction=False)
                    for name in NAMES:
                        pipe.xadd(BARE_JOBS, {"events": key, "strategy": name})
                    pipe.execute()
                    _read_until(r, key, lambda e: len(e) >= expected, consumer)
                    if i >= warmup:
                        total.append(time.perf_counter() - t0)
    return {
        "scans": scans,
        "post_to_completed": _summary(total),
        **cpu.as_dict(["consumer", "redis"]),
    }


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    scans, warmup = (20, 3) if b.quick else (50, 5)
    say(
        f"  scanstream: API + 1 worker (--concurrency {WORKER_CONCURRENCY}), {scans} scans of "
        f"{len(NAMES)} no-op strategies, one after another ({warmup} warm-up scans first) ..."
    )
    ours = run_scanstream(b, scans, warmup)
    say(
        f"    {_line(ours)}; POST answered p50 {ours['post_answered']['p50_ms']} ms; "
        f"requested->terminal (Redis clock) p50 "
        f"{ours['requested_to_terminal_redis_clock']['p50_ms']} ms"
    )
    say("  bare chain: XADD request + 14 jobs, bare consumer, XREAD BLOCK until the last ...")
    bare = run_bare(b, scans, warmup)
    say(f"    {_line(bare)}")
    out = {"scanstream": ours, "bare": bare}
    return out, rows(out)


def _line(m: dict[str, Any]) -> str:
    s = m["post_to_completed"]
    flag = "  << other load on the machine" if m["foreign_cpu"] > FOREIGN_WARN else ""
    return (
        f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms (min {s['min_ms']}, max {s['max_ms']}); "
        f"other load {m['foreign_cpu']:.2f} cores{flag}"
    )


def rows(out: dict[str, Any]) -> list[Row]:
    ours, bare = out["scanstream"]["post_to_completed"], out["bare"]["post_to_completed"]
    bad = out["scanstream"]["not_completed"]
    return [
        Row(
            NAME,
            "POST -> scan.completed p50 (ms), 14 no-ops",
            f"{ours['p50_ms']:.1f}",
            f"{bare['p50_ms']:.1f}",
            f"{ours['p50_ms'] / bare['p50_ms']:.1f}x",
            "< 25 ms",
            verdict(ours["p50_ms"] < 25 and not bad, out["scanstream"]),
        ),
        Row(
            NAME,
            "POST -> scan.completed p99 (ms)",
            f"{ours['p99_ms']:.1f}",
            f"{bare['p99_ms']:.1f}",
            f"{ours['p99_ms'] / bare['p99_ms']:.1f}x",
        ),
        Row(
            NAME,
            "POST answered (202) p50 (ms)",
            f"{out['scanstream']['post_answered']['p50_ms']:.1f}",
        ),
    ]
