"""Benchmark 3: no-op strategy jobs per second through ONE worker process.

Scans of 14 no-op strategies are created up front straight through the store and
`JobQueue.enqueue_into` on pipelines (fast): each scan's jobs on its job partition, as
the API queues them, so the jobs spread over the PARTITIONS partitions. Then one
`scanstream worker --concurrency N` starts, with the same partition count. Jobs/s counts
from the first job taken (a partition group's last-delivered-id moves) until every entry
of every partition was delivered and no group has a pending job (XINFO GROUPS of each
partition, polled in one round trip). Then every scan is checked: completed, exactly one
terminal event, 14 strategy.completed.

Tried at several N; the best and the recommended (the smallest N within 5% of the
best) are reported. At the recommended N, redis-py client variants are measured too
(bench.variant patches `scanstream.storage.connection.client` inside the worker process).

Baselines in the same run, measured the same way, each reading all PARTITIONS job
streams in one XREADGROUP (COUNT 100 in all) and acknowledging a batch in one round trip:
bench.bare_consumer --mode protocol (the same scans' jobs through scanstream's fenced
writes), and --mode drain (XREADGROUP, XACK the batch, no events written) on the same
number of jobs, spread evenly over PARTITIONS bare streams.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from bench.harness import (
    FOREIGN_WARN,
    USER,
    Bench,
    CpuMeter,
    Proc,
    RedisCounters,
    Row,
    entry_ms,
    noisy,
    running,
    say,
    verdict,
)
from bench.noop_strategies import NAMES
from scanstream.events import TERMINAL_TYPES
from scanstream.storage.keys import DEFAULT_PARTITIONS, JOB_GROUP, Keys

NAME = "worker_throughput"
TIMEOUT_S = 180.0
START_POLL_S = 0.002  # to catch the first delivery
POLL_S = 0.005  # XINFO GROUPS while the consumer drains (the bare one takes ~0.3 s)
BARE_JOBS, BARE_GROUP = "benchbare:jobs", "bare-workers"
# The job partitions of the measured worker and of both baselines: the shipped default.
PARTITIONS = DEFAULT_PARTITIONS
PROCESS_CONCURRENCY = 16
VARIANTS: dict[str, list[str]] = {
    # what redis-py 8 does by default: a 5 s socket timeout, i.e. an asyncio timeout per read
    "socket_timeout=5": ["--socket-timeout", "5"],
    "health_check_interval=0": ["--health-check-interval", "0"],
    # the worker logs "strategy started" and "strategy completed" at INFO for every job
    "log level WARNING": ["--log-level", "WARNING"],
    # Issue 8: where strategies run (thread is shipped), and the client before its retries
    "isolation inline (before issue 8)": ["--isolation", "inline"],
    "isolation inline + legacy client (before issue 8)": [
        "--isolation",
        "inline",
        "--legacy-client",
    ],
    "isolation process": ["--isolation", "process"],
}


async def _precreate(url: str, prefix: str, scans: int) -> tuple[list[str], dict[str, str]]:
    """`scans` scans of the 14 no-ops and their jobs, each scan's on its partition;
    (scan ids, the last job's entry id of each partition's job stream that has one)."""
    from scanstream import events as ev
    from scanstream.ids import new_scan_id
    from scanstream.storage import connection
    from scanstream.storage.events import EventStore
    from scanstream.storage.jobs import JobQueue

    r = connection.client(url, max_connections=128)
    try:
        keys = Keys(prefix, PARTITIONS)
        store = EventStore(r, keys, retention_s=3600)
        queue = JobQueue(r, keys)
        await queue.ensure_group()
        ids = [new_scan_id() for _ in range(scans)]
        for i in range(0, scans, 100):
            chunk = ids[i : i + 100]
            await asyncio.gather(
                *(
                    store.create_scan(
                        scan_id,
                        ev.stamp(ev.ScanRequested, user_id=USER, strategies=NAMES, params={}),
                    )
                    for scan_id in chunk
                )
            )
            pipe = r.pipeline(transaction=False)
            for scan_id in chunk:
                queue.enqueue_into(pipe, scan_id, NAMES)
            await pipe.execute()
        lasts = {}
        for p in keys.partitions:
            last = await r.xrevrange(p.jobs, "+", "-", count=1)
            if last:
                lasts[p.jobs] = last[0][0].decode()
        return ids, lasts
    finally:
        await r.aclose()


def _groups(r: redis.Redis, streams: Sequence[str], group: str) -> list[tuple[str, int]]:
    """(last-delivered-id, pending) of `group` on each stream, in one round trip."""
    pipe = r.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
    out = []
    for stream, groups in zip(streams, pipe.execute(), strict=True):
        for g in groups:
            if g["name"] in (group, group.encode()):
                last = g["last-delivered-id"]
                out.append((last.decode() if isinstance(last, bytes) else last, int(g["pending"])))
                break
        else:
            raise RuntimeError(f"no group {group} on {stream}")
    return out


def drain(
    b: Bench, proc: Proc, lasts: Mapping[str, str], group: str, jobs: int, label: str
) -> dict[str, Any]:
    """Start `proc`, time it draining `group` on the job streams `lasts` names (each with
    its last entry id), stop it. Figures of the run."""
    assert b.redis_proc.process is not None
    streams = list(lasts)
    polls = 0
    with b.redis() as r:
        before = RedisCounters.snapshot(r)
        with running(proc):
            deadline = time.monotonic() + TIMEOUT_S
            while all(last == "0-0" for last, _ in _groups(r, streams, group)):
                polls += 1
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: no job taken in {TIMEOUT_S}s")
                proc.check_alive()
                time.sleep(START_POLL_S)
            t_first = time.perf_counter()
            with CpuMeter([proc.pid, b.redis_proc.process.pid]) as cpu:
                while True:
                    time.sleep(POLL_S)
                    polls += 1
                    groups = _groups(r, streams, group)
                    pending = sum(n for _, n in groups)
                    delivered = [last for last, _ in groups]
                    if pending == 0 and delivered == [lasts[s] for s in streams]:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{label}: pending {pending} after {TIMEOUT_S}s")
                    proc.check_alive()
            t_end = time.perf_counter()
        delta = RedisCounters.snapshot(r).since(before, ignore=("info", "xinfo", "client"))
    seconds = t_end - t_first
    reads = delta.reads - polls - 1
    return {
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds),
        # jobs per second of the consumer's own CPU: what other load on the machine cannot
        # bend much (the consumer is CPU-bound)
        "jobs_per_cpu_s": round(jobs / seconds / cpu.shares[0]) if cpu.shares[0] > 0.05 else None,
        "redis_round_trips_per_job": round(reads / jobs, 2),
        "redis_commands_per_job": round(delta.total_commands / jobs, 2),
        "redis_commands": delta.commands,
        **cpu.as_dict(["consumer", "redis"]),
    }


def verify(r: redis.Redis, prefix: str, scan_ids: Sequence[str]) -> dict[str, Any]:
    """Every scan completed with exactly one terminal event and 14 strategy.completed."""
    keys = Keys(prefix, PARTITIONS)
    problems: Counter[str] = Counter()
    first_started, last_terminal, events = float("inf"), 0, 0
    for i in range(0, len(scan_ids), 200):
        chunk = scan_ids[i : i + 200]
        pipe = r.pipeline(transaction=False)
        for scan_id in chunk:
            pipe.xrange(keys.events(scan_id))
        for entries in pipe.execute():
            events += len(entries)
            types = [f.get(b"type", b"").decode() for _id, f in entries]
            terminals = [
                (eid, t) for (eid, _f), t in zip(entries, types, strict=True) if t in TERMINAL_TYPES
            ]
            if [t for _eid, t in terminals] != ["scan.completed"]:
                problems[f"terminal events {[t for _e, t in terminals]}"] += 1
            if types.count("strategy.completed") != len(NAMES):
                problems["strategy.completed count != 14"] += 1
            for (eid, _f), t in zip(entries, types, strict=True):
                if t == "strategy.started":
                    first_started = min(first_started, entry_ms(eid))
            if terminals:
                last_terminal = max(last_terminal, entry_ms(terminals[-1][0]))
    return {
        "scans_checked": len(scan_ids),
        "events": events,
        "problems": dict(problems),
        "first_started_ms": first_started,
        "last_terminal_ms": last_terminal,
    }


def run_worker(
    b: Bench, scans: int, concurrency: int, variant: Sequence[str] = (), label: str = ""
) -> dict[str, Any]:
    b.flush()
    prefix = f"bench3c{concurrency}"
    ids, lasts = asyncio.run(_precreate(b.redis_url, prefix, scans))
    jobs = scans * len(NAMES)
    worker = b.worker(
        prefix,
        concurrency,
        variant=variant,
        name=f"worker-c{concurrency}",
        SCANSTREAM_JOB_PARTITIONS=str(PARTITIONS),
    )
    out = drain(b, worker, lasts, JOB_GROUP, jobs, label or f"worker --concurrency {concurrency}")
    with b.redis() as r:
        check = verify(r, prefix, ids)
    span_s = (check["last_terminal_ms"] - check["first_started_ms"]) / 1000
    out.update(
        concurrency=concurrency,
        variant=list(variant),
        verify=check,
        jobs_per_s_from_events=round(jobs / span_s) if span_s > 0 else None,
    )
    return out


def run_protocol(b: Bench, scans: int) -> dict[str, Any]:
    """The same scans through scanstream's fenced writes, without the worker around them."""
    b.flush()
    prefix = "bench3proto"
    ids, lasts = asyncio.run(_precreate(b.redis_url, prefix, scans))
    jobs = scans * len(NAMES)
    streams = [p.jobs for p in Keys(prefix, PARTITIONS).partitions]
    consumer = b.bare_consumer("protocol", streams, JOB_GROUP, prefix=prefix, partitions=PARTITIONS)
    out = drain(b, consumer, lasts, JOB_GROUP, jobs, "protocol floor")
    with b.redis() as r:
        out["verify"] = verify(r, prefix, ids)
    return out


