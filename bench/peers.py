"""Benchmark (issue 11): scanstream beside two peers, arq and Celery, on the bench's
private Redis: no-op jobs/s through ONE worker process, enqueue rate from one process,
status lookups/s from one process.

Each peer runs from a virtual environment of its own outside the repo (PEERS_HOME,
`~/.cache/scanstream-bench/peers/{arq,celery}-venv`, made with `python -m venv` + pip on
first use and reused while its packages import; arq pins an older redis-py, hence two),
with plain scripts kept in bench/peers_side/ (they never import scanstream). arq uses
Redis database 1, Celery databases 2 (broker) and 3 (result backend), scanstream
database 0 under its own prefixes; each measurement starts on a flushed Redis.

Settings (every one is in the figures, `settings`):

- arq: `Worker(max_jobs=128, poll_delay=0.01, burst=True, keep_result=3600)`. The
  defaults (`max_jobs=10`, `poll_delay=0.5`: a 0.5 s sleep after each read of the queue)
  run about ten times slower on no-ops; arq's docs leave throughput to these two
  parameters. 128 jobs at a time is scanstream's `--concurrency 128`; burst mode is arq's
  own "stop once the queue is empty"; results are kept (the default hour) so status
  lookups find them. Client: `ArqRedis.enqueue_job`, 100 calls in flight
  (asyncio.gather per batch); `Job(id, redis).status()` and `.info()`.
- Celery: `celery worker --pool solo --concurrency 1` (the worker process runs the tasks
  itself: one process; prefork with one child is two, and is measured too in full runs),
  `worker_prefetch_multiplier=128` (the Optimizing guide: a large multiplier, "64 or 128",
  for many short tasks), `task_acks_late` off (the default), `worker_disable_rate_limits`,
  `--without-gossip --without-mingle --without-heartbeat` (a lone worker: no chatter),
  Redis as broker and as result backend (results kept an hour: what status lookups read),
  JSON serializer. `-O fair` is passed to prefork (it only schedules prefork children).
  Client: `noop.delay()` in a loop from one thread (each call also subscribes to the
  task's result channel: the Redis backend's default); `AsyncResult(id).state`.
- Both peers' workers log warnings only (their INFO logs two lines per job); scanstream's
  worker runs as shipped (`scanstream worker --concurrency 128`, log level INFO, which
  logs nothing per successful job). Both venvs have hiredis (arq's redis[hiredis]
  brings it; Celery's gets it added), as scanstream's redis[hiredis] does.

Measured, for each of the three:

- no-op jobs/s: N jobs queued first (N = SCANS x 14: ~20,000, ~3,000 with --quick), then
  one worker process starts; timed from the first job taken until every job is done,
  polling Redis every 5 ms (scanstream: bench.worker_throughput.run_worker, 14 jobs per
  scan, 20 users; arq: the queue's ZCARD reaching 0, started when a key appears or the
  queue shrinks; Celery: every result stored in the backend database (DBSIZE), started
  when the broker list shrinks). Jobs per worker CPU-second beside it (robust to other
  load on the machine). Every job checked done afterwards.
- enqueue jobs/s from one Python process: the peer's client API on N jobs (the same run
  that queues the jobs above); scanstream: `ScanService.create_scan` (what
  `POST /v1/scans` runs: append scan.requested, then list the scan and queue its 14 jobs
  in one pipeline; user quotas off), 100 scans in flight, on plain asyncio. Each
  enqueuer connects first, untimed (arq and scanstream open a batch's connections, and
  scanstream's warm-up scan loads its scripts; Celery sends one task and purges it).
- status lookups/s of one finished job: the peer's client call in a loop from one process,
  50 in flight (asyncio for arq, threads for Celery) and sequentially; the better of the
  two is the baseline. scanstream: `GET /v1/scans/{id}` of a finished 14-no-op scan over
  HTTP through its API process (what users do), the bench's load generator with 50
  connections; and in process, the API's own read (ProjectionCache.get + render: one
  Redis round trip) with 50 in flight and sequentially. The HTTP figure crosses a socket
  and an HTTP server the peers' in-process lookups do not: the in-process row is the
  like-for-like one.

scanstream does more per job than either peer: two fenced events per job
(strategy.started and strategy.completed, appended to the scan's stream through a Lua
script that checks the attempt's fence) and, per scan of 14, the terminal decision and
its scan.completed event; a peer writes one result per job.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from bench import status_reads
from bench.harness import (
    FOREIGN_WARN,
    Bench,
    CpuMeter,
    Proc,
    RedisCounters,
    Row,
    bearer,
    http_request,
    noisy,
    running,
    say,
    verdict,
)
from bench.noop_strategies import NAMES
from bench.worker_throughput import bench_users, run_protocol, run_worker
from scanstream.storage.keys import Keys

NAME = "peers"
PEERS_HOME = Path(
    os.environ.get("BENCH_PEERS_HOME", Path.home() / ".cache" / "scanstream-bench" / "peers")
)
SIDE = Path(__file__).resolve().parent / "peers_side"
TIMEOUT_S = 180.0
START_POLL_S = 0.002
POLL_S = 0.005
ARQ_DB, CELERY_BROKER_DB, CELERY_BACKEND_DB = 1, 2, 3
ARQ_QUEUE, CELERY_QUEUE = "arq:queue", "celery"
CONCURRENCY = 128  # scanstream's --concurrency, arq's max_jobs
INLINE = "scanstream inline"  # the like-for-like run: jobs on the worker's own loop
ENQUEUE_IN_FLIGHT = 100  # client calls in flight while enqueueing (arq, scanstream)
STATUS_IN_FLIGHT = 50  # status lookups in flight (and 1: sequential)
STATUS_PREFIX = "benchpeers"
WARM_USER = "bench-warmup"
ARQ_SETTINGS: dict[str, Any] = {
    "max_jobs": CONCURRENCY,
    "poll_delay": 0.01,
    "burst": True,
    "keep_result": 3600,
    "queue_read_limit": "default (max_jobs x 5)",
    "log level": "WARNING",
    "enqueue": f"enqueue_job, {ENQUEUE_IN_FLIGHT} in flight (asyncio.gather per batch)",
}
CELERY_PREFETCH = 128
CELERY_SETTINGS: dict[str, Any] = {
    "pool": "solo (one process; prefork -c 1 as well in full runs, with -O fair)",
    "concurrency": 1,
    "worker_prefetch_multiplier": CELERY_PREFETCH,
    "task_acks_late": False,
    "worker_disable_rate_limits": True,
    "flags": "--without-gossip --without-mingle --without-heartbeat",
    "broker": f"redis db {CELERY_BROKER_DB}",
    "result_backend": f"redis db {CELERY_BACKEND_DB} (results kept 3600 s)",
    "serializer": "json",
    "log level": "WARNING",
    "enqueue": "noop.delay() in a loop, one thread",
}
# venv name -> (pip requirements, distributions whose versions are recorded)
VENVS: dict[str, tuple[list[str], list[str]]] = {
    "arq": (["arq"], ["arq", "redis", "hiredis"]),
    "celery": (["celery[redis]", "hiredis"], ["celery", "kombu", "redis", "hiredis"]),
}


# -- the peers' virtual environments ---------------------------------------------------

_VERSIONS = """
import importlib, importlib.metadata as m, json, sys
importlib.import_module(sys.argv[1])
import redis.utils
out = {d: m.version(d) for d in sys.argv[2:]}
out["hiredis active"] = bool(redis.utils.HIREDIS_AVAILABLE)
print(json.dumps(out))
"""


def _versions(python: Path, module: str, dists: Sequence[str]) -> dict[str, Any] | None:
    """The venv's versions of `dists`, or None when it is missing or `module` fails."""
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", _VERSIONS, module, *dists],
        capture_output=True,
        text=True,
        timeout=60,
        env=peer_env(),
        check=False,
    )
    if done.returncode != 0:
        return None
    versions: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return versions


