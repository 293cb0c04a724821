"""`python -m bench [--quick] [--only NAME ...] [--cluster]`: run the benchmarks, print a
summary table, write bench/results/latest.json. `--cluster` runs bench.cluster (single
redis-server vs a local Redis Cluster), alone or after the `--only` ones.

One private Redis (redis-server in a temp dir, AOF appendfsync everysec) serves the whole
run; each benchmark starts on an empty data set, starts its own subprocesses and stops
them all, even on failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.harness import RESULTS_DIR, Bench, Row, pick_loadgen, say

# name -> module. Each module has `run(bench) -> (figures: dict, rows: list[Row])`.
BENCHMARKS: dict[str, str] = {
    "status_reads": "bench.status_reads",
    "scan_latency": "bench.scan_latency",
    "worker_throughput": "bench.worker_throughput",
    # Issue 3 (live progress): the SSE fan-out figure.
    "sse_fanout": "bench.sse_fanout",
    # Issue 8 (Redis faults and load): long-polls on the fan-out, the request deadline.
    "long_polls": "bench.long_polls",
    "request_deadline": "bench.request_deadline",
    # Issue 10 (many users): one user's wait while another floods, lanes beside FIFO.
    "fair_share": "bench.fair_share",
    # Issue 11 (peers): no-op jobs/s, enqueue rate, status lookups beside arq and Celery.
    "peers": "bench.peers",
    # Issue 11: the built-in strategies doing real work, on 1 and 2 worker processes.
    "seed_scan": "bench.seed_scan",
    # Issue 11: status reads and rebuilds of 100 to 10,000-event logs; SSE to 5,000.
    "growth": "bench.growth",
}
# `--cluster` only (it starts a local 3+3 Redis Cluster): single redis-server vs cluster.
CLUSTER_BENCHMARK = ("cluster", "bench.cluster")


def _environment(loadgen: str) -> dict[str, Any]:
    import redis
    import redis.utils

    try:
        server = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        server = "unknown"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "hiredis": bool(redis.utils.HIREDIS_AVAILABLE),
        "redis_server": server,
        "loadgen": loadgen,
        "load_average_at_start": _loadavg(),
    }


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _table(rows: list[Row]) -> str:
    head = Row("benchmark", "figure", "scanstream", "baseline", "ratio", "target", "")
    cols = ["bench", "figure", "value", "baseline", "ratio", "target", "verdict"]
    data = [[getattr(r, c) for c in cols] for r in [head, *rows]]
    widths = [max(len(str(row[i])) for row in data) for i in range(len(cols))]
    lines = []
    for n, row in enumerate(data):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and short durations (~1 minute): a smoke check",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    p.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="HTTP load generator (auto: wrk when on PATH, else Python asyncio)",
    )
    p.add_argument(
        "--explore",
        action="store_true",
        help="also measure what-if variants of scanstream's code (bench.variant patches: "
        "a single-XRANGE status read, no metrics middleware, ...)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="single redis-server vs a local Redis Cluster (3 masters + 3 replicas): jobs/s, "
        "status reads/s, commands per master; alone, or after the --only ones",
    )
    p.add_argument(
        "--keep-logs", action="store_true", help="keep the temp dir with every subprocess's log"
    )
    p.add_argument("--output", default=str(RESULTS_DIR / "latest.json"))
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)

    loadgen = pick_loadgen(args.loadgen)
    env = _environment(loadgen)
    say(
        f"scanstream bench{' (quick)' if args.quick else ''}: {env['cpus']} CPUs, Python "
        f"{env['python']}, redis-py {env['redis_py']} (hiredis "
        f"{'active' if env['hiredis'] else 'NOT active'}), {env['redis_server']}"
    )
    say(f"HTTP load generator: {'wrk' if loadgen == 'wrk' else 'Python asyncio (bench.loadgen)'}")
    say(
        f"load average at start: {env['load_average_at_start']} (other work on this machine "
        "skews absolute figures: see the 'other' CPU and the per-CPU-second rows)"
    )

    bench = Bench.start(quick=args.quick, loadgen=loadgen, explore=args.explore)
    say(f"private Redis: {bench.redis_url} (AOF appendfsync everysec), logs in {bench.tmp}")
    results: dict[str, Any] = {
        "environment": env,
        "quick": args.quick,
        "explore": args.explore,
        "benchmarks": {},
    }
    rows: list[Row] = []
    failed = False
    started = time.monotonic()
    try:
        names = args.only or ([] if args.cluster else list(BENCHMARKS))
        modules = dict(BENCHMARKS)
        if args.cluster:
            names = [*names, CLUSTER_BENCHMARK[0]]
            modules[CLUSTER_BENCHMARK[0]] = CLUSTER_BENCHMARK[1]
        for name in names:
            say(f"\n== {name}")
            t0 = time.monotonic()
            try:
                bench.flush()
                module = importlib.import_module(modules[name])
                figures, new_rows = module.run(bench)
                results["benchmarks"][name] = {
                    **figures,
                    "seconds": round(time.monotonic() - t0, 1),
                }
                rows += new_rows
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                failed = True
                traceback.print_exc()
                results["benchmarks"][name] = {"error": repr(exc)}
                rows.append(Row(name, "FAILED", repr(exc)[:80]))
                args.keep_logs = True
            say(f"  ({time.monotonic() - t0:.0f}s)")
    finally:
        bench.close(keep_logs=args.keep_logs)
        if args.keep_logs:
            say(f"\nsubprocess logs kept in {bench.tmp / 'logs'}")

    results["seconds"] = round(time.monotonic() - started, 1)
    results["load_average_at_end"] = _loadavg()
    say(
        f"\n== summary ({results['seconds']:.0f}s, load by {loadgen}, redis-py "
        f"{env['redis_py']}, hiredis {'on' if env['hiredis'] else 'OFF'})\n"
    )
    say(_table(rows))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2, default=str)
    say(f"\nwritten to {os.path.relpath(args.output)}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every subprocess is already stopped (finally blocks)
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