def run_bare(b: Bench, jobs: int) -> dict[str, Any]:
    """`jobs` bare jobs spread evenly over PARTITIONS streams, drained by one consumer."""
    b.flush()
    streams = [f"{BARE_JOBS}:{i}" for i in range(PARTITIONS)]
    with b.redis() as r:
        for stream in streams:
            r.xgroup_create(stream, BARE_GROUP, id="0", mkstream=True)
        for i in range(0, jobs, 1000):
            pipe = r.pipeline(transaction=False)
            for j in range(i, min(jobs, i + 1000)):
                pipe.xadd(
                    streams[j % PARTITIONS],
                    {"scan_id": f"scan_{j:032x}", "strategy": NAMES[j % 14]},
                )
            pipe.execute()
        lasts = {}
        for stream in streams:
            last = r.xrevrange(stream, "+", "-", count=1)
            if last:
                lasts[stream] = last[0][0].decode()
    consumer = b.bare_consumer("drain", streams, BARE_GROUP)
    return drain(b, consumer, lasts, BARE_GROUP, jobs, "bare consumer")


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the most jobs/s (other people's load only ever slows one down)."""
    return max(runs, key=lambda m: m["jobs_per_s"])


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    import redis.utils

    scans = 300 if b.quick else 1500
    levels = [64] if b.quick else [32, 64, 128]
    rounds = 1 if b.quick else 2
    jobs = scans * len(NAMES)
    out: dict[str, Any] = {
        "scans": scans,
        "jobs": jobs,
        "partitions": PARTITIONS,
        "rounds": rounds,
        "redis_py": redis.__version__,
        "hiredis": bool(redis.utils.HIREDIS_AVAILABLE),
        "runs": {},
        "by_concurrency": {},
        "variants": {},
    }
    say(
        f"  redis-py {redis.__version__}, hiredis "
        f"{'active' if out['hiredis'] else 'NOT active'}; {scans} scans x {len(NAMES)} "
        f"no-op strategies = {jobs} jobs, over {PARTITIONS} job partitions"
    )
    # Interleaved rounds, so drifting load hits every level alike; a level runs again only
    # when other processes competed for the CPU during its previous run.
    for i in range(rounds):
        for n in levels:
            previous = out["runs"].get(str(n))
            if previous and not noisy(previous[-1]):
                continue
            say(f"  round {i + 1}/{rounds}: worker --concurrency {n} ...")
            result = run_worker(b, scans, n)
            out["runs"].setdefault(str(n), []).append(result)
            say(f"    {_line(result)}")
    out["by_concurrency"] = {n: best(runs) for n, runs in out["runs"].items()}
    by = {int(k): v for k, v in out["by_concurrency"].items()}
    best_n = max(by, key=lambda n: by[n]["jobs_per_s"])
    recommended = min(n for n in by if by[n]["jobs_per_s"] >= 0.95 * by[best_n]["jobs_per_s"])
    out["best_concurrency"], out["recommended_concurrency"] = best_n, recommended
    if not b.quick:
        for name, flags in VARIANTS.items():
            # process isolation starts one process per slot: a few dozen, not a hundred
            n = min(recommended, PROCESS_CONCURRENCY) if "process" in flags else recommended
            results = []
            for i in range(rounds):  # best of `rounds`, as for the levels above
                say(f"  variant {name}, worker --concurrency {n} ({i + 1}/{rounds}) ...")
                try:
                    results.append(run_worker(b, scans, n, flags, f"variant {name}"))
                except Exception as exc:  # a variant must never sink the benchmark
                    say(f"    failed: {exc!r}")
                    break
                say(f"    {_line(results[-1])}")
            if results:
                out["variants"][name] = best(results)
    say(
        "  protocol floor: the same jobs through EventStore.start_strategy + finish_strategy,"
        " a batch's jobs concurrently, XACK per batch, no worker machinery ..."
    )
    try:
        out["protocol"] = run_protocol(b, scans)
        say(f"    {_line(out['protocol'])}")
    except Exception as exc:  # a second baseline must never sink the benchmark
        say(f"    failed: {exc!r}")
    say(
        f"  bare consumer (XREADGROUP COUNT 100 over {PARTITIONS} streams + XACK, no events),"
        f" {jobs} jobs ..."
    )
    out["bare"] = run_bare(b, jobs)
    say(f"    {_line(out['bare'])}")
    return out, rows(out)


def _line(m: dict[str, Any]) -> str:
    flag = "  << other load on the machine" if m["foreign_cpu"] > FOREIGN_WARN else ""
    text = (
        f"{m['jobs_per_s']} jobs/s ({m['jobs']} in {m['seconds']}s, "
        f"{m['jobs_per_cpu_s']} per consumer CPU-second); Redis "
        f"{m['redis_round_trips_per_job']} round trips, {m['redis_commands_per_job']} "
        f"commands per job; CPU: consumer {m['consumer_cpu']:.2f}, redis "
        f"{m['redis_cpu']:.2f}, other {m['foreign_cpu']:.2f} cores{flag}"
    )
    check = m.get("verify")
    if check:
        checked = check["problems"] or "all completed, one terminal event each"
        text += f"; checked {check['scans_checked']} scans: {checked}" + (
            f"; from events: {m['jobs_per_s_from_events']} jobs/s"
            if "jobs_per_s_from_events" in m
            else ""
        )
    return text


def rows(out: dict[str, Any]) -> list[Row]:
    bare = out["bare"]["jobs_per_s"]
    result = []
    for n, m in out["by_concurrency"].items():
        ok = m["jobs_per_s"] >= 3000 and not m["verify"]["problems"]
        tags = []
        if int(n) == out["best_concurrency"]:
            tags.append("best")
        if int(n) == out["recommended_concurrency"]:
            tags.append("recommended")
        label = f"no-op jobs/s, 1 worker, --concurrency {n}"
        if tags:
            label += f" ({', '.join(tags)})"
        result.append(
            Row(
                NAME,
                label,
                f"{m['jobs_per_s']}",
                f"{bare}",
                f"{m['jobs_per_s'] / bare:.3f}",
                ">= 3000",
                verdict(ok, m),
            )
        )
    ref = out["by_concurrency"][str(out["recommended_concurrency"])]
    result.append(
        Row(
            NAME,
            f"jobs per worker CPU-second, --concurrency {ref['concurrency']} (one core's ceiling)",
            f"{ref['jobs_per_cpu_s']}",
            f"{out['bare']['jobs_per_cpu_s']}",
            "",
            ">= 3000",
            verdict((ref["jobs_per_cpu_s"] or 0) >= 3000),
        )
    )
    for name, m in out["variants"].items():
        label = f"variant {name}, --concurrency {m['concurrency']}"
        result.append(
            Row(
                NAME,
                f"{label}: jobs/s vs as shipped",
                f"{m['jobs_per_s']}",
                f"{ref['jobs_per_s']}",
                f"{m['jobs_per_s'] / ref['jobs_per_s']:.2f}",
            )
        )
        if m.get("jobs_per_cpu_s") and ref.get("jobs_per_cpu_s"):
            result.append(
                Row(
                    NAME,
                    f"{label}: per CPU-s vs as shipped",
                    f"{m['jobs_per_cpu_s']}",
                    f"{ref['jobs_per_cpu_s']}",
                    f"{m['jobs_per_cpu_s'] / ref['jobs_per_cpu_s']:.2f}",
                )
            )
    proto = out.get("protocol")
    if proto:
        result.append(
            Row(
                NAME,
                "protocol floor: fenced start+finish per job, no worker machinery, jobs/s",
                f"{ref['jobs_per_s']}",
                f"{proto['jobs_per_s']}",
                f"{ref['jobs_per_s'] / proto['jobs_per_s']:.2f}",
            )
        )
        if proto.get("jobs_per_cpu_s") and ref.get("jobs_per_cpu_s"):
            result.append(
                Row(
                    NAME,
                    "protocol floor, per CPU-second",
                    f"{ref['jobs_per_cpu_s']}",
                    f"{proto['jobs_per_cpu_s']}",
                    f"{ref['jobs_per_cpu_s'] / proto['jobs_per_cpu_s']:.2f}",
                )
            )
    best_run = out["by_concurrency"][str(out["best_concurrency"])]
    result += [
        Row(
            NAME,
            "Redis round trips per job (best N)",
            f"{best_run['redis_round_trips_per_job']}",
            f"{out['bare']['redis_round_trips_per_job']}",
        ),
        Row(
            NAME,
            "redis-py / hiredis",
            f"{out['redis_py']} / {'active' if out['hiredis'] else 'NOT active'}",
        ),
    ]
    return result
