"""Benchmark (issue 11): scans of the 14 built-in strategies doing real work, on 1 and 2
worker processes, in both isolation modes.

The params (`scan_params`): the largest synthetic market a request may ask for, 100
symbols x 2 venues x 1,250 bars = 250,000 bars (`MAX_SYNTHETIC_BARS`, a constant, not a
setting), each scan with its own seed (so each builds its own market, as different users'
scans do), and `pairs_spread` fitting every pair correlated at 0.35 or more over a
1,200-bar window. The other strategies walk their series once (O(bars)) or read only the
last bars (carry, arbitrage, volume spike, relative strength): within the bar limit none
of them can take seconds, whatever its thresholds; the in-process row says how long each
takes here. The cost estimate of such a scan (~28 million bars walked) is over the
default `SCANSTREAM_MAX_SCAN_COST` (5 million): this bench's API runs with it raised to
50 million. Every process loads the built-ins only (`SCANSTREAM_STRATEGIES=""`, not the
bench's no-op module).

For each isolation mode, `thread` (shipped: one worker's strategies share its GIL) and
`process` (a pool of strategy processes per worker), with 1 and then 2 `scanstream
worker --concurrency 16` processes (every job of a scan can run at once on one):

- single scans, one after another (after a small warm-up scan, and once every worker has
  seen the others, so that they pace their reads): the scan's wall time,
  scan.requested to its terminal event (Redis entry ids), beside the sum of its
  strategies' `duration_ms` (strategy.completed: each attempt's own wall time, so
  strategies sharing a core each count the time they waited) and beside the longest;
  which worker ran each job (strategy.started); the workers' CPU per scan beside the
  in-process baseline; wall(2 workers) / wall(1 worker), target <= 0.6, beside the scan's
  critical path (its market's build, then its longest strategy, in process): the least
  any number of workers can take;
- a burst of 20 such scans (6 in --quick) POSTed at once by 20 users, one each: jobs/s,
  p50 / p99 scan time (requested to terminal), wall(2 workers) / wall(1 worker), Redis
  CPU and worker CPU per scan (harness `cpu_seconds`; strategy processes count as their
  worker's); the workers' RSS (/proc/PID/status VmRSS, strategy processes included)
  sampled every 50 ms: the peak's growth over the RSS before the burst, per scan running
  at once (first strategy.started to terminal) at most.

And thread isolation at `--concurrency 2`, single scans only: a thread worker runs one
strategy's Python at a time (the GIL), so taking 2 jobs at a time costs it nothing on a
scan of computing strategies and leaves the rest of the scan to a second worker.

Then a fresh API process reads the status and the results of every finished scan once:
its RSS growth per cached scan, beside the bytes of event data in a scan's log.

Baselines in the same run: the 14 strategies run one after another in this process
(`LocalContext`, no Redis) on the params of a scan, and the market build; and
`load_market` of those params called from 14 threads at once (as a thread worker's
strategies of one scan start): how many markets that builds.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import redis

from bench.harness import (
    USER,
    Bench,
    CpuMeter,
    Proc,
    Row,
    bearer,
    cpu_seconds,
    entry_ms,
    http_request,
    noisy,
    percentile,
    running,
    say,
    verdict,
)
from consumers.worker import PEERS_EVERY_S
from scanstream.events import TERMINAL_TYPES
from scanstream.storage.keys import DEFAULT_PARTITIONS, Keys

NAME = "seed_scan"
PREFIX = "bench11s"
CONCURRENCY = 16  # every job of a 14-strategy scan can run at once on one worker
CPU_BOUND_CONCURRENCY = 2
SYMBOLS = [f"SEED{i:03d}-USD" for i in range(100)]
VENUES = ["alpha", "beta"]
BARS = 1250  # 100 x 2 x 1,250 = 250,000 bars: MAX_SYNTHETIC_BARS
# pairs_spread is the one strategy whose work a request can scale (it compares pairs of
# symbols): over a 1,200-bar window, and fitting every pair correlated at 0.35 or more
# (default 0.75), it takes about as long as the 13 others together (~0.5 s here; with no
# correlation filter it would take ~3 s, and bound any scan's wall time alone).
KNOBS: dict[str, dict[str, float]] = {"pairs_spread": {"window": 1200, "min_correlation": 0.35}}
MAX_SCAN_COST = 50_000_000  # the API's SCANSTREAM_MAX_SCAN_COST here (default 5,000,000)
TARGET_RATIO = 0.6
SCAN_TIMEOUT_S = 300.0
POLL_S = 0.1
RSS_EVERY_S = 0.05
# (isolation, workers, --concurrency, with the burst of scans)
CONFIGS: list[tuple[str, int, int, bool]] = [
    ("thread", 1, CONCURRENCY, True),
    ("thread", 2, CONCURRENCY, True),
    ("process", 1, CONCURRENCY, True),
    ("process", 2, CONCURRENCY, True),
    # One thread worker runs one strategy's Python at a time (the GIL): at 2 jobs at a time
    # it leaves the rest of a scan of computing strategies to a second worker.
    ("thread", 1, CPU_BOUND_CONCURRENCY, False),
    ("thread", 2, CPU_BOUND_CONCURRENCY, False),
]


def scan_params(seed: int) -> dict[str, Any]:
    return {"symbols": SYMBOLS, "venues": VENUES, "bars": BARS, "seed": seed, **KNOBS}


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"singles": 1, "burst": 6}
    return {"singles": 3, "burst": 20}


def users(n: int) -> list[str]:
    return [f"{USER}-{i:02d}" for i in range(n)]


# -- processes -------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = [
                int(c) for c in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            ]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class RssSampler:
    """Samples the RSS of some process trees every RSS_EVERY_S in a thread; remembers the
    descendants it saw (strategy processes run in sessions of their own: `stop_children`
    kills any left once their worker is gone)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.samples: list[tuple[float, int]] = []  # (unix ms, KiB over every tree)
        self.children: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(RSS_EVERY_S)

    def sample(self) -> int:
        total = 0
        for pid in self.pids:
            kids = descendants(pid)
            self.children.update(kids)
            total += rss_kib(pid) + sum(rss_kib(k) for k in kids)
        self.samples.append((time.time() * 1000, total))
        return total

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def stop_children(pids: set[int]) -> None:
    """SIGKILL strategy processes (by the pids seen under our workers) still alive."""
    import signal

    for pid in pids:
        if "consumers.isolation.child" in _cmdline(pid):
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def wait_readers(r: redis.Redis, procs: Sequence[Proc], timeout_s: float = 60.0) -> None:
    """Until every worker's partition readers have their blocking XREADGROUPs out, one per
    job partition each (counting one per worker let a scan start while the second
    worker was still connecting: the first then took 13 of its 14 jobs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            p.check_alive()
        blocked = sum(
            1 for c in r.client_list() if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
        )
        if blocked >= len(procs) * DEFAULT_PARTITIONS:
            return
        time.sleep(0.05)
    raise RuntimeError(f"workers not reading jobs after {timeout_s}s")


# -- scans -----------------------------------------------------------------------------


def post_scan(api: Proc, user: str, params: dict[str, Any]) -> str:
    body = json.dumps({"params": params}).encode()
    headers = {"Authorization": f"Bearer {bearer(user=user)}", "Content-Type": "application/json"}
    status, answer = http_request("POST", f"{api.url}/v1/scans", body, headers)
    if status != 202:
        raise RuntimeError(f"POST /v1/scans answered {status}: {answer[:300]!r}")
    return str(json.loads(answer)["scan_id"])


def wait_scans(
    b: Bench, scan_ids: Sequence[str], alive: Callable[[], None]
) -> dict[str, list[tuple[bytes, dict]]]:
    """Poll each scan's last entry until every one has its terminal event; their logs."""
    keys = Keys(PREFIX)
    pending = set(scan_ids)
    deadline = time.monotonic() + SCAN_TIMEOUT_S
    with b.redis() as r:
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} scans unfinished after {SCAN_TIMEOUT_S}s")
            alive()
            order = sorted(pending)
            pipe = r.pipeline(transaction=False)
            for scan_id in order:
                pipe.xrevrange(keys.events(scan_id), count=1)
            for scan_id, last in zip(order, pipe.execute(), strict=True):
                if last and last[0][1].get(b"type", b"").decode() in TERMINAL_TYPES:
                    pending.discard(scan_id)
            if pending:
                time.sleep(POLL_S)
        pipe = r.pipeline(transaction=False)
        for scan_id in scan_ids:
            pipe.xrange(keys.events(scan_id))
        return dict(zip(scan_ids, pipe.execute(), strict=True))