def ensure_venv(name: str) -> tuple[Path, dict[str, Any]]:
    """The peer's venv python (made first if missing or broken) and its versions."""
    requirements, dists = VENVS[name]
    venv = PEERS_HOME / f"{name}-venv"
    python = venv / "bin" / "python"
    versions = _versions(python, name, dists)
    if versions is None:
        say(f"  making {venv}: pip install {' '.join(requirements)} ...")
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        done = subprocess.run(
            [*pip, *requirements], capture_output=True, text=True, timeout=900, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"pip install {requirements} failed:\n{done.stderr[-2000:]}")
        versions = _versions(python, name, dists)
        if versions is None:
            raise RuntimeError(f"{venv}: {name} does not import after pip install")
    return python, versions


def peer_env(**extra: str) -> dict[str, str]:
    """A peer's environment: this one without scanstream's variables or PYTHONPATH (a
    peer never sees the repo) or the active venv."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SCANSTREAM_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def db_url(b: Bench, db: int) -> str:
    """The bench's Redis, database `db`."""
    base, _, _db = b.redis_url.rpartition("/")
    return f"{base}/{db}"


def celery_env(b: Bench, prefetch: int = CELERY_PREFETCH) -> dict[str, str]:
    return peer_env(
        BENCH_CELERY_BROKER=db_url(b, CELERY_BROKER_DB),
        BENCH_CELERY_BACKEND=db_url(b, CELERY_BACKEND_DB),
        BENCH_CELERY_PREFETCH=str(prefetch),
    )


