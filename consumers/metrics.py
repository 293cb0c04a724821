"""The worker's Prometheus metrics, on their own registry, served by `--metrics-port`.

A registry of their own keeps them apart from the API's `/metrics` when both run in one
process (`scanstream dev`). The `strategy` label only ever takes the name of a strategy
this worker has loaded (else "unknown"), so a hand-written job cannot add label values.
"""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from scanstream.errors import ConfigError

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Counter(
    "scanstream_worker_jobs",
    "Jobs this worker finished with, by outcome "
    "(completed, failed, stopped: the scan ended, lost: another worker took the job, "
    "skipped: nothing left to do)",
    ["outcome"],
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "scanstream_worker_attempts",
    "Strategy attempts started",
    ["strategy"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "scanstream_worker_strategy_duration_seconds",
    "Strategy attempt run time, by outcome",
    ["strategy", "outcome"],
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
RETRIES = Counter(
    "scanstream_worker_retries",
    "Failed attempts that will be retried",
    ["strategy"],
    registry=REGISTRY,
)
TIMEOUTS = Counter(
    "scanstream_worker_timeouts",
    "Attempts stopped by their time limit",
    ["strategy"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "scanstream_worker_dead_letters",
    "Jobs sent to the dead-letter stream",
    ["strategy"],
    registry=REGISTRY,
)
RECLAIMS = Counter(
    "scanstream_worker_reclaims",
    "Jobs taken over from idle (dead or frozen) workers",
    registry=REGISTRY,
)
CLAIMS_LOST = Counter(
    "scanstream_worker_claims_lost",
    "Running jobs this worker found taken by another",
    registry=REGISTRY,
)
UNUSABLE_JOBS = Counter(
    "scanstream_worker_unusable_jobs",
    "Job entries acknowledged without running: no body "
    "(deleted while pending) or a body that names no scan",
    ["reason"],
    registry=REGISTRY,
)
UNREADABLE_REQUESTS = Counter(
    "scanstream_worker_unreadable_scan_requests",
    "Jobs whose scan.requested entry could "
    "not be read (hostile or corrupt log); the strategy fails for good",
    registry=REGISTRY,
)
DEADLINE_ENDS = Counter(
    "scanstream_worker_deadline_ends",
    "Scans this worker ended at their deadline",
    registry=REGISTRY,
)
TRIMMED = Counter(
    "scanstream_worker_jobs_trimmed",
    "Acknowledged job entries trimmed from the job stream",
    registry=REGISTRY,
)
CONSUMERS_PRUNED = Counter(
    "scanstream_worker_consumers_pruned",
    "Gone consumers (no pending job) removed",
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "scanstream_worker_redis_errors",
    "Redis unreachable, seen by a worker loop",
    ["loop"],
    registry=REGISTRY,
)
HARD_STOPS = Counter(
    "scanstream_worker_hard_stops",
    "Stopped attempts that did not yield and were interrupted (thread) or killed (process)",
    ["isolation"],
    registry=REGISTRY,
)
ABANDONED_THREADS = Counter(
    "scanstream_worker_abandoned_threads",
    "Strategy threads left running a long C call after their attempt was stopped",
    registry=REGISTRY,
)
STRATEGY_CRASHES = Counter(
    "scanstream_worker_strategy_crashes",
    "Strategy processes that died during an attempt (crash, os._exit, out of memory)",
    registry=REGISTRY,
)
STORE_WAITS = Counter(
    "scanstream_worker_store_waits",
    "Writes of running jobs retried while Redis was unreachable (the job stays here)",
    registry=REGISTRY,
)
INFLIGHT = Gauge(
    "scanstream_worker_inflight_jobs",
    "Jobs running in this worker now",
    registry=REGISTRY,
)
LAG = Gauge(
    "scanstream_worker_job_lag",
    "Jobs not yet delivered to the group (last reaper round)",
    registry=REGISTRY,
)
PENDING = Gauge(
    "scanstream_worker_jobs_pending",
    "Jobs delivered but not yet acknowledged (last reaper round)",
    registry=REGISTRY,
)


class Labels:
    """Bounded label values for strategy names."""

    def __init__(self, known: Collection[str]) -> None:
        self.known = frozenset(known)

    def __call__(self, strategy: str) -> str:
        return strategy if strategy in self.known else "unknown"


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Expose the worker's metrics at http://host:port/metrics (a daemon thread)."""
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on port {port}: {exc}") from exc