def scan_figures(entries: list[tuple[bytes, dict]]) -> dict[str, Any]:
    """What one scan's log says: wall time, strategies' times, who ran what."""
    requested = entry_ms(entries[0][0])
    started: dict[str, int] = {}
    ran_by: Counter[str] = Counter()
    spans: dict[str, int] = {}
    durations: dict[str, int] = {}
    terminal, terminal_ms, log_bytes = "", 0, 0
    for entry_id, fields in entries:
        kind = fields.get(b"type", b"").decode()
        data = fields.get(b"data", b"")
        log_bytes += len(data)
        if kind == "strategy.started":
            body = json.loads(data)
            started.setdefault(body["strategy"], entry_ms(entry_id))
            ran_by[body["worker"]] += 1
        elif kind == "strategy.completed":
            body = json.loads(data)
            durations[body["strategy"]] = int(body["duration_ms"])
            spans[body["strategy"]] = entry_ms(entry_id) - started.get(body["strategy"], 0)
        elif kind in TERMINAL_TYPES:
            terminal, terminal_ms = kind, entry_ms(entry_id)
    longest = max(durations, key=lambda s: durations[s]) if durations else ""
    return {
        "terminal": terminal,
        "events": len(entries),
        "log_bytes": log_bytes,
        "requested_ms": requested,
        "first_started_ms": min(started.values()) if started else requested,
        "terminal_ms": terminal_ms,
        "wall_ms": terminal_ms - requested,
        "sum_ms": sum(durations.values()),
        "longest_ms": durations.get(longest, 0),
        "longest": longest,
        "sum_span_ms": sum(spans.values()),
        "completed": len(durations),
        "jobs_per_worker": sorted(ran_by.values(), reverse=True),
        "durations_ms": durations,
    }