def side(python: Path, script: str, args: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a peer-side command to its end (bounded); the JSON its last line prints."""
    done = subprocess.run(
        [str(python), str(SIDE / script), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        cwd=SIDE,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} {args[0]} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def peer_worker(b: Bench, python: Path, script: str, args: list[str], env: dict[str, str]) -> Proc:
    name = f"{script.removesuffix('.py')}-worker"
    return Proc(
        name,
        [str(python), str(SIDE / script), "worker", *args],
        env,
        b.log_dir / f"{name}-{time.monotonic_ns()}.log",
        cwd=SIDE,
    )


# -- timing a peer's worker ------------------------------------------------------------

Poll = Callable[[], tuple[bool, bool]]  # one look at the queue: (a job was taken, all done)


def _exited(proc: Proc) -> bool:
    """Whether the process has ended, without reaping it: a reaped process's CPU time is
    gone from /proc, and a burst worker ends right as its last job does."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def drain_peer(
    b: Bench,
    proc: Proc,
    poll: Poll,
    poll_commands: dict[str, int],
    poll_round_trips: int,
    jobs: int,
    label: str,
) -> dict[str, Any]:
    """Start `proc`, time it from the first job taken until all `jobs` are done, stop it.
    `poll_commands` / `poll_round_trips`: what one `poll` costs Redis (taken out of the
    counts)."""
    assert b.redis_proc.process is not None
    polls = 0
    with b.redis() as r:
        before = RedisCounters.snapshot(r)
        with running(proc):
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                polls += 1
                if poll()[0]:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: no job taken in {TIMEOUT_S}s")
                proc.check_alive()
                time.sleep(START_POLL_S)
            t_first = time.perf_counter()
            with CpuMeter([proc.pid, b.redis_proc.process.pid]) as cpu:
                while True:
                    time.sleep(POLL_S)
                    ended = _exited(proc)
                    polls += 1
                    if poll()[1]:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{label}: not done after {TIMEOUT_S}s")
                    if ended:
                        raise RuntimeError(f"{label} exited early:\n{proc.log_tail()}")
            t_end = time.perf_counter()
        delta = RedisCounters.snapshot(r).since(before, ignore=("info", "client"))
    for command, n in poll_commands.items():
        delta.commands[command] = delta.commands.get(command, 0) - polls * n
    delta.commands = {k: v for k, v in delta.commands.items() if v}
    seconds = t_end - t_first
    share = cpu.shares[0]
    return {
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds),
        "jobs_per_cpu_s": round(jobs / seconds / share) if share > 0.05 else None,
        "redis_round_trips_per_job": round((delta.reads - polls * poll_round_trips - 1) / jobs, 2),
        "redis_commands_per_job": round(delta.total_commands / jobs, 2),
        "redis_commands": delta.commands,
        **cpu.as_dict(["consumer", "redis"]),
    }


# -- arq -------------------------------------------------------------------------------


