"""Benchmark (issue 11): what a longer log costs, and SSE with 5,000 subscribers.

Scans whose logs hold 100, 1,000 and 10,000 events are written through the real store
(`EventStore`, the fenced Lua writes the worker makes, with the worker's default
`SCANSTREAM_MAX_EVENTS_PER_SCAN` of 20,000, which only drops progress events past it):
scan.requested of 14 strategies; each strategy started, then its share of progress events
and findings (one in five a finding, details as the built-ins report them), written 50 to
a call, then completed; the last completion writes scan.completed. Then, for each size:

- in this process: the baseline, a raw XRANGE of the whole stream plus
  `scanstream.events.decode_entry` of every entry, beside the projection rebuild, the
  status path's read from scratch (`EventStore.read` + `projection.fold_all`), and the
  fold alone; in interleaved batches, the best with the garbage collector paused (the
  code's own cost): rebuild / baseline, target <= 1.5, and the cost per event against
  the next smaller log, to see whether it grows faster than the log; the median with the
  collector on beside it (the collections a read triggers, whose cost grows with all the
  process holds);
- over HTTP (`scanstream api`, 50 connections): status reads of the finished scan as
  shipped (the projection cache catches up with one round trip) and with the cache
  forgetting the scan before every read (bench.variant `--rebuild-per-request`: an
  uncached rebuild each time); requests/s and API CPU ms per read. Baseline: a bare
  starlette endpoint doing one Redis GET (bench.bare_app), in the same run.

Then SSE on ONE API process with 5,000 subscribers (250 running scans x 20; 1,000 in
--quick) held by client processes, with bench.sse_fanout's machinery: p99 delivery
latency and API memory per subscriber, beside the baseline of one XREAD BLOCK loop per
subscriber. Each scan gets 1 event/s: 5,000 deliveries/s, as many as sse_fanout's 1,000
subscribers at 5 events/s. RLIMIT_NOFILE is raised to its hard limit first (children
inherit it): each subscriber is a socket in the API and in a client process, and one
more in Redis for the baseline.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import bare_app, sse_fanout
from bench.harness import (
    USER,
    Bench,
    CpuMeter,
    Proc,
    RedisCounters,
    Row,
    bearer,
    http_request,
    load,
    noisy,
    running,
    say,
    verdict,
)
from bench.status_reads import CONNECTIONS, load_status
from scanstream.storage.keys import Keys
from scanstream.strategies.registry import builtin_strategies

NAME = "growth"
PREFIX = "bench11g"
SIZES = (100, 1_000, 10_000)
STRATEGIES = list(builtin_strategies())  # the 14 built-ins, as a seed scan asks for
FIXED = 2 + 2 * len(STRATEGIES)  # requested, terminal, each strategy's started + completed
BATCH = 50  # events per append call
MAX_EVENTS_PER_SCAN = 20_000  # the worker's default SCANSTREAM_MAX_EVENTS_PER_SCAN
TARGET_REBUILD = 1.5
REBUILD_CONNECTIONS = 8
SSE_TARGET_P99_MS = 100.0


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "batch_s": 0.05,
            "budget_s": 0.5,
            "http_s": 2.0,
            "warm_s": 1.0,
            "sse": {"scans": 50, "per_scan": 20, "rate": 1.0, "duration_s": 6.0, "clients": 2},
        }
    return {
        "batch_s": 0.1,
        "budget_s": 2.0,
        "http_s": 5.0,
        "warm_s": 1.0,
        "sse": {"scans": 250, "per_scan": 20, "rate": 1.0, "duration_s": 20.0, "clients": 4},
    }


def raise_nofile() -> tuple[int, int]:
    """The soft RLIMIT_NOFILE up to the hard one (inherited by every child); (before, now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- writing logs of a given length ----------------------------------------------------


def _plan(total: int) -> list[tuple[int, int]]:
    """(progress events, findings) of each strategy for a log of `total` events."""
    body = max(0, total - FIXED)
    findings = body // 5
    progress = body - findings
    n = len(STRATEGIES)
    return [
        (progress // n + (i < progress % n), findings // n + (i < findings % n)) for i in range(n)
    ]


async def write_scan(url: str, total: int) -> str:
    """A finished scan whose log holds `total` events, through the worker's writes."""
    from scanstream import events as ev
    from scanstream.ids import new_scan_id
    from scanstream.storage.connection import client
    from scanstream.storage.events import EventStore
    from scanstream.strategies.api import make_opportunity

    r = client(url)
    try:
        store = EventStore(r, Keys(PREFIX), retention_s=3600, max_entries=MAX_EVENTS_PER_SCAN)
        scan_id = new_scan_id()
        requested = ev.stamp(
            ev.ScanRequested, user_id=USER, strategies=STRATEGIES, params={"seed": total}
        )
        await store.create_scan(scan_id, requested)
        for (progress, findings), name in zip(_plan(total), STRATEGIES, strict=True):
            started = await store.start_strategy(scan_id, name, "bench-growth")
            assert started.ok, started
            attempt = started.attempt
            events: list[ev.Event] = []
            count = progress + findings
            every = count // findings if findings else 0
            f = 0
            for i in range(count):
                if every and i % every == every - 1 and f < findings:
                    f += 1
                    opportunity = make_opportunity(
                        strategy=name,
                        fingerprint=scan_id,
                        symbol=f"SYM{f:05d}-USD",
                        side="long" if f % 2 else "short",
                        score=0.5 + (f % 50) / 100,
                        expected_return=0.001 * (f % 30),
                        details={"z": 2.5, "window_bars": 240, "close": 101.25, "atr": 1.75},
                    )
                    events.append(
                        ev.stamp(
                            ev.OpportunityFound,
                            strategy=name,
                            attempt=attempt,
                            opportunity=opportunity,
                        )
                    )
                else:
                    events.append(
                        ev.stamp(
                            ev.StrategyProgress,
                            strategy=name,
                            attempt=attempt,
                            progress=min(1.0, (i + 1) / count),
                            message=f"SYM{i:05d}-USD",
                        )
                    )
            for i in range(0, len(events), BATCH):
                wrote = await store.append_strategy_events(
                    scan_id, name, attempt, events[i : i + BATCH]
                )
                assert wrote.ok, wrote
            done = await store.finish_strategy(
                scan_id,
                name,
                attempt,
                [
                    ev.stamp(
                        ev.StrategyCompleted,
                        strategy=name,
                        attempt=attempt,
                        opportunities=findings,
                        duration_ms=1,
                    )
                ],
            )
            assert done.ok, done
        return scan_id
    finally:
        await r.aclose()


# -- in process ------------------------------------------------------------------------


async def _per_call(
    fns: dict[str, Callable[[], Awaitable[object]]], batch_s: float, budget_s: float
) -> dict[str, tuple[float, float]]:
    """Each function's time per call in us: (best, median), over interleaved batches of
    about `batch_s` seconds, until each has had about `budget_s` (3 batches at least).

    The best is of batches run with the garbage collector paused (collected before each):
    the code's own cost, the same whatever else this process holds. The median is of
    batches run with it on, as a server runs: the collections a call triggers included,
    whose cost grows with everything the process holds, not with the call."""
    numbers = {}
    for name, fn in fns.items():  # warm up, and size each batch
        t0 = time.perf_counter()
        await fn()
        one = max(1e-6, time.perf_counter() - t0)
        numbers[name] = max(1, int(batch_s / one))
    paused: dict[str, list[float]] = {name: [] for name in fns}
    running_gc: dict[str, list[float]] = {name: [] for name in fns}
    spent = dict.fromkeys(fns, 0.0)
    while min(len(t) for t in paused.values()) < 3 or min(spent.values()) < budget_s:
        for name, fn in fns.items():
            n = numbers[name]
            for out in (paused, running_gc):
                gc.collect()
                if out is paused:
                    gc.disable()
                try:
                    t0 = time.perf_counter()
                    for _ in range(n):
                        await fn()
                    took = time.perf_counter() - t0
                finally:
                    gc.enable()
                spent[name] += took
                out[name].append(took / n * 1e6)
    return {
        name: (min(paused[name]), sorted(running_gc[name])[len(running_gc[name]) // 2])
        for name in fns
    }


async def in_process(url: str, scan_id: str, batch_s: float, budget_s: float) -> dict[str, Any]:
    from scanstream import events as ev
    from scanstream import projection
    from scanstream.storage.connection import client
    from scanstream.storage.events import EventStore

    r = client(url)
    try:
        keys = Keys(PREFIX)
        store = EventStore(r, keys, retention_s=3600)
        key = keys.events(scan_id)

        async def xrange_decode() -> object:
            raw: Any = await r.xrange(key)
            return [ev.decode_entry(i, f) for i, f in raw]

        async def xrange_only() -> object:
            return await r.xrange(key)

        async def rebuild() -> object:
            return projection.fold_all(scan_id, await store.read(scan_id))

        entries = await store.read(scan_id)
        view = projection.fold_all(scan_id, entries)

        async def fold_only() -> object:
            return projection.fold_all(scan_id, entries)

        measured = await _per_call(
            {
                "xrange_us": xrange_only,
                "xrange_decode_us": xrange_decode,
                "rebuild_us": rebuild,
                "fold_only_us": fold_only,
            },
            batch_s,
            budget_s,
        )
        times = {k: best for k, (best, _median) in measured.items()}
        medians = {k.replace("_us", "_median_us"): med for k, (_best, med) in measured.items()}
        events = len(entries)
        return {
            "events": events,
            "opportunities": len(view.opportunities),
            "state": view.state,
            "log_bytes": sum(len(e.data) for e in entries),
            **{k: round(v, 1) for k, v in times.items()},
            **{k: round(v, 1) for k, v in medians.items()},
            "rebuild_vs_baseline": round(times["rebuild_us"] / times["xrange_decode_us"], 3),
            "baseline_us_per_event": round(times["xrange_decode_us"] / events, 3),
            "rebuild_us_per_event": round(times["rebuild_us"] / events, 3),
            "fold_us_per_event": round(times["fold_only_us"] / events, 3),
            "rebuild_vs_baseline_median": round(
                medians["rebuild_median_us"] / medians["xrange_decode_median_us"], 3
            ),
        }
    finally:
        await r.aclose()


# -- over HTTP -------------------------------------------------------------------------


def measure_load(
    b: Bench, proc: Proc, url: str, headers: dict[str, str], duration: float, connections: int
) -> dict[str, Any]:
    """`connections` clients on `url` for `duration`, with the API's and Redis's CPU and
    the Redis commands per request (as bench.status_reads.measure, at any connections)."""
    assert b.redis_proc.process is not None
    with b.redis() as r:
        before = RedisCounters.snapshot(r)
        with CpuMeter([proc.pid, b.redis_proc.process.pid]) as cpu:
            result = load(
                b.loadgen,
                url,
                connections=connections,
                threads=min(2, connections),
                duration_s=duration,
                headers=headers,
            )
        delta = RedisCounters.snapshot(r).since(before)
    requests = max(1, result.requests)
    server = cpu.shares[0]
    return {
        **result.as_dict(),
        "connections": connections,
        "requests_per_cpu_s": round(result.rps / server, 1) if server > 0.05 else None,
        "redis_commands_per_request": round(delta.total_commands / requests, 3),
        **cpu.as_dict(["server", "redis"]),
    }


def http_status(
    b: Bench, scans: dict[int, str], duration: float, warm: float
) -> dict[str, dict[str, Any]]:
    """Status reads of each size's scan: cached (50 connections), rebuilt on every read
    (REBUILD_CONNECTIONS: 50 rebuilds of a 10,000-event log in flight would take longer
    than a run, and leave a backlog behind it), and the bare endpoint."""
    headers = {"Authorization": f"Bearer {bearer()}"}
    api = b.api(PREFIX, name="api-growth")
    rebuild = b.api(PREFIX, variant=["--rebuild-per-request"], name="api-growth-rebuild")
    bare = b.bare_app()
    out: dict[str, dict[str, Any]] = {}
    with b.redis() as r:
        r.set(bare_app.KEY, "hello")
    with running(api, rebuild, bare):
        bare_url = f"{bare.url}{bare_app.PATH}"
        load_status(b, bare_url, headers, warm)
        say(f"  bare endpoint (one Redis GET), {CONNECTIONS} connections, {duration:g}s ...")
        out["bare"] = measure_load(b, bare, bare_url, headers, duration, CONNECTIONS)
        say(f"    {_http_line(out['bare'])}")
        for size, scan_id in scans.items():
            for name, proc, conns in (
                ("cached", api, CONNECTIONS),
                ("rebuild", rebuild, REBUILD_CONNECTIONS),
            ):
                url = f"{proc.url}/v1/scans/{scan_id}"
                for _ in range(3):  # warm-up reads, one at a time
                    status, body = http_request("GET", url, headers=headers, timeout_s=30)
                    if status != 200:
                        raise RuntimeError(f"status read answered {status}: {body[:300]!r}")
                if name == "cached":
                    load_status(b, url, headers, warm)
                say(f"  {size}-event log, {name}, {conns} connections ...")
                m = measure_load(b, proc, url, headers, duration, conns)
                m["body_bytes"] = len(body)
                out[f"{name}-{size}"] = m
                say(f"    {_http_line(m)}")
    return out


def _cpu_ms(m: dict[str, Any]) -> float | None:
    per = m.get("requests_per_cpu_s")
    return round(1000 / per, 3) if per else None


def _http_line(m: dict[str, Any]) -> str:
    return (
        f"{m['rps']:.0f} req/s, p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms, non-2xx "
        f"{m['non_2xx']}, server CPU {_cpu_ms(m)} ms per read, "
        f"{m['redis_commands_per_request']} Redis commands per read; CPU: server "
        f"{m['server_cpu']:.2f}, redis {m['redis_cpu']:.2f}, other {m['foreign_cpu']:.2f} cores"
    )


# -- SSE -------------------------------------------------------------------------------


def sse(b: Bench, sizes: dict[str, Any]) -> dict[str, Any]:
    n = sizes["scans"] * sizes["per_scan"]
    say(
        f"  SSE: {n} subscribers ({sizes['scans']} scans x {sizes['per_scan']}) on one API "
        f"process, {sizes['clients']} client processes, {sizes['rate']:g} events/s per scan "
        f"for {sizes['duration_s']:g}s ..."
    )
    fan = sse_fanout.measure(b, _fanout_server(b, n), "fanout", sizes)
    say(f"    fan-out: {_sse_line(fan, n)}")
    naive = sse_fanout.measure(b, sse_fanout.naive_server(b), "naive", sizes)
    say(f"    one XREAD loop per subscriber: {_sse_line(naive, n)}")
    return {"sizes": sizes, "fanout": fan, "naive": naive}


def _fanout_server(b: Bench, n: int) -> Proc:
    api = sse_fanout.fanout_server(b)
    cap = str(max(10_000, 2 * n))
    api.env = {
        **api.env,
        "SCANSTREAM_SSE_MAX": cap,
        "SCANSTREAM_SSE_MAX_PER_USER": cap,
        "SCANSTREAM_MAX_CONNECTIONS": str(max(10_000, 2 * n + 100)),
    }
    return api


def _sse_line(m: dict[str, Any], n: int) -> str:
    return (
        f"p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms, max {m['max_ms']} ms, "
        f"{m['complete_streams']}/{n} complete, {m['redis_connections']} Redis connections, "
        f"RSS {m['rss_idle_mib']} -> {m['rss_connected_mib']} MiB "
        f"({m['kib_per_subscriber']} KiB/subscriber), API {m['api_cpu']} cores, clients "
        f"{m['clients_cpu']}, other {m['foreign_cpu']} cores"
    )


# -- run -------------------------------------------------------------------------------


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    sizes = _sizes(b.quick)
    before, now = raise_nofile()
    out: dict[str, Any] = {"sizes": {k: v for k, v in sizes.items() if k != "sse"}}
    out["nofile"] = {"before": before, "now": now}
    say(f"  RLIMIT_NOFILE {before} -> {now}")
    scans: dict[int, str] = {}
    for total in SIZES:
        t0 = time.perf_counter()
        scans[total] = asyncio.run(write_scan(b.redis_url, total))
        with b.redis() as r:
            length = r.xlen(Keys(PREFIX).events(scans[total]))
        if length != total:
            raise RuntimeError(f"wrote {length} events, not {total}")
        say(f"  wrote a {total}-event log in {time.perf_counter() - t0:.2f}s")
    out["in_process"] = {}
    for total, scan_id in scans.items():
        m = asyncio.run(in_process(b.redis_url, scan_id, sizes["batch_s"], sizes["budget_s"]))
        out["in_process"][str(total)] = m
        say(
            f"  in process, {total} events ({m['log_bytes'] / 1024:.0f} KiB of event data): "
            f"XRANGE {m['xrange_us']:.0f} us, + decode {m['xrange_decode_us']:.0f} us, rebuild "
            f"(read + fold_all) {m['rebuild_us']:.0f} us (x{m['rebuild_vs_baseline']}), fold "
            f"alone {m['fold_only_us']:.0f} us (best, collector paused); per event: baseline "
            f"{m['baseline_us_per_event']} us, rebuild {m['rebuild_us_per_event']} us, fold "
            f"{m['fold_us_per_event']} us; medians "
            f"(garbage collections included): baseline {m['xrange_decode_median_us']:.0f} us, "
            f"rebuild {m['rebuild_median_us']:.0f} us (x{m['rebuild_vs_baseline_median']})"
        )
    out["http"] = http_status(b, scans, sizes["http_s"], sizes["warm_s"])
    out["sse"] = sse(b, sizes["sse"])
    return out, rows(out)


def rows(out: dict[str, Any]) -> list[Row]:
    result: list[Row] = []
    ip = out["in_process"]
    for total in SIZES:
        m = ip[str(total)]
        result.append(
            Row(
                NAME,
                f"{total} events: rebuild (read + fold_all) vs XRANGE + decode (us)",
                f"{m['rebuild_us']:.0f}",
                f"{m['xrange_decode_us']:.0f}",
                f"{m['rebuild_vs_baseline']:.2f}",
                f"<= {TARGET_REBUILD}",
                verdict(m["rebuild_vs_baseline"] <= TARGET_REBUILD),
            )
        )
    for smaller, total in itertools.pairwise(SIZES):
        m, before = ip[str(total)], ip[str(smaller)]
        result.append(
            Row(
                NAME,
                f"{total} events: rebuild us per event (baseline: at {smaller} events)",
                f"{m['rebuild_us_per_event']:.2f}",
                f"{before['rebuild_us_per_event']:.2f}",
                f"{m['rebuild_us_per_event'] / before['rebuild_us_per_event']:.2f}",
                "~1 (linear)",
            )
        )
    for total in SIZES:
        m = ip[str(total)]
        result.append(
            Row(
                NAME,
                f"{total} events: XRANGE + decode, collector on (median) vs paused (best), us",
                f"{m['xrange_decode_median_us']:.0f}",
                f"{m['xrange_decode_us']:.0f}",
                f"{m['xrange_decode_median_us'] / m['xrange_decode_us']:.2f}",
            )
        )
    http = out["http"]
    bare = http["bare"]
    cached_first = http[f"cached-{SIZES[0]}"]
    for total in SIZES:
        cached, rebuild = http[f"cached-{total}"], http[f"rebuild-{total}"]
        result += [
            Row(
                NAME,
                f"{total} events: status reads/s, cached (baseline: bare GET)",
                f"{cached['rps']:.0f}",
                f"{bare['rps']:.0f}",
                f"{cached['rps'] / bare['rps']:.2f}" if bare["rps"] else "",
                verdict=verdict(cached["non_2xx"] == 0, cached, bare),
            ),
            Row(
                NAME,
                f"{total} events: status reads/s, uncached rebuild (baseline: cached)",
                f"{rebuild['rps']:.0f}",
                f"{cached['rps']:.0f}",
                f"{rebuild['rps'] / cached['rps']:.3f}" if cached["rps"] else "",
                verdict=verdict(rebuild["non_2xx"] == 0, rebuild, cached),
            ),
            Row(
                NAME,
                f"{total} events: API CPU ms per read, rebuild (baseline: cached)",
                f"{_cpu_ms(rebuild)}",
                f"{_cpu_ms(cached)}",
            ),
        ]
    last = http[f"cached-{SIZES[-1]}"]
    if _cpu_ms(last) and _cpu_ms(cached_first):
        result.append(
            Row(
                NAME,
                f"cached read CPU ms at {SIZES[-1]} events (baseline: at {SIZES[0]})",
                f"{_cpu_ms(last)}",
                f"{_cpu_ms(cached_first)}",
                f"{(_cpu_ms(last) or 0) / (_cpu_ms(cached_first) or 1):.2f}",
                "~1 (flat)",
                "(noisy)" if noisy(last) or noisy(cached_first) else "",
            )
        )
    s = out["sse"]
    fan, naive = s["fanout"], s["naive"]
    n = fan["subscribers"]

    def times(a: float, base: float) -> str:
        return f"{base / a:.1f}x" if a else ""

    result += [
        Row(
            NAME,
            f"SSE {n} subscribers: p99 delivery",
            f"{fan['p99_ms']} ms",
            f"{naive['p99_ms']} ms",
            times(fan["p99_ms"], naive["p99_ms"]),
            f"< {SSE_TARGET_P99_MS:g} ms",
            verdict(fan["p99_ms"] < SSE_TARGET_P99_MS, fan, naive),
        ),
        Row(
            NAME,
            f"SSE {n} subscribers: p50 delivery",
            f"{fan['p50_ms']} ms",
            f"{naive['p50_ms']} ms",
            times(fan["p50_ms"], naive["p50_ms"]),
        ),
        Row(
            NAME,
            f"SSE {n}: streams with every event, in order",
            f"{fan['complete_streams']}/{n}",
            f"{naive['complete_streams']}/{n}",
            target=f"{n}/{n}",
            verdict=verdict(fan["complete_streams"] == n),
        ),
        Row(
            NAME,
            f"SSE {n}: API memory per subscriber",
            f"{fan['kib_per_subscriber']} KiB",
            f"{naive['kib_per_subscriber']} KiB",
        ),
        Row(
            NAME,
            f"SSE {n}: Redis connections held by the API",
            str(fan["redis_connections"]),
            str(naive["redis_connections"]),
            target="O(1) in subscribers",
            verdict=verdict(fan["redis_connections"] < 40),
        ),
        Row(
            NAME,
            f"SSE {n}: API CPU while events flow",
            f"{fan['api_cpu']} cores",
            f"{naive['api_cpu']} cores",
        ),
    ]
    return result


if __name__ == "__main__":  # `python -m bench.growth [--quick]`: this benchmark alone
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