def _median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# -- one configuration: isolation mode x worker processes ------------------------------


@contextmanager
def _workers(b: Bench, mode: str, count: int, concurrency: int) -> Iterator[list[Proc]]:
    procs = [
        b.worker(
            PREFIX,
            concurrency,
            name=f"worker-{mode}-{i}",
            SCANSTREAM_STRATEGIES="",
            SCANSTREAM_ISOLATION=mode,
        )
        for i in range(count)
    ]
    seen: set[int] = set()
    try:
        with running(*procs):
            try:
                with b.redis() as r:
                    wait_readers(r, procs)
                time.sleep(2 * PEERS_EVERY_S)  # each worker has seen the others (it paces)
                yield procs
            finally:  # before the workers stop: their strategy processes, to be sure
                for p in procs:
                    if p.alive():
                        seen.update(descendants(p.pid))
    finally:
        stop_children(seen)


def run_config(
    b: Bench,
    api: Proc,
    config: tuple[str, int, int, bool],
    sizes: dict[str, int],
    seeds: Iterator[int],
) -> dict[str, Any]:
    assert b.redis_proc.process is not None
    mode, count, concurrency, with_burst = config
    redis_pid = b.redis_proc.process.pid
    who = users(sizes["burst"])
    label = f"{mode} isolation, {count} worker{'s' if count > 1 else ''}"
    if concurrency != CONCURRENCY:
        label += f" --concurrency {concurrency}"
    out: dict[str, Any] = {
        "isolation": mode,
        "workers": count,
        "concurrency": concurrency,
        "singles": [],
    }
    with _workers(b, mode, count, concurrency) as procs:

        def alive() -> None:
            for p in procs:
                p.check_alive()

        warm = post_scan(api, who[0], {"seed": next(seeds)})  # the default universe: small
        wait_scans(b, [warm], alive)
        pids = [p.pid for p in procs]
        idle = RssSampler(pids)
        out["rss_idle_mib"] = round(idle.sample() / 1024, 1)
        for i in range(sizes["singles"]):
            time.sleep(0.3)
            cpu0 = sum(cpu_seconds(p) for p in pids)
            with CpuMeter([*pids, redis_pid]) as meter:
                scan_id = post_scan(api, who[i % len(who)], scan_params(next(seeds)))
                fig = scan_figures(wait_scans(b, [scan_id], alive)[scan_id])
            fig["worker_cpu_s"] = round(sum(cpu_seconds(p) for p in pids) - cpu0, 2)
            fig["workers_cores"] = round(sum(meter.shares[:-1]), 2)
            fig["foreign_cpu"] = round(meter.foreign, 2)
            fig["scan_id"] = scan_id
            out["singles"].append(fig)
            say(f"    {label}: single scan {i + 1}/{sizes['singles']}: {_single_line(fig)}")
        singles = out["singles"]
        for k in ("wall_ms", "sum_ms", "longest_ms", "worker_cpu_s"):
            out[k] = _median([s[k] for s in singles])
        # the measurement whose wall time is the median's (for its noise flag)
        out["median_single"] = min(singles, key=lambda s: abs(s["wall_ms"] - out["wall_ms"]))
        out["finished"] = [(s["scan_id"], who[i % len(who)]) for i, s in enumerate(singles)]
        if not with_burst:
            return out

        # The burst: every scan POSTed at once, each of another user.
        time.sleep(0.5)
        before_rss = RssSampler(pids)
        out["rss_before_burst_mib"] = round(before_rss.sample() / 1024, 1)
        workers0 = sum(cpu_seconds(p) for p in pids)
        redis0 = cpu_seconds(redis_pid)
        with RssSampler(pids) as sampler, CpuMeter([*pids, redis_pid]) as meter:
            t0 = time.perf_counter()
            ids = [post_scan(api, u, scan_params(next(seeds))) for u in who]
            logs = wait_scans(b, ids, alive)
            took = time.perf_counter() - t0
        worker_cpu = sum(cpu_seconds(p) for p in pids) - workers0
        redis_cpu = cpu_seconds(redis_pid) - redis0
        figs = [scan_figures(logs[s]) for s in ids]
        first = min(f["requested_ms"] for f in figs)
        last = max(f["terminal_ms"] for f in figs)
        span_s = max(1e-3, (last - first) / 1000)
        times = [f["wall_ms"] for f in figs]
        peak_ms, peak_kib = max(sampler.samples, key=lambda s: s[1])
        most = max(
            sum(1 for f in figs if f["first_started_ms"] <= t < f["terminal_ms"])
            for t, _ in sampler.samples
        )
        base_kib = before_rss.samples[-1][1]
        out["burst"] = {
            "scans": len(ids),
            "not_completed": sum(1 for f in figs if f["terminal"] != "scan.completed"),
            "seconds": round(took, 2),
            "span_s": round(span_s, 2),
            "jobs_per_s": round(len(ids) * 14 / span_s, 2),
            "p50_ms": percentile(times, 50),
            "p99_ms": percentile(times, 99),
            "sum_strategy_s": round(sum(f["sum_ms"] for f in figs) / 1000, 1),
            "worker_cpu_s_per_scan": round(worker_cpu / len(ids), 2),
            "redis_cpu_ms_per_scan": round(redis_cpu / len(ids) * 1000, 1),
            "events_per_scan": round(sum(f["events"] for f in figs) / len(ids)),
            "most_running": most,
            "rss_before_mib": round(base_kib / 1024, 1),
            "rss_peak_mib": round(peak_kib / 1024, 1),
            "rss_peak_at_s": round((peak_ms - first) / 1000, 2),
            "mib_per_running_scan": round((peak_kib - base_kib) / 1024 / max(1, most), 1),
            "workers_cores": round(sum(meter.shares[:-1]), 2),
            **meter.as_dict([*(f"worker{i}" for i in range(count)), "redis"]),
        }
        out["finished"] += list(zip(ids, who, strict=True))
        out["log_bytes"] = round(sum(f["log_bytes"] for f in figs) / len(figs))
        say(f"    {label}: burst of {len(ids)}: {_burst_line(out['burst'])}")
    return out