def arq_jobs(b: Bench, python: Path, jobs: int) -> dict[str, Any]:
    """Enqueue `jobs` no-ops (timed: the enqueue rate), then one burst worker drains them."""
    b.flush()
    url = db_url(b, ARQ_DB)
    enqueued = side(
        python,
        "arq_side.py",
        ["enqueue", "--redis-url", url, "--jobs", str(jobs), "--batch", str(ENQUEUE_IN_FLIGHT)],
        peer_env(),
    )
    with redis.Redis.from_url(url, socket_timeout=10) as r:
        initial = int(r.dbsize())
        if initial != jobs + 1 or r.zcard(ARQ_QUEUE) != jobs:
            raise RuntimeError(f"arq: {initial} keys after enqueueing {jobs} jobs")

        def poll() -> tuple[bool, bool]:
            pipe = r.pipeline(transaction=False)
            pipe.dbsize()
            pipe.zcard(ARQ_QUEUE)
            size, queued = pipe.execute()
            return size != initial or queued < jobs, queued == 0

        worker = peer_worker(
            b,
            python,
            "arq_side.py",
            [
                "--redis-url",
                url,
                "--max-jobs",
                str(ARQ_SETTINGS["max_jobs"]),
                "--poll-delay",
                str(ARQ_SETTINGS["poll_delay"]),
            ],
            peer_env(),
        )
        out = drain_peer(b, worker, poll, {"dbsize": 1, "zcard": 1}, 1, jobs, "arq worker")
        results = sum(1 for _ in r.scan_iter("arq:result:*", count=1000))
    out.update(
        enqueue=enqueued,
        verify={"results": results, "problems": {} if results == jobs else {"results": results}},
    )
    return out


def arq_status(b: Bench, python: Path, job_id: str, seconds: float) -> dict[str, Any]:
    """`Job(id).status()` and `.info()` of a finished job, 50 in flight and sequentially."""
    url = db_url(b, ARQ_DB)
    out: dict[str, Any] = {}
    for call in ("status", "info"):
        for n in (STATUS_IN_FLIGHT, 1):
            args = ["status", "--redis-url", url, "--job-id", job_id, "--seconds", f"{seconds:g}"]
            args += ["--concurrency", str(n), *(["--info"] if call == "info" else [])]
            out[f"{call}() x{n}"] = _lookups(b, python, "arq_side.py", args, peer_env())
    return out


# -- Celery ----------------------------------------------------------------------------


def celery_jobs(b: Bench, python: Path, jobs: int, pool: str = "solo") -> dict[str, Any]:
    """Enqueue `jobs` no-op tasks (timed), then one worker (`pool`, one process with
    solo) runs them."""
    b.flush()
    env = celery_env(b)
    enqueued = side(python, "celery_side.py", ["enqueue", "--jobs", str(jobs)], env)
    broker = redis.Redis.from_url(db_url(b, CELERY_BROKER_DB), socket_timeout=10)
    backend = redis.Redis.from_url(db_url(b, CELERY_BACKEND_DB), socket_timeout=10)
    with broker, backend:
        if broker.llen(CELERY_QUEUE) != jobs:
            raise RuntimeError(f"celery: {broker.llen(CELERY_QUEUE)} messages, not {jobs}")

        def poll() -> tuple[bool, bool]:
            queued, stored = broker.llen(CELERY_QUEUE), backend.dbsize()
            return queued < jobs, queued == 0 and stored >= jobs

        worker = peer_worker(b, python, "celery_side.py", ["--pool", pool], env)
        out = drain_peer(
            b, worker, poll, {"llen": 1, "dbsize": 1}, 2, jobs, f"celery worker --pool {pool}"
        )
        stored = int(backend.dbsize())
        last = backend.get(f"celery-task-meta-{enqueued['last_id']}") or b"{}"
    last_state = json.loads(last).get("status")
    problems = {}
    if stored != jobs:
        problems["results stored"] = stored
    if last_state != "SUCCESS":
        problems["last task"] = last_state
    out.update(pool=pool, enqueue=enqueued, verify={"results": stored, "problems": problems})
    return out


def celery_status(b: Bench, python: Path, task_id: str, seconds: float) -> dict[str, Any]:
    """`AsyncResult(id).state` of a finished task: 50 threads, and one sequential loop."""
    out: dict[str, Any] = {}
    for n in (STATUS_IN_FLIGHT, 1):
        args = ["status", "--task-id", task_id, "--seconds", f"{seconds:g}", "--threads", str(n)]
        label = f"AsyncResult.state x{n} {'threads' if n > 1 else '(sequential)'}"
        out[label] = _lookups(b, python, "celery_side.py", args, celery_env(b))
    return out


def _lookups(
    b: Bench, python: Path, script: str, args: list[str], env: dict[str, str]
) -> dict[str, Any]:
    """A status-lookup loop of a peer, with the CPU of Redis and of everything else."""
    assert b.redis_proc.process is not None
    with CpuMeter([b.redis_proc.process.pid]) as cpu:
        out = side(python, script, args, env)
    bad = out.get("not_complete", out.get("not_success", 0))
    if bad:
        raise RuntimeError(f"{script}: {bad} lookups did not find the job finished: {out}")
    out.update(**cpu.as_dict(["redis"]))  # harness_cpu: the lookup process (reaped)
    return out


