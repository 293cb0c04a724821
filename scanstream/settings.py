"""Settings, read from `SCANSTREAM_*` environment variables into one frozen dataclass."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from scanstream.errors import ConfigError

ISOLATION_MODES = ("thread", "process", "inline")
LOG_LEVELS = ("debug", "info", "warning", "error")
CSV_MAX_FILE_BYTES = 64 * 1024 * 1024
# A bearer token is sent in a header: printable ASCII, no spaces.
_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1/true or 0/false, got {value!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _float(env, name, default)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ConfigError(f"{name} must be a whole number of seconds, at least 1")
    return value


def _secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    """SCANSTREAM_SECRET's list: the first signs, all verify (whitespace around each is
    ignored, so a secret cannot hold a comma or begin or end with a space)."""
    return tuple(s.strip() for s in env.get("SCANSTREAM_SECRET", "").split(",") if s.strip())


@dataclass(frozen=True)
class CsvSettings:
    """Where the CSV market source may read, and how much of one file it reads.

    Read by the API (to check `params.csv_dir` up front) and by whatever builds a market
    (the worker, `scanstream dev`, replay); `from_env` is the one parser of both variables.
    """

    root: str | None = None  # None: the CSV source is refused
    # A file over this is refused, not read: one request cannot make a worker load an
    # arbitrarily large file into memory.
    max_file_bytes: int = CSV_MAX_FILE_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CsvSettings:
        env = os.environ if env is None else env
        max_file_bytes = _int(env, "SCANSTREAM_CSV_MAX_FILE_BYTES", CSV_MAX_FILE_BYTES)
        if max_file_bytes < 1:
            raise ConfigError("SCANSTREAM_CSV_MAX_FILE_BYTES must be at least 1")
        return cls(root=env.get("SCANSTREAM_CSV_ROOT") or None, max_file_bytes=max_file_bytes)


def _metrics_token(env: Mapping[str, str]) -> str | None:
    token = env.get("SCANSTREAM_METRICS_TOKEN") or None
    if token is not None and not set(token) <= _TOKEN_CHARS:
        raise ConfigError("SCANSTREAM_METRICS_TOKEN must be printable ASCII without spaces")
    return token


def _above_zero(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be above 0, got {value!r}")


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None  # None: the embedded Redis (dev only)
    # The URL is a seed node of a Redis Cluster (redis-py's RedisCluster client).
    redis_cluster: bool = False
    # The job stream is split into this many partitions, each its own hash slot and
    # consumer group; a scan's jobs all go to one (storage/partitions.py).
    job_partitions: int = 8
    # A terminal or finding write counts only once this many replicas have it (Redis
    # WAIT): what a failover can lose in its window, at a measured cost (0: do not wait).
    durable_replicas: int = 0
    # Strategies of one user running (queued to workers, not yet done) at once, across all
    # workers; beyond it that user's jobs wait while other users' go first (0: no cap).
    user_max_running_jobs: int = 64
    # Queued plus running scans one user may have; beyond it POST /v1/scans is 429 (0: none).
    user_max_active_scans: int = 20
    # New scans one user may start per minute (a token bucket, bursts up to it; 0: none).
    user_scans_per_minute: int = 60
    # What one scan request may ask for (scanstream/limits.py): 422 beyond.
    max_params_bytes: int = 8 * 1024
    max_scan_cost: int = 5_000_000
    # Event data (and rendered JSON) one API process keeps in its projection cache.
    projection_cache_bytes: int = 64 * 2**20
    # One attempt of a strategy reports at most this many findings; the rest are counted
    # (`findings_dropped` on strategy.completed), not written.
    max_findings_per_strategy: int = 1000
    # Past this many events in a scan's log, its progress events are dropped (findings and
    # lifecycle events still count: they are bounded by the cap above and the attempts).
    max_events_per_scan: int = 20_000
    # Signs tokens: the first of SCANSTREAM_SECRET's comma-separated list.
    secret: str | None = None
    # The rest of that list: they still verify tokens but never sign one (rotation).
    other_secrets: tuple[str, ...] = ()
    # Lifetime of a token `scanstream token` makes without --ttl, and of dev's link (s).
    token_ttl_s: int = 86400
    # Lifetime of a stream token (`POST /v1/scans/{id}/stream-token`): it sits in a URL (s).
    stream_token_ttl_s: int = 60
    prefix: str = "scanstream"
    strategy_modules: tuple[str, ...] = ()
    # A finished scan's keys expire this long after its terminal event (seconds).
    retention_s: float = 24 * 3600
    # A pending job idle this long is taken over by another worker (ms).
    claim_idle_ms: int = 30_000
    # Running jobs refresh their claim this often; must be well under claim_idle_ms.
    heartbeat_ms: int = 5_000
    max_attempts: int = 3
    retry_backoff_s: float = 0.5
    strategy_timeout_s: float = 600.0
    # A scan still running this long after its creation ends with what it has (seconds).
    scan_deadline_s: float = 3600.0
    # Workers sweep for overdue scans, trim the job stream and drop long-gone consumers
    # this often (seconds); one worker per round does it.
    reap_interval_s: float = 5.0
    # A consumer that owns no pending job and has not read for this long is removed from
    # the group (seconds). One that still owns jobs is never removed (redis#9745).
    consumer_expiry_s: float = 3600.0
    # Where strategy code runs: "thread" (default), "process" or "inline"
    # (consumers/isolation/__init__.py says what each promises).
    isolation: str = "thread"
    # process isolation: each strategy process's address-space cap in MiB (0: none).
    strategy_max_memory_mb: int = 0
    max_body_bytes: int = 64 * 1024
    # HTTP hardening (scanstream/api/protocol.py), per API process. The request line and
    # headers of one request, in bytes: past it 431, before they are all read.
    max_header_bytes: int = 16 * 1024
    # Seconds a request's headers may take (from the connection's start, or a kept-alive
    # request's first byte), then its body (after the headers): past either, 408 and the
    # connection is closed, so stalled clients cannot hold connections open.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 20.0
    # Open HTTP connections one API process keeps; a connection past it is answered 503
    # server_busy at once. Above SSE_MAX + WAIT_MAX, so those caps answer first.
    max_connections: int = 10_000
    # Seconds an idle kept-alive connection stays open between requests.
    keepalive_timeout_s: int = 5
    log_format: str = "text"  # or "json"
    # The worker logs each attempt's start at debug (the scan's stream records every
    # attempt already); failures, time-outs and stops at warning or info.
    log_level: str = "info"
    data_dir: str = ".scanstream"  # embedded Redis data (AOF) lives here
    sse_heartbeat_s: float = 15.0
    sse_max_per_user: int = 20  # open SSE connections one user may hold on one API process
    sse_max: int = 2000  # open SSE connections on one API process
    sse_buffer: int = 1000  # events queued for one SSE subscriber before it is dropped as slow
    # Every Redis call an HTTP request makes is bounded by this (seconds; 0: unbounded): a
    # frozen or partitioned Redis is a 503 within it, not a request that hangs.
    request_timeout_s: float = 2.0
    wait_max_per_user: int = 100  # `results?wait=` long-polls one user may hold on one API process
    wait_max: int = 5000  # `results?wait=` long-polls waiting on one API process
    csv: CsvSettings = field(default_factory=CsvSettings)
    # Set: `GET /metrics` answers only `Authorization: Bearer <this>`; None: open.
    metrics_token: str | None = field(default=None, repr=False)
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        url = env.get("SCANSTREAM_REDIS_URL") or None
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("SCANSTREAM_REDIS_URL must start with redis://, rediss:// or unix://")
        prefix = env.get("SCANSTREAM_PREFIX") or "scanstream"
        if any(c in prefix for c in "{}: \t\n"):
            raise ConfigError("SCANSTREAM_PREFIX must not contain braces, colons or whitespace")
        modules = tuple(
            m.strip() for m in env.get("SCANSTREAM_STRATEGIES", "").split(",") if m.strip()
        )
        claim_idle_ms = _int(env, "SCANSTREAM_CLAIM_IDLE_MS", 30_000)
        heartbeat_ms = _int(env, "SCANSTREAM_HEARTBEAT_MS", max(50, min(5_000, claim_idle_ms // 3)))
        if heartbeat_ms * 2 > claim_idle_ms:
            raise ConfigError(
                "SCANSTREAM_HEARTBEAT_MS must be at most half SCANSTREAM_CLAIM_IDLE_MS"
            )
        deadline_s = _float(env, "SCANSTREAM_SCAN_DEADLINE", 3600.0)
        if deadline_s <= 0:
            raise ConfigError("SCANSTREAM_SCAN_DEADLINE must be a positive number of seconds")
        reap_interval_s = _float(env, "SCANSTREAM_REAP_INTERVAL", 5.0)
        if reap_interval_s <= 0:
            raise ConfigError("SCANSTREAM_REAP_INTERVAL must be a positive number of seconds")
        isolation = env.get("SCANSTREAM_ISOLATION") or "thread"
        if isolation not in ISOLATION_MODES:
            raise ConfigError(
                f"SCANSTREAM_ISOLATION must be one of {', '.join(ISOLATION_MODES)}, "
                f"got {isolation!r}"
            )
        log_format = env.get("SCANSTREAM_LOG_FORMAT", "text")
        if log_format not in ("text", "json"):
            raise ConfigError("SCANSTREAM_LOG_FORMAT must be text or json")
        log_level = (env.get("SCANSTREAM_LOG_LEVEL") or "info").lower()
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"SCANSTREAM_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        partitions = _int(env, "SCANSTREAM_JOB_PARTITIONS", 8)
        if not 1 <= partitions <= 256:
            raise ConfigError("SCANSTREAM_JOB_PARTITIONS must be between 1 and 256")
        durable_replicas = _int(env, "SCANSTREAM_DURABLE_REPLICAS", 0)
        if durable_replicas < 0:
            raise ConfigError("SCANSTREAM_DURABLE_REPLICAS must be 0 or more")
        secrets = _secrets(env)
        max_header_bytes = _int(env, "SCANSTREAM_MAX_HEADER_BYTES", 16 * 1024)
        header_timeout_s = _float(env, "SCANSTREAM_HEADER_TIMEOUT", 10.0)
        body_timeout_s = _float(env, "SCANSTREAM_BODY_TIMEOUT", 20.0)
        max_connections = _int(env, "SCANSTREAM_MAX_CONNECTIONS", 10_000)
        keepalive_timeout_s = _int(env, "SCANSTREAM_KEEPALIVE_TIMEOUT", 5)
        for name, value in (
            ("SCANSTREAM_MAX_HEADER_BYTES", max_header_bytes),
            ("SCANSTREAM_HEADER_TIMEOUT", header_timeout_s),
            ("SCANSTREAM_BODY_TIMEOUT", body_timeout_s),
            ("SCANSTREAM_MAX_CONNECTIONS", max_connections),
            ("SCANSTREAM_KEEPALIVE_TIMEOUT", keepalive_timeout_s),
        ):
            _above_zero(name, value)  # these protections cannot be turned off
        return cls(
            redis_url=url,
            redis_cluster=_flag(env, "SCANSTREAM_REDIS_CLUSTER"),
            job_partitions=partitions,
            durable_replicas=durable_replicas,
            user_max_running_jobs=_int(env, "SCANSTREAM_USER_MAX_RUNNING_JOBS", 64),
            user_max_active_scans=_int(env, "SCANSTREAM_USER_MAX_ACTIVE_SCANS", 20),
            user_scans_per_minute=_int(env, "SCANSTREAM_USER_SCANS_PER_MINUTE", 60),
            max_params_bytes=_int(env, "SCANSTREAM_MAX_PARAMS_BYTES", 8 * 1024),
            max_scan_cost=_int(env, "SCANSTREAM_MAX_SCAN_COST", 5_000_000),
            projection_cache_bytes=_int(env, "SCANSTREAM_PROJECTION_CACHE_BYTES", 64 * 2**20),
            max_findings_per_strategy=_int(env, "SCANSTREAM_MAX_FINDINGS_PER_STRATEGY", 1000),
            max_events_per_scan=_int(env, "SCANSTREAM_MAX_EVENTS_PER_SCAN", 20_000),
            secret=secrets[0] if secrets else None,
            other_secrets=secrets[1:],
            token_ttl_s=_positive_int(env, "SCANSTREAM_TOKEN_TTL", 86400),
            stream_token_ttl_s=_positive_int(env, "SCANSTREAM_STREAM_TOKEN_TTL", 60),
            prefix=prefix,
            strategy_modules=modules,
            retention_s=_float(env, "SCANSTREAM_RETENTION", 24 * 3600),
            claim_idle_ms=claim_idle_ms,
            heartbeat_ms=heartbeat_ms,
            max_attempts=max(1, _int(env, "SCANSTREAM_MAX_ATTEMPTS", 3)),
            retry_backoff_s=_float(env, "SCANSTREAM_RETRY_BACKOFF", 0.5),
            strategy_timeout_s=_float(env, "SCANSTREAM_STRATEGY_TIMEOUT", 600.0),
            scan_deadline_s=deadline_s,
            reap_interval_s=reap_interval_s,
            consumer_expiry_s=_float(env, "SCANSTREAM_CONSUMER_EXPIRY", 3600.0),
            isolation=isolation,
            strategy_max_memory_mb=_int(env, "SCANSTREAM_STRATEGY_MAX_MEMORY_MB", 0),
            max_body_bytes=_int(env, "SCANSTREAM_MAX_BODY", 64 * 1024),
            log_format=log_format,
            log_level=log_level,
            data_dir=env.get("SCANSTREAM_DATA_DIR", ".scanstream"),
            sse_heartbeat_s=_float(env, "SCANSTREAM_SSE_HEARTBEAT", 15.0),
            sse_max_per_user=_int(env, "SCANSTREAM_SSE_MAX_PER_USER", 20),
            sse_max=_int(env, "SCANSTREAM_SSE_MAX", 2000),
            sse_buffer=max(1, _int(env, "SCANSTREAM_SSE_BUFFER", 1000)),
            request_timeout_s=_float(env, "SCANSTREAM_REQUEST_TIMEOUT", 2.0),
            wait_max_per_user=_int(env, "SCANSTREAM_WAIT_MAX_PER_USER", 100),
            wait_max=_int(env, "SCANSTREAM_WAIT_MAX", 5000),
            csv=CsvSettings.from_env(env),
            metrics_token=_metrics_token(env),
            max_header_bytes=max_header_bytes,
            header_timeout_s=header_timeout_s,
            body_timeout_s=body_timeout_s,
            max_connections=max_connections,
            keepalive_timeout_s=keepalive_timeout_s,
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret that verifies a token, the signing one first."""
        return ((self.secret,) if self.secret else ()) + self.other_secrets

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