def _single_line(f: dict[str, Any]) -> str:
    wait = f["first_started_ms"] - f["requested_ms"]
    return (
        f"{f['terminal']} in {f['wall_ms']} ms (first start +{wait} ms), strategies' sum "
        f"{f['sum_ms']} ms, longest {f['longest']} {f['longest_ms']} ms, {f['events']} events, "
        f"jobs per worker {f['jobs_per_worker']}; worker CPU {f['worker_cpu_s']} s "
        f"({f['workers_cores']} cores), other load {f['foreign_cpu']} cores"
    )


def _burst_line(m: dict[str, Any]) -> str:
    return (
        f"{m['jobs_per_s']} jobs/s over {m['span_s']}s, scan time p50 {m['p50_ms']} ms / p99 "
        f"{m['p99_ms']} ms, worker CPU {m['worker_cpu_s_per_scan']} s and Redis CPU "
        f"{m['redis_cpu_ms_per_scan']} ms per scan, RSS {m['rss_before_mib']} -> "
        f"{m['rss_peak_mib']} MiB with up to {m['most_running']} scans running "
        f"({m['mib_per_running_scan']} MiB per running scan); not completed "
        f"{m['not_completed']}; workers {m['workers_cores']} cores, other load "
        f"{m['foreign_cpu']} cores"
    )