# -- scanstream ------------------------------------------------------------------------


async def _enqueue_scans(url: str, prefix: str, scans: int) -> dict[str, Any]:
    """`scans` scans of the 14 no-ops through `ScanService.create_scan` (the API's own
    path, quotas off), ENQUEUE_IN_FLIGHT at a time, users as in worker_throughput."""
    from scanstream.projection_cache import ProjectionCache
    from scanstream.service import ScanService
    from scanstream.settings import Settings
    from scanstream.storage.connection import Storage

    settings = Settings.from_env({"SCANSTREAM_REDIS_URL": url, "SCANSTREAM_PREFIX": prefix})
    storage = Storage.connect(settings, max_connections=256)
    try:
        service = ScanService(
            store=storage.events,
            cache=ProjectionCache(storage.events),
            index=storage.index,
            jobs=storage.jobs,
            strategies=NAMES,
            validate_params=lambda params, names: None,
        )
        await service.prepare()
        users = bench_users()
        # Warm-up, untimed (as the peers' enqueuers connect first): the pool's connections
        # and one scan, which loads the scripts; its 14 jobs are not counted.
        await asyncio.gather(*(storage.redis.ping() for _ in range(ENQUEUE_IN_FLIGHT)))
        await service.create_scan(WARM_USER, NAMES, {})
        t0 = time.perf_counter()
        for i in range(0, scans, ENQUEUE_IN_FLIGHT):
            await asyncio.gather(
                *(
                    service.create_scan(users[n % len(users)], NAMES, {})
                    for n in range(i, min(scans, i + ENQUEUE_IN_FLIGHT))
                )
            )
        seconds = time.perf_counter() - t0
    finally:
        await storage.aclose()
    jobs = scans * len(NAMES)
    return {
        "scans": scans,
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds),
        "scans_per_s": round(scans / seconds),
    }


def scanstream_enqueue(b: Bench, scans: int) -> dict[str, Any]:
    b.flush()
    prefix = "benchpeersq"
    assert b.redis_proc.process is not None
    with CpuMeter([b.redis_proc.process.pid]) as cpu:
        out = asyncio.run(_enqueue_scans(b.redis_url, prefix, scans))
    # Every job queued: in a partition's job stream, or waiting in its user's lane.
    keys = Keys(prefix)
    with b.redis() as r:
        pipe = r.pipeline(transaction=False)
        for p in keys.partitions:
            pipe.xlen(p.jobs)
        for user in [*bench_users(), WARM_USER]:
            pipe.zcard(keys.jobs_of(user).lane_prefix + user)
        queued = sum(pipe.execute()) - len(NAMES)  # less the warm-up scan's
    out.update(
        queued=queued,
        verify={"problems": {} if queued == out["jobs"] else {"queued": queued}},
        **cpu.as_dict(["redis"]),  # harness_cpu: this process, the enqueuer
    )
    return out


async def _status_in_process(
    url: str, prefix: str, scan_id: str, seconds: float, concurrency: int
) -> dict[str, Any]:
    """The API's status read without HTTP (ProjectionCache.get + render: one round trip
    each), `concurrency` loops for `seconds`."""
    from scanstream.projection_cache import ProjectionCache
    from scanstream.storage import connection
    from scanstream.storage.events import EventStore

    r = connection.client(url, max_connections=max(64, concurrency))
    counts = [0] * concurrency
    try:
        cache = ProjectionCache(EventStore(r, Keys(prefix), retention_s=3600))

        async def loop(n: int, until: float) -> None:
            while time.perf_counter() < until:
                view = await cache.get(scan_id)
                if view is None or view.state != "completed":
                    raise RuntimeError(f"status read of {scan_id}: {view}")
                cache.render(view, "status")
                counts[n] += 1

        await loop(0, time.perf_counter() + 0.3)
        counts[0] = 0
        t0 = time.perf_counter()
        until = t0 + seconds
        await asyncio.gather(*(loop(n, until) for n in range(concurrency)))
        took = time.perf_counter() - t0
    finally:
        await r.aclose()
    return {
        "lookups": sum(counts),
        "seconds": round(took, 3),
        "lookups_per_s": round(sum(counts) / took),
    }


