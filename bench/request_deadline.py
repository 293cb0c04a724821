"""Benchmark 6 (issue 8): what the request deadline and the new Redis client cost the
status path.

The status read of a finished scan (as in benchmark 1) on three `scanstream api --workers
1` processes running at once: one as shipped (`SCANSTREAM_REQUEST_TIMEOUT=2`), one with the
deadline off (`=0`), and one as before issue 8 (deadline off, and the Redis client as it
was: a pool that fails when full and redis-py's own ten retries, patched in by
`bench.variant --legacy-client`). Measured in interleaved rounds, in ABBA order (50
connections each, as benchmark 1), and compared by the best round of each, in requests/s
and in requests per server CPU-second (the figure other load on the machine bends least).

Two API processes of the same code differ by several percent from run to run on a shared
2-core machine, more than a deadline can cost, so the cost is also measured where nothing
else differs: in this one process under uvloop, the status path's service call
(`ScanService.get_view`, a real XRANGE round trip to the same Redis, 50 at a time) with
the deadline on and off in alternating rounds, by reads per CPU-second of this process;
and one deadline scope around an awaited no-op.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import status_reads
from bench.harness import USER, Bench, Proc, Row, bearer, running, say
from bench.status_reads import best, load_status, make_finished_scan, measure

NAME = "request_deadline"
SHIPPED, OFF, BEFORE = "deadline 2 s (as shipped)", "deadline off", "before issue 8"
# name -> (SCANSTREAM_REQUEST_TIMEOUT, bench.variant flags). "before issue 8": no deadline
# and the Redis client as it was (a pool that fails when full, redis-py's own retries).
VARIANTS = {SHIPPED: ("2", []), OFF: ("0", []), BEFORE: ("0", ["--legacy-client"])}


def _api(b: Bench, timeout: str, flags: list[str], n: int) -> Proc:
    api = b.api(status_reads.PREFIX, variant=flags, name=f"api-deadline-{n}")
    api.env = {**api.env, "SCANSTREAM_REQUEST_TIMEOUT": timeout}
    return api


async def _scope_ns(rounds: int) -> dict[str, float]:
    """ns per call of an awaited no-op, bare and inside one deadline scope (best of 5)."""
    from scanstream.deadline import Deadline

    deadline = Deadline(2.0)

    async def noop() -> None:
        return None

    async def bare() -> None:
        await noop()

    async def bounded() -> None:
        with deadline():
            await noop()

    out = {}
    for name, fn in (("bare", bare), ("bounded", bounded)):
        times = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for _ in range(rounds):
                await fn()
            times.append((time.perf_counter_ns() - t0) / rounds)
        out[name] = min(times)
    return out


async def _service_reads(
    redis_url: str, scan_id: str, seconds: float, rounds: int
) -> dict[str, dict[str, float]]:
    """`ScanService.get_view` of a finished scan, 50 at a time, deadline on and off in
    alternating rounds (ABBA): the best reads/s and reads per CPU-second of each."""
    from scanstream.deadline import Deadline
    from scanstream.projection_cache import ProjectionCache
    from scanstream.service import ScanService
    from scanstream.storage import connection
    from scanstream.storage.events import EventStore
    from scanstream.storage.index import ScanIndex
    from scanstream.storage.jobs import JobQueue
    from scanstream.storage.keys import Keys

    redis = connection.client(redis_url, max_connections=256)
    keys = Keys(status_reads.PREFIX)
    store = EventStore(redis, keys, retention_s=3600)
    cache = ProjectionCache(store)
    services = {
        name: ScanService(
            store=store,
            cache=cache,
            index=ScanIndex(redis, keys, ttl_s=3600),
            jobs=JobQueue(redis, keys),
            strategies=[],
            validate_params=lambda params, names: None,
            deadline=Deadline(float(timeout)),
        )
        for name, (timeout, flags) in VARIANTS.items()
        if not flags  # in process, only the deadline differs
    }

    async def measure_one(service: ScanService) -> tuple[float, float]:
        count = 0
        until = time.perf_counter() + seconds

        async def reader() -> None:
            nonlocal count
            while time.perf_counter() < until:
                await service.get_view(USER, scan_id)
                count += 1

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(reader() for _ in range(50)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return count / wall, count / cpu

    out = {name: {"reads_per_s": 0.0, "reads_per_cpu_s": 0.0} for name in services}
    try:
        await measure_one(services["deadline off"])  # warm-up
        names = list(services)
        for n in range(rounds):
            for name in names if n % 2 == 0 else reversed(names):
                rps, per_cpu = await measure_one(services[name])
                best = out[name]
                best["reads_per_s"] = max(best["reads_per_s"], round(rps))
                best["reads_per_cpu_s"] = max(best["reads_per_cpu_s"], round(per_cpu))
    finally:
        await redis.aclose()
    return out


def _uvloop_run(coro: Any) -> Any:
    import uvloop

    return uvloop.run(coro)


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    duration = 3.0 if b.quick else 8.0
    rounds = 1 if b.quick else 3
    headers = {"Authorization": f"Bearer {bearer()}"}
    procs = {
        name: _api(b, timeout, flags, n)
        for n, (name, (timeout, flags)) in enumerate(VARIANTS.items())
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in procs}
    with running(*procs.values()):
        scan = make_finished_scan(b, next(iter(procs.values())), headers)
        urls = {name: f"{p.url}/v1/scans/{scan['scan_id']}" for name, p in procs.items()}
        for url in urls.values():  # warm-up
            load_status(b, url, headers)
        for n in range(rounds):
            for name in list(procs) if n % 2 == 0 else reversed(list(procs)):
                proc = procs[name]
                say(f"  round {n + 1}/{rounds}: {name} ...")
                runs[name].append(measure(b, proc, urls[name], headers, duration))
                m = runs[name][-1]
                say(
                    f"    {m['rps']:.0f} req/s, p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} "
                    f"ms, non-2xx {m['non_2xx']}, {m['requests_per_cpu_s']} req per CPU-s, "
                    f"other load {m['foreign_cpu']:.2f} cores"
                )
    scope = _uvloop_run(_scope_ns(20_000 if b.quick else 200_000))
    say(f"  in process (uvloop): {scope['bare']:.0f} ns bare, {scope['bounded']:.0f} ns bounded")
    service = _uvloop_run(
        _service_reads(b.redis_url, scan["scan_id"], 1.0 if b.quick else 2.0, 2 if b.quick else 6)
    )
    say(f"  in process, ScanService.get_view: {service}")
    on, off, before = (best(runs[name]) for name in (SHIPPED, OFF, BEFORE))
    out: dict[str, Any] = {
        "scan_events": scan["events"],
        "deadline_on": on,
        "deadline_off": off,
        "before_issue_8": before,
        "runs": runs,
        "scope_ns": scope,
        "service_reads": service,
    }
    s_on, s_off = (service[name] for name in (SHIPPED, OFF))
    cpu_on, cpu_off, cpu_before = (
        max(r["requests_per_cpu_s"] or 0 for r in runs[name]) for name in (SHIPPED, OFF, BEFORE)
    )
    rows = [
        Row(
            NAME,
            "status reads/s, deadline on vs off (best round)",
            f"{on['rps']:.0f}",
            f"{off['rps']:.0f}",
            f"{on['rps'] / off['rps']:.3f}" if off["rps"] else "",
        ),
        Row(
            NAME,
            "status reads per server CPU-s, deadline on vs off",
            str(cpu_on),
            str(cpu_off),
            f"{cpu_on / cpu_off:.3f}" if cpu_off else "",
        ),
        Row(
            NAME,
            "status reads/s, as shipped vs before issue 8 (no deadline, old client)",
            f"{on['rps']:.0f}",
            f"{before['rps']:.0f}",
            f"{on['rps'] / before['rps']:.3f}" if before["rps"] else "",
            ">= 0.95",
        ),
        Row(
            NAME,
            "status reads per server CPU-s, as shipped vs before issue 8",
            str(cpu_on),
            str(cpu_before),
            f"{cpu_on / cpu_before:.3f}" if cpu_before else "",
            ">= 0.95",
        ),
        Row(
            NAME,
            "status p50 / p99 (ms), deadline on vs off",
            f"{on['p50_ms']:.2f} / {on['p99_ms']:.2f}",
            f"{off['p50_ms']:.2f} / {off['p99_ms']:.2f}",
        ),
        Row(
            NAME,
            "in process: get_view reads per CPU-s, deadline on vs off",
            f"{s_on['reads_per_cpu_s']:.0f}",
            f"{s_off['reads_per_cpu_s']:.0f}",
            f"{s_on['reads_per_cpu_s'] / s_off['reads_per_cpu_s']:.3f}",
        ),
        Row(
            NAME,
            "one deadline scope, in process (ns per call)",
            f"{scope['bounded'] - scope['bare']:.0f}",
        ),
    ]
    return out, rows


if __name__ == "__main__":  # `python -m bench.request_deadline [--quick]`: this benchmark alone
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