# -- the API's memory per cached scan --------------------------------------------------


def api_memory(b: Bench, finished: list[tuple[str, str]]) -> dict[str, Any]:
    api = _api(b, "api-memory")
    with running(api):
        (warm_id, warm_user), *rest = finished
        for path in ("", "/results"):  # first reads allocate what every read reuses
            _get(api, warm_id, warm_user, path)
        time.sleep(0.3)
        idle = rss_kib(api.pid)
        for scan_id, user in rest:
            for path in ("", "/results"):
                _get(api, scan_id, user, path)
        time.sleep(0.3)
        loaded = rss_kib(api.pid)
    return {
        "scans": len(rest),
        "rss_idle_mib": round(idle / 1024, 1),
        "rss_loaded_mib": round(loaded / 1024, 1),
        "kib_per_cached_scan": round((loaded - idle) / max(1, len(rest)), 1),
    }


def _get(api: Proc, scan_id: str, user: str, path: str) -> None:
    headers = {"Authorization": f"Bearer {bearer(user=user)}"}
    status, body = http_request("GET", f"{api.url}/v1/scans/{scan_id}{path}", headers=headers)
    if status != 200:
        raise RuntimeError(f"GET {path or 'status'} answered {status}: {body[:200]!r}")


def _api(b: Bench, name: str) -> Proc:
    return b.api(
        PREFIX, name=name, SCANSTREAM_STRATEGIES="", SCANSTREAM_MAX_SCAN_COST=str(MAX_SCAN_COST)
    )


# -- the in-process baseline -----------------------------------------------------------