def scanstream_status(b: Bench, seconds: float) -> dict[str, Any]:
    """A finished 14-no-op scan (through the API and a worker), its status read over HTTP
    by the load generator (50 connections), then in process."""
    b.flush()
    headers = {"Authorization": f"Bearer {bearer()}"}
    api = b.api(STATUS_PREFIX, name="api-peers")
    out: dict[str, Any] = {}
    with running(api):
        worker = b.worker(STATUS_PREFIX, 16, name="worker-peers")
        with running(worker):
            status, answer = http_request(
                "POST",
                f"{api.url}/v1/scans",
                json.dumps({"strategies": NAMES}).encode(),
                {**headers, "Content-Type": "application/json"},
            )
            if status != 202:
                raise RuntimeError(f"POST /v1/scans answered {status}: {answer[:300]!r}")
            scan_id = json.loads(answer)["scan_id"]
            terminal, entries = status_reads.wait_terminal(
                b, Keys(STATUS_PREFIX).events(scan_id), 60.0, worker.check_alive
            )
        if terminal != "scan.completed":
            raise RuntimeError(f"the status scan ended {terminal}")
        url = f"{api.url}/v1/scans/{scan_id}"
        status, body = http_request("GET", url, headers=headers)
        if status != 200:
            raise RuntimeError(f"status read answered {status}: {body[:300]!r}")
        out.update(scan_id=scan_id, events=len(entries), status_body_bytes=len(body))
        status_reads.load_status(b, url, headers, 1.0)  # warm-up
        out["http"] = status_reads.measure(b, api, url, headers, seconds)
    out["in_process"] = {}
    for n in (STATUS_IN_FLIGHT, 1):
        assert b.redis_proc.process is not None
        with CpuMeter([b.redis_proc.process.pid]) as cpu:
            m = asyncio.run(_status_in_process(b.redis_url, STATUS_PREFIX, scan_id, seconds, n))
        out["in_process"][f"x{n}"] = {**m, **cpu.as_dict(["redis"])}
    return out


# -- the benchmark ---------------------------------------------------------------------


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda m: m["jobs_per_s"])


