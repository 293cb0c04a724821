"""`python -m bench --cluster`: scanstream on one redis-server versus on a local Redis
Cluster (3 masters + 3 replicas, AOF appendfsync everysec on every node, as the single
one), side by side in one run, with the same worker, API and settings:

1. no-op jobs/s through ONE worker (`--concurrency 64`, shipped thread isolation), timed
   as bench.worker_throughput times it (its `_precreate`, `drain` and `verify`);
2. status reads/s of a finished scan under 50 connections, as bench.status_reads measures
   them (its `make_finished_scan` and `measure`: a real API process and its load
   generator), both APIs up at once and measured in interleaved rounds;
3. commands per master (INFO commandstats, `calls` summed over every command, after
   CONFIG RESETSTAT on every master) during 1. on the cluster, and during a phase of many
   scans (200 x 14 no-ops POSTed through the API by 20 users, then drained by the
   worker). No hot shard: the busiest master serves at most 1.25 x the mean;
4. what the durability option costs: the no-op jobs of 1. on the cluster again with the
   worker's SCANSTREAM_DURABLE_REPLICAS=1 (each strategy end and terminal event waits for
   one replica: WAIT on the scan's node), beside 1.'s cluster figure.

The bench's own observation commands (INFO, XINFO, CONFIG, and the CLUSTER / COMMAND
discovery of its clients) are left out of every count. Redis CPU is not compared: the
harness's CpuMeter follows one redis-server process, and the cluster has six.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from bench import status_reads
from bench.harness import REPO, Bench, Row, bearer, http_request, running, say, verdict
from bench.noop_strategies import NAMES
from bench.worker_throughput import PARTITIONS, _precreate, drain, verify
from scanstream.storage.keys import JOB_GROUP, Keys

# The test suite's local cluster (bench runs from the repo root, so `tests` imports).
from tests.support.cluster import LocalCluster

NAME = "cluster"
CONCURRENCY = 64  # bench.worker_throughput's quick level (its full run tries 32/64/128)
HOT_SHARD = 1.25  # the target: busiest master <= 1.25 x the mean
SCANS_PHASE_USERS = 20
POST_THREADS = 8
# The bench's own commands, not scanstream's: left out of the per-master counts.
OWN_COMMANDS = ("info", "xinfo", "config", "cluster", "command", "client")


class _ClusterReader(redis.RedisCluster):
    """The bench's own synchronous cluster client. INFO answers for the whole cluster
    (the masters' counters summed), so bench.harness.RedisCounters measure all of it."""

    def info(self, section: str | None = None, *args: str, **kwargs: Any) -> dict[str, Any]:
        if "target_nodes" in kwargs:
            return cast(dict[str, Any], super().info(section, *args, **kwargs))
        per_node = super().info(section, *args, target_nodes=self.PRIMARIES)
        return _summed(cast(dict[str, dict[str, Any]], per_node).values())


def _summed(infos: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The INFO fields RedisCounters reads, summed over nodes."""
    out: dict[str, Any] = {"total_reads_processed": 0, "used_cpu_sys": 0.0, "used_cpu_user": 0.0}
    for info in infos:
        for key, value in info.items():
            if key.startswith("cmdstat_"):
                out.setdefault(key, {"calls": 0})["calls"] += int(value["calls"])
        out["total_reads_processed"] += int(info.get("total_reads_processed", 0))
        out["used_cpu_sys"] += float(info.get("used_cpu_sys", 0.0))
        out["used_cpu_user"] += float(info.get("used_cpu_user", 0.0))
    return out


@dataclass
class ClusterBench(Bench):
    """The same Bench (temp dir, logs, load generator), on a LocalCluster: every process
    it starts gets SCANSTREAM_REDIS_CLUSTER=1 and the seed node's URL. `redis_proc` is the
    first master (CpuMeter's "redis" share is that one node's: not reported)."""

    cluster: LocalCluster = field(kw_only=True)

    @classmethod
    def beside(cls, b: Bench) -> ClusterBench:
        cluster = LocalCluster(b.tmp / "cluster", appendfsync="everysec").start()
        return cls(
            quick=b.quick,
            loadgen=b.loadgen,
            tmp=b.tmp,
            redis_proc=cluster.masters()[0],
            cluster=cluster,
        )

    def close(self, keep_logs: bool = False) -> None:  # the temp dir is the main bench's
        self.cluster.stop()

    @property
    def redis_url(self) -> str:
        return self.cluster.seed_url

    def redis(self) -> redis.Redis:
        return cast(redis.Redis, _ClusterReader.from_url(self.redis_url, socket_timeout=None))

    def env(self, prefix: str, *, root: Path = REPO, **extra: str) -> dict[str, str]:
        return super().env(prefix, root=root, **{"SCANSTREAM_REDIS_CLUSTER": "1", **extra})

    # -- commands per master --

    def reset_stats(self) -> None:
        for node in self.cluster.masters():
            node.admin.config_resetstat()

    def commands_per_master(self, rings: Iterable[str] = (), polls: int = 0) -> dict[str, int]:
        """Commands each master ran, less the bench's own: those OWN_COMMANDS names, and
        `polls` LLENs of each ring in `rings` (bench.worker_throughput.drain's polls)."""
        own: Counter[str] = Counter()
        for ring in rings:
            own[self.cluster.master_for_key(ring).address] += polls
        out = {}
        for node in self.cluster.masters():
            stats = node.admin.info("commandstats")
            out[node.address] = (
                sum(
                    int(v["calls"])
                    for k, v in stats.items()
                    if k.removeprefix("cmdstat_").split("|")[0] not in OWN_COMMANDS
                )
                - own[node.address]
            )
        return out


def spread(counts: dict[str, int]) -> dict[str, Any]:
    mean = sum(counts.values()) / max(1, len(counts))
    busiest = max(counts.values(), default=0)
    ratio = busiest / mean if mean else 0.0
    return {
        "per_master": counts,
        "mean": round(mean),
        "busiest": busiest,
        "busiest_over_mean": round(ratio, 3),
        "no_hot_shard": bool(mean) and ratio <= HOT_SHARD,
    }


# -- 1. no-op jobs ---------------------------------------------------------------------


def run_jobs(b: Bench, scans: int, label: str, *, durable: int = 0) -> dict[str, Any]:
    """bench.worker_throughput's run_worker, with CONFIG RESETSTAT on a cluster's masters
    once the jobs are queued, and the commands per master read when they are drained.
    `durable`: the worker's SCANSTREAM_DURABLE_REPLICAS (every strategy end and terminal
    event waits for that many replicas: WAIT on the scan's node)."""
    cb = b if isinstance(b, ClusterBench) else None
    b.flush()
    prefix = "benchcl"
    ids, queues = asyncio.run(_precreate(b.redis_url, prefix, scans, cluster=cb is not None))
    jobs = scans * len(NAMES)
    worker = b.worker(
        prefix,
        CONCURRENCY,
        name=f"worker-{label}",
        SCANSTREAM_JOB_PARTITIONS=str(PARTITIONS),
        SCANSTREAM_DURABLE_REPLICAS=str(durable),
    )
    if cb is not None:
        cb.reset_stats()
    out = drain(b, worker, queues, JOB_GROUP, jobs, f"{label}: worker --concurrency {CONCURRENCY}")
    if cb is not None:
        rings = [ring for _stream, ring in queues if ring is not None]
        out["commands"] = spread(cb.commands_per_master(rings, out["polls"]))
    with b.redis() as r:
        out["verify"] = verify(r, prefix, ids)
    return out


# -- 2. status reads -------------------------------------------------------------------


def status_phase(
    benches: dict[str, Bench], rounds: int, duration: float, warm: float
) -> dict[str, dict[str, Any]]:
    """One API per backend (up at once), a finished scan on each, then interleaved rounds
    of bench.status_reads.measure; the best round of each."""
    headers = {"Authorization": f"Bearer {bearer()}"}
    apis = {name: b.api(status_reads.PREFIX, name=f"api-{name}") for name, b in benches.items()}
    out: dict[str, dict[str, Any]] = {}
    with running(*apis.values()):
        urls = {}
        for name, b in benches.items():
            say(f"  {name}: a finished scan for the status reads ...")
            scan = status_reads.make_finished_scan(b, apis[name], headers)
            urls[name] = f"{apis[name].url}/v1/scans/{scan['scan_id']}"
            status, body = http_request("GET", urls[name], headers=headers)
            if status != 200:
                raise RuntimeError(f"{name}: status read answered {status}: {body[:300]!r}")
            out[name] = {"scan": scan, "runs": []}
        for name, b in benches.items():
            status_reads.load_status(b, urls[name], headers, warm)
        for n in range(rounds):
            for name, b in benches.items():
                say(
                    f"  round {n + 1}/{rounds}: status reads, {name} ({b.loadgen}, "
                    f"{status_reads.CONNECTIONS} connections, {duration:g}s) ..."
                )
                m = status_reads.measure(b, apis[name], urls[name], headers, duration)
                out[name]["runs"].append(m)
                say(f"    {_reads_line(m)}")
    for o in out.values():
        o["best"] = status_reads.best(o["runs"])
    return out


# -- 3. many scans through the API -----------------------------------------------------


def run_scans(cb: ClusterBench, scans: int) -> dict[str, Any]:
    """CONFIG RESETSTAT, `scans` scans of the 14 no-ops POSTed through a fresh API by
    SCANS_PHASE_USERS users, then one worker drains their jobs; commands per master."""
    cb.flush()
    prefix = "benchclscans"
    keys = Keys(prefix, PARTITIONS)
    api = cb.api(prefix, name="api-scans")
    body = json.dumps({"strategies": NAMES, "params": {}}).encode()
    tokens = [bearer(user=f"bench-user-{i:02d}") for i in range(SCANS_PHASE_USERS)]

    def post(i: int) -> str:
        status, answer = http_request(
            "POST",
            f"{api.url}/v1/scans",
            body,
            {
                "Authorization": f"Bearer {tokens[i % len(tokens)]}",
                "Content-Type": "application/json",
            },
        )
        if status != 202:
            raise RuntimeError(f"POST /v1/scans answered {status}: {answer[:300]!r}")
        return str(json.loads(answer)["scan_id"])

    with running(api):
        cb.reset_stats()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(POST_THREADS) as pool:
            ids = list(pool.map(post, range(scans)))
        post_s = time.perf_counter() - t0
        worker = cb.worker(
            prefix, CONCURRENCY, name="worker-scans", SCANSTREAM_JOB_PARTITIONS=str(PARTITIONS)
        )
        queues = [(p.jobs, p.ring) for p in keys.partitions]
        out = drain(cb, worker, queues, JOB_GROUP, scans * len(NAMES), "scans phase")
        out["commands"] = spread(
            cb.commands_per_master([p.ring for p in keys.partitions], out["polls"])
        )
    with cb.redis() as r:
        out["verify"] = verify(r, prefix, ids)
    out.update(scans=scans, users=SCANS_PHASE_USERS, post_s=round(post_s, 2))
    return out


# -- the section -----------------------------------------------------------------------


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    scans = 300 if b.quick else 500
    rounds = 1 if b.quick else 2
    duration, warm = (3.0, 1.0) if b.quick else (5.0, 1.0)
    many = 200
    t0 = time.monotonic()
    cb = ClusterBench.beside(b)
    try:
        masters = cb.cluster.masters()
        say(
            f"  local cluster: {len(masters)} masters + {len(cb.cluster.replicas())} replicas "
            f"(AOF everysec, as the single redis-server), up in {time.monotonic() - t0:.1f}s; "
            f"masters {', '.join(m.address for m in masters)}"
        )
        benches: dict[str, Bench] = {"single": b, "cluster": cb}
        out: dict[str, Any] = {
            "masters": [m.address for m in masters],
            "concurrency": CONCURRENCY,
            "partitions": PARTITIONS,
            "scans": scans,
            "jobs": scans * len(NAMES),
            "rounds": rounds,
            "jobs_runs": {name: [] for name in benches},
        }
        say(
            f"  1. no-op jobs: {scans} scans x {len(NAMES)} = {scans * len(NAMES)} jobs over "
            f"{PARTITIONS} job partitions, one worker --concurrency {CONCURRENCY}"
        )
        for n in range(rounds):  # interleaved, so drifting load hits both alike
            for name, bench in benches.items():
                say(f"  round {n + 1}/{rounds}: no-op jobs, {name} ...")
                m = run_jobs(bench, scans, name)
                out["jobs_runs"][name].append(m)
                say(f"    {_jobs_line(m)}")
        out["jobs"] = {
            name: max(runs, key=lambda m: m["jobs_per_s"])
            for name, runs in out["jobs_runs"].items()
        }
        say("  2. status reads (bench.status_reads' method), single and cluster APIs up at once")
        reads = status_phase(benches, rounds, duration, warm)
        out["status_reads"] = reads
        say(
            f"  3. many scans: {many} scans x {len(NAMES)} no-op strategies POSTed through "
            f"the API by {SCANS_PHASE_USERS} users, then drained by the worker (cluster) ..."
        )
        out["scans_phase"] = run_scans(cb, many)
        m = out["scans_phase"]
        say(
            f"    {m['scans']} scans POSTed in {m['post_s']}s, {m['jobs']} jobs drained in "
            f"{m['seconds']}s; {m['redis_commands_per_job']} commands per job; checked "
            f"{m['verify']['scans_checked']} scans: "
            f"{m['verify']['problems'] or 'all completed, one terminal event each'}"
        )
        say(
            "  4. durability: the no-op jobs on the cluster again with "
            "SCANSTREAM_DURABLE_REPLICAS=1 (WAIT 1 after each strategy end and terminal event) ..."
        )
        out["durable"] = run_jobs(cb, scans, "cluster-durable", durable=1)
        say(f"    {_jobs_line(out['durable'])}")
        say()
        _print_summary(out)
    finally:
        cb.close()
    return out, rows(out)


# -- printing --------------------------------------------------------------------------


def _jobs_line(m: dict[str, Any]) -> str:
    check = m["verify"]
    checked = check["problems"] or "all completed, one terminal event each"
    return (
        f"{m['jobs_per_s']} jobs/s ({m['jobs']} in {m['seconds']}s, "
        f"{m['jobs_per_cpu_s']} per worker CPU-second); {m['redis_commands_per_job']} "
        f"Redis commands per job; worker CPU {m['consumer_cpu']:.2f} cores; checked "
        f"{check['scans_checked']} scans: {checked}"
    )


def _reads_line(m: dict[str, Any]) -> str:
    return (
        f"{m['rps']:.0f} req/s, p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms, "
        f"non-2xx {m['non_2xx']}; Redis {m['redis_round_trips_per_request']} round trips, "
        f"{m['redis_commands_per_request']} commands per request; API CPU "
        f"{m['server_cpu']:.2f} cores ({m['requests_per_cpu_s']} per CPU-second), load "
        f"generator {m['harness_cpu']:.2f}"
    )


def _spread_line(label: str, s: dict[str, Any]) -> str:
    each = ", ".join(f"{addr} {n}" for addr, n in s["per_master"].items())
    mark = "ok" if s["no_hot_shard"] else "MISS: hot shard"
    return (
        f"  commands per master, {label}: {each}; mean {s['mean']}, busiest/mean "
        f"{s['busiest_over_mean']:.2f} (<= {HOT_SHARD}: {mark})"
    )


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def _print_summary(out: dict[str, Any]) -> None:
    js, jc = out["jobs"]["single"], out["jobs"]["cluster"]
    rs, rc = out["status_reads"]["single"]["best"], out["status_reads"]["cluster"]["best"]
    say(f"  {'best of ' + str(out['rounds']):<22}{'single':>10} {'cluster':>10}    cluster/single")
    for label, a, c in (
        ("no-op jobs/s          ", js["jobs_per_s"], jc["jobs_per_s"]),
        ("jobs per worker CPU-s ", js["jobs_per_cpu_s"], jc["jobs_per_cpu_s"]),
        ("status reads/s        ", rs["rps"], rc["rps"]),
        ("reads per API CPU-s   ", rs["requests_per_cpu_s"], rc["requests_per_cpu_s"]),
    ):
        say(f"  {label}{_fmt(a):>10} {_fmt(c):>10}    {_ratio(c, a)}")
    say(
        f"  ratio cluster/single: no-op jobs/s {_ratio(jc['jobs_per_s'], js['jobs_per_s'])}, "
        f"status reads/s {_ratio(rc['rps'], rs['rps'])}"
    )
    say(_spread_line(f"no-op jobs ({jc['jobs']} jobs)", jc["commands"]))
    m = out["scans_phase"]
    say(_spread_line(f"{m['scans']} scans x {len(NAMES)} strategies via the API", m["commands"]))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def rows(out: dict[str, Any]) -> list[Row]:
    js, jc = out["jobs"]["single"], out["jobs"]["cluster"]
    rs, rc = out["status_reads"]["single"]["best"], out["status_reads"]["cluster"]["best"]
    ok_jobs = not js["verify"]["problems"] and not jc["verify"]["problems"]
    result = [
        Row(
            NAME,
            f"no-op jobs/s, 1 worker --concurrency {CONCURRENCY}: cluster vs single",
            f"{jc['jobs_per_s']}",
            f"{js['jobs_per_s']}",
            _ratio(jc["jobs_per_s"], js["jobs_per_s"]),
            verdict="ok" if ok_jobs else "MISS (scans did not complete)",
        ),
        Row(
            NAME,
            "jobs per worker CPU-second: cluster vs single",
            _fmt(jc["jobs_per_cpu_s"]),
            _fmt(js["jobs_per_cpu_s"]),
            _ratio(jc["jobs_per_cpu_s"], js["jobs_per_cpu_s"]),
        ),
        Row(
            NAME,
            "status reads/s: cluster vs single",
            f"{rc['rps']:.0f}",
            f"{rs['rps']:.0f}",
            _ratio(rc["rps"], rs["rps"]),
            verdict="" if rc["non_2xx"] == 0 else f"MISS ({rc['non_2xx']} non-2xx)",
        ),
        Row(
            NAME,
            "status reads per API CPU-second: cluster vs single",
            _fmt(rc["requests_per_cpu_s"]),
            _fmt(rs["requests_per_cpu_s"]),
            _ratio(rc["requests_per_cpu_s"], rs["requests_per_cpu_s"]),
        ),
    ]
    durable = out["durable"]
    result.append(
        Row(
            NAME,
            "no-op jobs/s on the cluster: SCANSTREAM_DURABLE_REPLICAS=1 vs 0",
            f"{durable['jobs_per_s']}",
            f"{jc['jobs_per_s']}",
            _ratio(durable["jobs_per_s"], jc["jobs_per_s"]),
            verdict="" if not durable["verify"]["problems"] else "MISS (scans did not complete)",
        )
    )
    m = out["scans_phase"]
    for label, s in (
        ("no-op jobs", jc["commands"]),
        (f"{m['scans']} scans via the API", m["commands"]),
    ):
        result.append(
            Row(
                NAME,
                f"commands per master, {label}: busiest vs mean",
                f"{s['busiest']}",
                f"{s['mean']}",
                f"{s['busiest_over_mean']:.2f}",
                f"<= {HOT_SHARD}",
                verdict(s["no_hot_shard"]),
            )
        )
    return result