async def _in_process(params: dict[str, Any]) -> dict[str, Any]:
    """The market build, then each built-in strategy run alone on it, in this process."""
    from scanstream.market import build_market, parse_params
    from scanstream.replay.rerun import LocalContext
    from scanstream.strategies.registry import builtin_strategies

    t0 = time.perf_counter()
    market = build_market(parse_params(params))
    build_ms = (time.perf_counter() - t0) * 1000
    times: dict[str, float] = {}
    found: dict[str, int] = {}
    for name, strategy in builtin_strategies().items():
        ctx = LocalContext(
            scan_id="in-process",
            strategy=name,
            attempt=1,
            params=params,
            market_factory=lambda _p: market,
        )
        t0 = time.perf_counter()
        await strategy.run(ctx)
        times[name] = round((time.perf_counter() - t0) * 1000, 1)
        found[name] = len(ctx.found_list)
    builds, concurrent_ms = _concurrent_builds(params)
    return {
        "market_mib": _market_mib(params),
        "market_build_ms": round(build_ms),
        "concurrent_builds": builds,
        "concurrent_builds_ms": concurrent_ms,
        "strategy_ms": times,
        "findings": found,
        "sum_ms": round(sum(times.values())),
        "longest_ms": max(times.values()),
        "longest": max(times, key=lambda n: times[n]),
    }


def _market_mib(params: dict[str, Any]) -> float:
    """What one market of `params` holds, in MiB (tracemalloc, around a build)."""
    import tracemalloc

    from scanstream.market import build_market, parse_params

    tracemalloc.start()
    try:
        market = build_market(parse_params(params))
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del market
    return round(held / 2**20, 1)


def _concurrent_builds(params: dict[str, Any], threads: int = 14) -> tuple[int, int]:
    """`load_market` of one scan's params from `threads` threads at once, as a thread
    worker's strategies of one scan start: (markets built, wall ms)."""
    import scanstream.market as market

    market.clear_cache()
    built = [0]
    original = market.build_market

    def counting(*args: Any, **kwargs: Any) -> Any:
        built[0] += 1
        return original(*args, **kwargs)

    market.build_market = counting  # market_for looks it up at each call
    try:
        workers = [
            threading.Thread(target=market.load_market, args=(params,)) for _ in range(threads)
        ]
        t0 = time.perf_counter()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        took = round((time.perf_counter() - t0) * 1000)
    finally:
        market.build_market = original
        market.clear_cache()
    return built[0], took


# -- run -------------------------------------------------------------------------------


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    from scanstream.limits import scan_cost
    from scanstream.market import parse_params
    from scanstream.strategies.registry import builtin_strategies

    sizes = _sizes(b.quick)
    params = scan_params(1)
    works = [s.work for s in builtin_strategies().values()]
    out: dict[str, Any] = {
        "sizes": sizes,
        "params": {**params, "symbols": f"{len(SYMBOLS)} synthetic symbols"},
        "bars_in_market": len(SYMBOLS) * len(VENUES) * BARS,
        "scan_cost": scan_cost(parse_params(params), works),
        "max_scan_cost": MAX_SCAN_COST,
        "concurrency": CONCURRENCY,
    }
    say(
        f"  params: {len(SYMBOLS)} symbols x {len(VENUES)} venues x {BARS} bars "
        f"({out['bars_in_market']:,} bars, the synthetic limit), {KNOBS}, a seed per scan; "
        f"cost estimate {out['scan_cost']:,} bars (API's SCANSTREAM_MAX_SCAN_COST raised to "
        f"{MAX_SCAN_COST:,}); workers --concurrency {CONCURRENCY}, built-ins only"
    )
    out["in_process"] = asyncio.run(_in_process(params))
    ip = out["in_process"]
    say(
        f"  in process (one after another, no Redis): market build {ip['market_build_ms']} ms "
        f"({ip['market_mib']} MiB), "
        f"strategies {ip['sum_ms']} ms in all: "
        + ", ".join(f"{n} {t:g}" for n, t in ip["strategy_ms"].items())
    )
    say(
        f"  load_market of one scan's params from 14 threads at once (a thread worker "
        f"starting a scan's 14 jobs): {ip['concurrent_builds']} markets built, "
        f"{ip['concurrent_builds_ms']} ms"
    )
    seeds = iter(range(1000, 100_000))
    api = _api(b, "api")
    out["configs"] = {}
    with running(api):
        for config in CONFIGS:
            mode, count, concurrency, _ = config
            key = _key(mode, count, concurrency)
            say(
                f"  {mode} isolation, {count} worker process{'es' if count > 1 else ''}, "
                f"--concurrency {concurrency} ..."
            )
            out["configs"][key] = run_config(b, api, config, sizes, seeds)
    finished = [f for c in out["configs"].values() for f in c.pop("finished")]
    out["api_memory"] = api_memory(b, finished)
    logs = [c["log_bytes"] for c in out["configs"].values() if "log_bytes" in c]
    out["log_bytes_per_scan"] = round(sum(logs) / len(logs))
    m = out["api_memory"]
    say(
        f"  API: RSS {m['rss_idle_mib']} -> {m['rss_loaded_mib']} MiB after reading the status "
        f"and results of {m['scans']} finished scans: {m['kib_per_cached_scan']} KiB per "
        f"cached scan (log: {out['log_bytes_per_scan'] / 1024:.0f} KiB of event data)"
    )
    return out, rows(out)