def best_lookup(measured: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    name = max(measured, key=lambda k: measured[k]["lookups_per_s"])
    return name, measured[name]


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    scans = 214 if b.quick else 1428  # x 14 = 2,996 / 19,992 jobs
    jobs = scans * len(NAMES)
    rounds = 1 if b.quick else 2
    status_s = 3.0 if b.quick else 5.0
    arq_python, arq_versions = ensure_venv("arq")
    celery_python, celery_versions = ensure_venv("celery")
    say(f"  arq venv: {arq_versions}; celery venv: {celery_versions}")
    say(
        f"  {jobs} no-op jobs each ({scans} scans x {len(NAMES)} for scanstream); one worker "
        f"process each: scanstream --concurrency {CONCURRENCY}, arq max_jobs "
        f"{ARQ_SETTINGS['max_jobs']} poll_delay {ARQ_SETTINGS['poll_delay']} burst, celery "
        f"--pool solo prefetch x{CELERY_PREFETCH}"
    )
    out: dict[str, Any] = {
        "jobs": jobs,
        "scans": scans,
        "rounds": rounds,
        "versions": {"arq": arq_versions, "celery": celery_versions},
        "settings": {
            "scanstream": {
                "worker": f"scanstream worker --concurrency {CONCURRENCY} (as shipped: "
                "thread isolation, log level INFO, attempts' starts at debug)",
                INLINE: "the same with --isolation inline",
                "enqueue": f"ScanService.create_scan, {ENQUEUE_IN_FLIGHT} scans in flight",
            },
            "arq": ARQ_SETTINGS,
            "celery": CELERY_SETTINGS,
        },
        "runs": {"scanstream": [], INLINE: [], "arq": [], "celery": []},
    }
    measure_jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "scanstream": lambda: run_worker(b, scans, CONCURRENCY, label="scanstream worker"),
        # like for like: arq runs jobs on its worker's loop, Celery solo in its process
        INLINE: lambda: run_worker(
            b, scans, CONCURRENCY, ["--isolation", "inline"], "scanstream worker, inline"
        ),
        "arq": lambda: arq_jobs(b, arq_python, jobs),
        "celery": lambda: celery_jobs(b, celery_python, jobs),
    }
    # Interleaved rounds; a system runs again only when other load was seen in its last.
    for i in range(rounds):
        for name, measure in measure_jobs.items():
            previous = out["runs"][name]
            if previous and not noisy(previous[-1]):
                continue
            say(f"  round {i + 1}/{rounds}: {name}, {jobs} no-op jobs, one worker ...")
            previous.append(measure())
            say(f"    {_line(previous[-1])}")
    out["jobs_per_s"] = {name: best(runs) for name, runs in out["runs"].items()}
    # per worker CPU-second: the best run by that measure (other load bends it least)
    out["jobs_per_cpu_s"] = {
        name: max((r["jobs_per_cpu_s"] or 0 for r in runs), default=0)
        for name, runs in out["runs"].items()
    }
    say("  protocol floor: the same scans' fenced writes alone (bench.bare_consumer) ...")
    out["protocol_floor"] = run_protocol(b, scans)
    say(f"    {_line(out['protocol_floor'])}")
    if not b.quick:
        say("  celery --pool prefork --concurrency 1 -O fair (two processes) ...")
        try:
            out["celery_prefork"] = celery_jobs(b, celery_python, jobs, pool="prefork")
            say(f"    {_line(out['celery_prefork'])}")
        except Exception as exc:  # an extra figure must never sink the benchmark
            say(f"    failed: {exc!r}")

    say(f"  enqueue: scanstream ScanService.create_scan, {scans} scans ...")
    out["enqueue"] = {
        "scanstream": scanstream_enqueue(b, scans),
        "arq": out["jobs_per_s"]["arq"]["enqueue"],
        "celery": out["jobs_per_s"]["celery"]["enqueue"],
    }
    for name, m in out["enqueue"].items():
        checked = m.get("verify", {}).get("problems") or "all queued"
        say(f"    {name}: {m['jobs_per_s']} jobs/s ({m['jobs']} in {m['seconds']}s); {checked}")

    say(f"  status lookups of a finished job, {status_s:g}s each ...")
    # Each measurement above started on a flushed Redis: a small run of each peer leaves
    # finished jobs to look up.
    arq_run = arq_jobs(b, arq_python, 200)
    out["status"] = {"arq": arq_status(b, arq_python, arq_run["enqueue"]["first_id"], status_s)}
    celery_run = celery_jobs(b, celery_python, 200)
    out["status"]["celery"] = celery_status(
        b, celery_python, celery_run["enqueue"]["first_id"], status_s
    )
    out["status"]["scanstream"] = scanstream_status(b, status_s)
    for name, measured in out["status"].items():
        for kind, m in _lookup_items(name, measured):
            rate = m["lookups_per_s"] if "lookups_per_s" in m else round(m["rps"])
            flag = "  << other load on the machine" if noisy(m) else ""
            say(f"    {name} {kind}: {rate}/s{flag}")
    return out, rows(out)


