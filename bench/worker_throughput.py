"""Benchmark 3: no-op strategy jobs per second through ONE worker process.

Scans of 14 no-op strategies are created up front straight through the store, and their
jobs queued as the API queues them (`JobQueue.enqueue_calls`, pipelined): each scan is
one of USERS (20) users', so the jobs wait in those users' lanes on the users' partitions
(2 or 3 users on each of the PARTITIONS), a few already in each job stream. Then one
`scanstream worker --concurrency N` starts, with the same partition count. Jobs/s counts
from the first job taken (a partition group's last-delivered-id moves) until every
partition's queue is empty: its ring (users with waiting jobs) empty, its group's lag 0
and nothing pending (XINFO GROUPS, XINFO STREAM and LLEN of each partition, polled in one
round trip). Then every scan is checked: completed, exactly one terminal event, 14
strategy.completed; and no lane left, no user counted as running.

Tried at several N; the best and the recommended (the smallest N within 5% of the
best) are reported. At the recommended N, redis-py client variants are measured too
(bench.variant patches `scanstream.storage.connection.client` inside the worker process).

Baselines in the same run, measured the same way, each reading all PARTITIONS job
streams in one XREADGROUP (COUNT 100 in all) and acknowledging a batch in one round trip:
bench.bare_consumer --mode protocol (the same scans' jobs through scanstream's queue,
lanes dispatched in the read's round trip and acknowledged through them, and its fenced
writes), and --mode drain (XREADGROUP, XACK the batch, no events written, no lanes) on
the same number of jobs, spread evenly over PARTITIONS bare streams.

`run_worker(..., root=PATH)` runs the worker of another checkout (a `git worktree` of an
older commit) on the same Redis: bench.worker_trees compares trees in one run.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.harness import (
    FOREIGN_WARN,
    REPO,
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
# The scans' users, as real load has many: scan i is user i % USERS's. Their lanes fall
# on the partitions by user id (`Keys.jobs_of`): 2 or 3 users on each of 8.
USERS = 20
Queue = tuple[str, str | None]  # a partition's job stream and its ring (None: no lanes)
VARIANTS: dict[str, list[str]] = {
    # what redis-py 8 does by default: a 5 s socket timeout, i.e. an asyncio timeout per read
    "socket_timeout=5": ["--socket-timeout", "5"],
    "health_check_interval=0": ["--health-check-interval", "0"],
    # before issue 11 the worker logged each attempt's start at INFO (now debug: ~1.0)
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


def bench_users(n: int = USERS) -> list[str]:
    """The users whose scans the bench queues (20 of them: 2 or 3 per partition of 8)."""
    return [f"{USER}-{i:02d}" for i in range(n)]


async def _precreate(
    url: str, prefix: str, scans: int, *, cluster: bool = False, users: int = USERS
) -> tuple[list[str], list[Queue]]:
    """`scans` scans of the 14 no-ops, scan i of user i % `users`, their jobs queued as the
    API queues them (`JobQueue.enqueue_calls`: the user's lane on the user's partition;
    each call moves up to READY_DEPTH jobs to the partition's stream). (scan ids, every
    partition's (job stream, ring)). `cluster`: `url` is a seed node of a Redis Cluster
    (bench.cluster)."""
    from scanstream import events as ev
    from scanstream.ids import new_scan_id
    from scanstream.storage import connection
    from scanstream.storage.events import EventStore
    from scanstream.storage.jobs import JobQueue
    from scanstream.storage.scripts import Call, pipelined

    r = connection.client(url, max_connections=128, cluster=cluster)
    try:
        keys = Keys(prefix, PARTITIONS)
        store = EventStore(r, keys, retention_s=3600)
        queue = JobQueue(r, keys)
        await queue.ensure_group()
        who = bench_users(users)
        ids = [new_scan_id() for _ in range(scans)]
        for i in range(0, scans, 100):
            chunk = list(enumerate(ids[i : i + 100], start=i))
            await asyncio.gather(
                *(
                    store.create_scan(
                        scan_id,
                        ev.stamp(
                            ev.ScanRequested,
                            user_id=who[n % users],
                            strategies=NAMES,
                            params={},
                        ),
                    )
                    for n, scan_id in chunk
                )
            )
            calls: list[Call] = []
            for n, scan_id in chunk:
                calls += queue.enqueue_calls(scan_id, who[n % users], NAMES)
            await pipelined(r, calls)
        return ids, [(p.jobs, p.ring) for p in keys.partitions]
    finally:
        await r.aclose()


def users_line(users: int = USERS) -> str:
    """How the bench's users and their jobs fall on the partitions, for the printout."""
    keys = Keys("x", PARTITIONS)
    per = Counter(keys.jobs_of(u).index for u in bench_users(users))
    spread = ", ".join(str(per.get(i, 0)) for i in range(PARTITIONS))
    return f"{users} users (scan i is user i % {users}'s), per partition: {spread}"


@dataclass
class QueueState:
    """One partition's queue as the bench polls it."""

    delivered: str  # the group's last-delivered-id
    pending: int  # delivered, not acknowledged
    undelivered: int  # in the stream, not yet delivered (the group's lag)
    waiting: int  # users with jobs waiting in lanes (the ring's length)

    @property
    def empty(self) -> bool:
        return not (self.pending or self.undelivered or self.waiting)


def _field(info: Mapping[Any, Any], name: str) -> Any:
    value = info.get(name, info.get(name.encode()))
    return value.decode() if isinstance(value, bytes) else value


def queue_state(r: redis.Redis, queues: Sequence[Queue], group: str) -> list[QueueState]:
    """The state of `group` on each (job stream, ring or None) in one round trip: XINFO
    GROUPS and XINFO STREAM of the stream (the lag, or, when Redis cannot tell it, the
    last-generated id against the last-delivered one), LLEN of the ring."""
    pipe = r.pipeline(transaction=False)
    for stream, ring in queues:
        pipe.xinfo_groups(stream)
        pipe.xinfo_stream(stream)
        if ring is not None:
            pipe.llen(ring)
    replies = iter(pipe.execute())
    out = []
    for stream, ring in queues:
        groups, info = next(replies), next(replies)
        waiting = int(next(replies)) if ring is not None else 0
        for g in groups:
            if _field(g, "name") == group:
                break
        else:
            raise RuntimeError(f"no group {group} on {stream}")
        delivered = _field(g, "last-delivered-id")
        lag = _field(g, "lag")
        if lag is None:  # entries deleted in between: compare ids
            lag = int(delivered != _field(info, "last-generated-id"))
        out.append(QueueState(delivered, int(_field(g, "pending")), int(lag), waiting))
    return out


def drain(
    b: Bench,
    proc: Proc,
    queues: Sequence[Queue],
    group: str,
    jobs: int,
    label: str,
    *,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Start `proc`, time it draining `group` on `queues` (job stream, ring or None each),
    stop it. Figures of the run.

    Timed from the first job taken (a last-delivered-id moves) until every queue is empty:
    no user waiting in a ring (lanes empty), nothing undelivered in a stream (lag 0) and
    nothing pending. `profile`: py-spy records the consumer meanwhile (collapsed stacks,
    written to that path; py-spy is no dependency: `pip install py-spy`)."""
    assert b.redis_proc.process is not None
    rings = sum(ring is not None for _stream, ring in queues)
    polls = 0
    with b.redis() as r:
        before = RedisCounters.snapshot(r)
        with running(proc):
            deadline = time.monotonic() + TIMEOUT_S
            while all(q.delivered == "0-0" for q in queue_state(r, queues, group)):
                polls += 1
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: no job taken in {TIMEOUT_S}s")
                proc.check_alive()
                time.sleep(START_POLL_S)
            polls += 1
            t_first = time.perf_counter()
            spy = _py_spy(proc, profile) if profile is not None else None
            with CpuMeter([proc.pid, b.redis_proc.process.pid]) as cpu:
                while True:
                    time.sleep(POLL_S)
                    polls += 1
                    state = queue_state(r, queues, group)
                    if all(q.empty for q in state):
                        break
                    if time.monotonic() > deadline:
                        left = {
                            k: sum(getattr(q, k) for q in state)
                            for k in ("pending", "undelivered", "waiting")
                        }
                        raise TimeoutError(f"{label}: {left} after {TIMEOUT_S}s")
                    proc.check_alive()
            t_end = time.perf_counter()
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # it writes what it has, then exits
                spy.wait(30)
        delta = RedisCounters.snapshot(r).since(before, ignore=("info", "xinfo", "client"))
    # The bench's own LLENs of the rings (the lanes script's own LLENs stay counted).
    if rings:
        delta.commands["llen"] = delta.commands.get("llen", 0) - polls * rings
        delta.commands = {k: v for k, v in delta.commands.items() if v}
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
        # the bench's own polls, each an LLEN of every ring (bench.cluster takes them out
        # of its per-master counts)
        "polls": polls,
        **cpu.as_dict(["consumer", "redis"]),
    }


def _py_spy(proc: Proc, path: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `proc` (its threads too) until SIGINT."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    argv = [spy, "record", "--pid", str(proc.pid), "--rate", "250", "--format", "raw"]
    return subprocess.Popen(
        [*argv, "--threads", "--output", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def verify(
    r: redis.Redis, prefix: str, scan_ids: Sequence[str], *, lanes: bool = True
) -> dict[str, Any]:
    """Every scan completed with exactly one terminal event and 14 strategy.completed;
    `lanes`: every partition's lanes are gone and no user is counted as running a job."""
    keys = Keys(prefix, PARTITIONS)
    problems: Counter[str] = Counter()
    first_started, last_terminal, events = float("inf"), 0, 0
    if lanes:
        pipe = r.pipeline(transaction=False)
        for p in keys.partitions:
            pipe.llen(p.ring)
            pipe.hgetall(p.running_jobs)
        replies = pipe.execute()
        for waiting, running_jobs in zip(replies[::2], replies[1::2], strict=True):
            if waiting:
                problems["users still waiting in a ring"] += waiting
            counted = {k: v for k, v in running_jobs.items() if int(v)}
            if counted:
                problems[f"running counts left: {counted}"] += 1
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


def legacy_tree(root: Path) -> bool:
    """Whether the checkout at `root` predates job partitions (issue 9): one job stream."""
    return not (root / "scanstream" / "storage" / "lua" / "job_lanes.lua").exists()


_LEGACY_PRECREATE = """
import asyncio, json, sys
from bench.worker_throughput import _precreate
from scanstream.storage.keys import Keys
url, prefix, scans = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids, _last = asyncio.run(_precreate(url, prefix, scans))
print(json.dumps({"ids": ids, "jobs": Keys(prefix).jobs}))
"""


def _precreate_legacy(
    b: Bench, root: Path, prefix: str, scans: int
) -> tuple[list[str], list[Queue]]:
    """The same scans and jobs through the older checkout's own bench `_precreate` (its
    one job stream, its `JobQueue.enqueue_into`), run with its code."""
    done = subprocess.run(
        [sys.executable, "-c", _LEGACY_PRECREATE, b.redis_url, prefix, str(scans)],
        cwd=root,
        env=b.env(prefix, root=root),
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT_S,
    )
    made = json.loads(done.stdout.strip().splitlines()[-1])
    return made["ids"], [(made["jobs"], None)]


def run_worker(
    b: Bench,
    scans: int,
    concurrency: int,
    variant: Sequence[str] = (),
    label: str = "",
    *,
    root: Path = REPO,
    profile: Path | None = None,
) -> dict[str, Any]:
    """`scans` scans' jobs through one worker; `root`: the checkout whose worker runs
    (one from before issue 9 gets its jobs queued by its own code, on its one stream)."""
    b.flush()
    prefix = f"bench3c{concurrency}"
    legacy = legacy_tree(root)
    if legacy:
        ids, queues = _precreate_legacy(b, root, prefix, scans)
    else:
        ids, queues = asyncio.run(_precreate(b.redis_url, prefix, scans))
    jobs = scans * len(NAMES)
    worker = b.worker(
        prefix,
        concurrency,
        variant=variant,
        name=f"worker-c{concurrency}",
        root=root,
        SCANSTREAM_JOB_PARTITIONS=str(PARTITIONS),
    )
    out = drain(
        b,
        worker,
        queues,
        JOB_GROUP,
        jobs,
        label or f"worker --concurrency {concurrency}",
        profile=profile,
    )
    with b.redis() as r:
        check = verify(r, prefix, ids, lanes=not legacy)
    span_s = (check["last_terminal_ms"] - check["first_started_ms"]) / 1000
    out.update(
        concurrency=concurrency,
        variant=list(variant),
        verify=check,
        jobs_per_s_from_events=round(jobs / span_s) if span_s > 0 else None,
    )
    return out


def run_protocol(b: Bench, scans: int) -> dict[str, Any]:
    """The same scans through scanstream's queue and fenced writes, without the worker
    around them: lanes dispatched and every partition read in one round trip, the batch's
    jobs started and finished concurrently, one lanes ack per partition per batch."""
    b.flush()
    prefix = "bench3proto"
    ids, queues = asyncio.run(_precreate(b.redis_url, prefix, scans))
    jobs = scans * len(NAMES)
    streams = [stream for stream, _ring in queues]
    consumer = b.bare_consumer("protocol", streams, JOB_GROUP, prefix=prefix, partitions=PARTITIONS)
    out = drain(b, consumer, queues, JOB_GROUP, jobs, "protocol floor")
    with b.redis() as r:
        out["verify"] = verify(r, prefix, ids)
    return out


def run_bare(b: Bench, jobs: int) -> dict[str, Any]:
    """`jobs` bare jobs spread evenly over PARTITIONS streams (no lanes: the floor of
    Redis Streams alone), drained by one consumer."""
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
    consumer = b.bare_consumer("drain", streams, BARE_GROUP)
    return drain(b, consumer, [(s, None) for s in streams], BARE_GROUP, jobs, "bare consumer")


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
        f"no-op strategies = {jobs} jobs, over {PARTITIONS} job partitions; "
        f"{users_line()}"
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
        "  protocol floor: the same jobs through the lanes (dispatch + XREADGROUP of every"
        " partition in one round trip), EventStore.start_strategy + finish_strategy, a"
        " batch's jobs concurrently, one lanes ack per batch, no worker machinery ..."
    )
    try:
        out["protocol"] = run_protocol(b, scans)
        say(f"    {_line(out['protocol'])}")
    except Exception as exc:  # a second baseline must never sink the benchmark
        say(f"    failed: {exc!r}")
    say(
        f"  bare consumer (XREADGROUP COUNT 100 over {PARTITIONS} streams + XACK, no events,"
        " no lanes),"
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