def _key(mode: str, workers: int, concurrency: int) -> str:
    """A config's key in the results: "thread-2", "thread-2-c2" (not the default 16)."""
    key = f"{mode}-{workers}"
    return key if concurrency == CONCURRENCY else f"{key}-c{concurrency}"


def _label(c: dict[str, Any]) -> str:
    label = f"{c['isolation']}, {c['workers']}w"
    return label if c["concurrency"] == CONCURRENCY else f"{label} -c {c['concurrency']}"


def rows(out: dict[str, Any]) -> list[Row]:
    ip, configs = out["in_process"], out["configs"]
    alone_ms = ip["sum_ms"] + ip["market_build_ms"]
    result = [
        Row(
            NAME,
            "in process, one after another: 14 strategies (ms; baseline: market build)",
            f"{ip['sum_ms']}",
            f"{ip['market_build_ms']}",
            target=f"longest {ip['longest']} {ip['longest_ms']:.0f}",
        ),
        Row(
            NAME,
            "load_market of one scan from 14 threads at once: markets built (ms)",
            f"{ip['concurrent_builds']} ({ip['concurrent_builds_ms']})",
            f"1 ({ip['market_build_ms']})",
            target="1",
            verdict=verdict(ip["concurrent_builds"] == 1),
        ),
    ]
    for c in configs.values():
        one = c["median_single"]
        result += [
            Row(
                NAME,
                f"{_label(c)}: one scan's wall vs its strategies' sum (ms), jobs per worker "
                f"{'/'.join(map(str, one['jobs_per_worker']))}",
                f"{c['wall_ms']:.0f}",
                f"{c['sum_ms']:.0f}",
                f"{c['wall_ms'] / c['sum_ms']:.2f}" if c["sum_ms"] else "",
                f"longest {c['longest_ms']:.0f}",
            ),
            Row(
                NAME,
                f"{_label(c)}: worker CPU per scan (s; baseline: in process, build + strategies)",
                f"{c['worker_cpu_s']:.2f}",
                f"{alone_ms / 1000:.2f}",
                f"{c['worker_cpu_s'] * 1000 / alone_ms:.1f}x",
            ),
        ]
    for mode, concurrency in (
        ("thread", CONCURRENCY),
        ("process", CONCURRENCY),
        ("thread", CPU_BOUND_CONCURRENCY),
    ):
        one = configs.get(_key(mode, 1, concurrency))
        two = configs.get(_key(mode, 2, concurrency))
        if not one or not two:
            continue
        ratio = two["wall_ms"] / one["wall_ms"] if one["wall_ms"] else 0.0
        flag = "" if concurrency == CONCURRENCY else f" --concurrency {concurrency}"
        result.append(
            Row(
                NAME,
                f"{mode}{flag}: one scan's wall, 2 workers vs 1 (ms)",
                f"{two['wall_ms']:.0f}",
                f"{one['wall_ms']:.0f}",
                f"{ratio:.2f}",
                f"<= {TARGET_RATIO}",
                verdict(ratio <= TARGET_RATIO, two["median_single"], one["median_single"]),
            )
        )
    # The least one scan can take on any number of workers: its market's build, then its
    # longest strategy (each in process, alone), beside one worker's wall time.
    critical_ms = ip["market_build_ms"] + ip["longest_ms"]
    for mode in ("thread", "process"):
        one = configs.get(_key(mode, 1, CONCURRENCY))
        if one and one["wall_ms"]:
            result.append(
                Row(
                    NAME,
                    f"{mode}: one scan's critical path (build + {ip['longest']}, in process) "
                    "vs 1 worker's wall (ms)",
                    f"{critical_ms:.0f}",
                    f"{one['wall_ms']:.0f}",
                    f"{critical_ms / one['wall_ms']:.2f}",
                    target="the best 2 workers can do",
                )
            )
    thread, process = configs.get("thread-1"), configs.get("process-1")
    if thread and process and thread["wall_ms"]:
        ratio = process["wall_ms"] / thread["wall_ms"]
        result.append(
            Row(
                NAME,
                "1 worker: one scan's wall, process isolation vs thread (ms)",
                f"{process['wall_ms']:.0f}",
                f"{thread['wall_ms']:.0f}",
                f"{ratio:.2f}",
                verdict="(noisy)"
                if noisy(process["median_single"]) or noisy(thread["median_single"])
                else "",
            )
        )
    bursts = [c for c in configs.values() if "burst" in c]
    for c in bursts:
        m = c["burst"]
        result.append(
            Row(
                NAME,
                f"{_label(c)}: {m['scans']} scans at once: jobs/s (p50 / p99 scan s; cores)",
                f"{m['jobs_per_s']}",
                f"{m['p50_ms'] / 1000:.1f} / {m['p99_ms'] / 1000:.1f}",
                target=f"{m['workers_cores']} cores",
                verdict=verdict(m["not_completed"] == 0, m),
            )
        )
    for mode in ("thread", "process"):
        one, two = configs.get(f"{mode}-1"), configs.get(f"{mode}-2")
        if not one or not two:
            continue
        a, b_ = one["burst"], two["burst"]
        ratio = b_["span_s"] / a["span_s"] if a["span_s"] else 0.0
        result.append(
            Row(
                NAME,
                f"{mode}: {a['scans']} scans at once, wall 2 workers vs 1 (s)",
                f"{b_['span_s']}",
                f"{a['span_s']}",
                f"{ratio:.2f}",
                f"<= {TARGET_RATIO}",
                verdict(ratio <= TARGET_RATIO, a, b_),
            )
        )
    for c in bursts:
        m = c["burst"]
        result += [
            Row(
                NAME,
                f"{_label(c)}: Redis CPU per scan (ms; baseline: worker CPU per scan)",
                f"{m['redis_cpu_ms_per_scan']}",
                f"{m['worker_cpu_s_per_scan'] * 1000:.0f}",
                f"{m['redis_cpu_ms_per_scan'] / (m['worker_cpu_s_per_scan'] * 1000):.3f}"
                if m["worker_cpu_s_per_scan"]
                else "",
            ),
            Row(
                NAME,
                f"{_label(c)}: worker RSS per running scan (MiB; before -> peak; a market)",
                f"{m['mib_per_running_scan']}",
                f"{m['rss_before_mib']} -> {m['rss_peak_mib']}",
                target=f"{out['in_process']['market_mib']} MiB, {m['most_running']} at once",
            ),
        ]
    am = out["api_memory"]
    kib_log = out["log_bytes_per_scan"] / 1024
    result.append(
        Row(
            NAME,
            f"API RSS per cached scan, {am['scans']} scans (baseline: its log's event data)",
            f"{am['kib_per_cached_scan']} KiB",
            f"{kib_log:.0f} KiB",
            f"{am['kib_per_cached_scan'] / kib_log:.1f}x" if kib_log else "",
        )
    )
    return result


if __name__ == "__main__":  # `python -m bench.seed_scan [--quick]`: this benchmark alone
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