def _lookup_items(name: str, measured: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if name != "scanstream":
        return list(measured.items())
    return [("HTTP GET /v1/scans/{id}", measured["http"])] + [
        (f"in process {k}", v) for k, v in measured["in_process"].items()
    ]


def _line(m: dict[str, Any]) -> str:
    flag = "  << other load on the machine" if m["foreign_cpu"] > FOREIGN_WARN else ""
    check = m.get("verify", {})
    problems = check.get("problems") or "all done"
    return (
        f"{m['jobs_per_s']} jobs/s ({m['jobs']} in {m['seconds']}s, {m['jobs_per_cpu_s']} per "
        f"worker CPU-second); Redis {m['redis_round_trips_per_job']} round trips, "
        f"{m['redis_commands_per_job']} commands per job; CPU: worker {m['consumer_cpu']:.2f},"
        f" redis {m['redis_cpu']:.2f}, other {m['foreign_cpu']:.2f} cores{flag}; checked: "
        f"{problems}"
    )


def rows(out: dict[str, Any]) -> list[Row]:
    ss = out["jobs_per_s"]["scanstream"]
    result: list[Row] = []
    for peer in ("arq", "celery"):
        p = out["jobs_per_s"][peer]
        ratio = ss["jobs_per_s"] / p["jobs_per_s"]
        ok = ratio >= 5 and not ss["verify"]["problems"] and not p["verify"]["problems"]
        result.append(
            Row(
                NAME,
                f"no-op jobs/s vs {peer}",
                f"{ss['jobs_per_s']}",
                f"{p['jobs_per_s']}",
                f"{ratio:.2f}",
                ">= 5",
                verdict(ok, ss, p),
            )
        )
    result.append(
        Row(
            NAME,
            "  (per job: scanstream 2 fenced events (Lua) + 1/14 terminal; peers 1 result)",
            "",
        )
    )
    inline, floor = out["jobs_per_s"][INLINE], out["protocol_floor"]
    for peer in ("arq", "celery"):
        p = out["jobs_per_s"][peer]
        result += [
            Row(
                NAME,
                f"  like for like, scanstream --isolation inline vs {peer}",
                f"{inline['jobs_per_s']}",
                f"{p['jobs_per_s']}",
                f"{inline['jobs_per_s'] / p['jobs_per_s']:.2f}",
            ),
            Row(
                NAME,
                f"  floor: the 2 fenced writes per job alone vs {peer}",
                f"{floor['jobs_per_s']}",
                f"{p['jobs_per_s']}",
                f"{floor['jobs_per_s'] / p['jobs_per_s']:.2f}",
            ),
        ]
    per_cpu = out["jobs_per_cpu_s"]
    for peer in ("arq", "celery"):
        if per_cpu["scanstream"] and per_cpu[peer]:
            result.append(
                Row(
                    NAME,
                    f"no-op jobs per worker CPU-second vs {peer}",
                    f"{per_cpu['scanstream']}",
                    f"{per_cpu[peer]}",
                    f"{per_cpu['scanstream'] / per_cpu[peer]:.2f}",
                )
            )
    for peer in ("arq", "celery"):
        p = out["jobs_per_s"][peer]
        result += [
            Row(
                NAME,
                f"Redis round trips per job vs {peer}",
                f"{ss['redis_round_trips_per_job']}",
                f"{p['redis_round_trips_per_job']}",
            ),
            # commands run inside scanstream's Lua scripts count too (commandstats)
            Row(
                NAME,
                f"Redis commands per job vs {peer} (scripts' own included)",
                f"{ss['redis_commands_per_job']}",
                f"{p['redis_commands_per_job']}",
            ),
        ]
    prefork = out.get("celery_prefork")
    if prefork:
        result.append(
            Row(
                NAME,
                "no-op jobs/s vs celery prefork -c 1 (2 processes)",
                f"{ss['jobs_per_s']}",
                f"{prefork['jobs_per_s']}",
                f"{ss['jobs_per_s'] / prefork['jobs_per_s']:.2f}",
            )
        )
    enq = out["enqueue"]
    for peer in ("arq", "celery"):
        result.append(
            Row(
                NAME,
                f"enqueue jobs/s (1 process) vs {peer}",
                f"{enq['scanstream']['jobs_per_s']}",
                f"{enq[peer]['jobs_per_s']}",
                f"{enq['scanstream']['jobs_per_s'] / enq[peer]['jobs_per_s']:.2f}",
            )
        )
    for peer in ("arq", "celery"):  # per client call: a scanstream call queues a scan
        result.append(
            Row(
                NAME,
                f"enqueue calls/s vs {peer} (scanstream: 1 scan = 14 jobs per call)",
                f"{enq['scanstream']['scans_per_s']}",
                f"{enq[peer]['jobs_per_s']}",
                f"{enq['scanstream']['scans_per_s'] / enq[peer]['jobs_per_s']:.2f}",
            )
        )
    st = out["status"]["scanstream"]
    http = st["http"]
    local_name, local = best_lookup(st["in_process"])
    for peer in ("arq", "celery"):
        kind, p = best_lookup(out["status"][peer])
        result.append(
            Row(
                NAME,
                f"status lookups/s: HTTP API vs {peer} {kind}",
                f"{http['rps']:.0f}",
                f"{p['lookups_per_s']}",
                f"{http['rps'] / p['lookups_per_s']:.2f}",
                verdict="(noisy)" if noisy(http) or noisy(p) else "",
            )
        )
        result.append(
            Row(
                NAME,
                f"status lookups/s: in process {local_name} vs {peer} {kind}",
                f"{local['lookups_per_s']}",
                f"{p['lookups_per_s']}",
                f"{local['lookups_per_s'] / p['lookups_per_s']:.2f}",
            )
        )
    arq, celery = out["versions"]["arq"], out["versions"]["celery"]
    result += [
        Row(NAME, "arq version", f"{arq['arq']} (redis-py {arq['redis']})"),
        Row(
            NAME,
            "celery version",
            f"{celery['celery']} (kombu {celery['kombu']}, redis-py {celery['redis']})",
        ),
    ]
    return result
