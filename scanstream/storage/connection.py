"""Connecting: redis-py clients with timeouts and retries chosen on purpose, and the
`Storage` that hands every part of the storage layer the client it needs.

- Commands on the hot path run with no per-read timeout: redis-py wraps each read in an
  asyncio timeout when `socket_timeout` is set, which cost ~40% of pipelined throughput.
  Callers bound their own waits instead: one deadline per HTTP request (the API), or a
  loop that backs off and tries again (the worker). A dead server is still noticed
  quickly: the connect timeout is short, TCP keepalive is on, and a refused or reset
  connection fails at once.
- A pooled connection broken by a Redis restart fails its next command ("Connection
  closed by server"). That command is re-sent once, on a fresh connection, without the
  caller seeing it; a second failure is the caller's (Redis really is down). redis-py's
  own default (10 retries with up to 1 s of backoff each) would hide an outage for
  seconds and re-send non-idempotent writes up to ten times: scanstream's writes are
  fenced and carry a write token, so one re-send is safe, and one is all it takes.
  Timeouts are not retried: a server that does not answer is not helped by asking again.
- The pool waits for a free connection instead of failing ("Too many connections"): a
  burst of requests queues for the pool, bounded by the caller's deadline, and is never
  mistaken for Redis being down (`storage/pool.py`).
- Blocking reads (XREAD / XREADGROUP with BLOCK) get their own client, so a long BLOCK
  never trips a socket timeout meant for short commands (redis-py#3138): `Storage` opens
  it for the job reads (`blocking_reads`) and for each tail reader.
- Redis Cluster (`SCANSTREAM_REDIS_CLUSTER`): the URL is a seed node, and the client is
  redis-py's `RedisCluster`, which learns the slot map, follows MOVED and ASK, and
  retries TRYAGAIN and CLUSTERDOWN. It has the same command API, so every part of the
  storage layer takes either client; every command and script names keys of one slot
  (`keys.py`). Its retries are bounded (`CLUSTER_RETRY`: about 2 s in all, enough for a
  slot migration's redirects, not for a failover): past them the call is
  `StoreUnavailable` (`errors.py`) and the caller's own retry takes over, as when a
  single Redis restarts. Its connection pools do not wait when full: they are sized so
  that they need not (per node, as many as the caller's pool).
"""

from __future__ import annotations

import socket
from functools import cached_property
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from scanstream.errors import StoreUnavailable
from scanstream.settings import Settings
from scanstream.storage.claims import Claims
from scanstream.storage.dead_letters import DeadLetters
from scanstream.storage.errors import store_errors
from scanstream.storage.events import EventStore
from scanstream.storage.exchange import LogExchange
from scanstream.storage.index import ScanIndex
from scanstream.storage.job_info import JobInfo
from scanstream.storage.jobs import JobQueue
from scanstream.storage.keys import Keys
from scanstream.storage.pool import WaitingConnectionPool
from scanstream.storage.quotas import UserQuotas
from scanstream.storage.replication import is_cluster
from scanstream.storage.replies import text
from scanstream.storage.running import RunningScans
from scanstream.storage.tail import TailReader
from scanstream.storage.upkeep import Upkeep

CONNECT_TIMEOUT_S = 2.0


def retry_once() -> Retry:
    """Re-send a command once on a fresh connection after a connection-level failure."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def cluster_retry() -> Retry:
    """Redirect and cluster-state errors: retried with a short backoff, ~2 s in all."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), 6)


def client(url: str, *, max_connections: int = 64, cluster: bool = False) -> Redis:
    """A client of one Redis, or (`cluster`) of the Redis Cluster `url` is a node of.

    Both are typed `Redis`: RedisCluster serves the same commands, and the few places
    that must tell them apart ask `is_cluster`.
    """
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "decode_responses": False,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": None,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    if cluster:
        return cast(
            Redis,
            RedisCluster.from_url(
                url, **options, retry=cluster_retry(), require_full_coverage=True
            ),
        )
    pool = WaitingConnectionPool.from_url(
        url, **options, retry=retry_once(), retry_on_error=[RedisConnectionError]
    )
    return Redis.from_pool(pool)  # the client owns its pool and closes it


def answers_ping(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    """Whether a Redis answers PING on `host:port` (blocking, raw socket: for a server
    being started, before any client exists)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Storage:
    """One Redis under one key prefix, and the parts of the storage layer built on it.

        storage = Storage.connect(settings, max_connections=64)
        store = storage.events           # a scan's stream and fence
        await storage.jobs.enqueue(...)  # the job queue
        ...
        await storage.aclose()           # every client it opened

    Every part shares the hot client; reads that block get clients of their own. Built
    around an existing client (`Storage(redis, settings)`), it closes nothing of it.
    """

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        blocking: Redis | None = None,
        url: str | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.job_partitions)
        self.url = url or settings.redis_url
        self._blocking = blocking
        self._owned: list[Redis] = []

    @classmethod
    def connect(
        cls,
        settings: Settings,
        *,
        url: str | None = None,
        max_connections: int = 64,
        blocking_reads: bool = False,
    ) -> Storage:
        """Open the clients: the hot pool, and with `blocking_reads` one for job reads
        (on a cluster, each pool's size is per node)."""
        url = url or settings.redis_url
        if not url:
            raise ValueError("Storage.connect needs a Redis URL (settings.redis_url)")
        cluster = settings.redis_cluster
        redis = client(url, max_connections=max_connections, cluster=cluster)
        # One blocking read per job partition at a time (consumers/worker.py).
        blocking = (
            client(url, max_connections=settings.job_partitions + 1, cluster=cluster)
            if blocking_reads
            else None
        )
        storage = cls(redis, settings, blocking=blocking, url=url)
        storage._owned = [redis] if blocking is None else [redis, blocking]
        return storage

    @cached_property
    def events(self) -> EventStore:
        return EventStore(
            self.redis,
            self.keys,
            retention_s=self.settings.retention_s,
            durable_replicas=self.settings.durable_replicas,
            max_entries=self.settings.max_events_per_scan,
        )

    @cached_property
    def index(self) -> ScanIndex:
        # Nothing listed can outlive this: a scan ends by its deadline, then expires.
        ttl_s = int(self.settings.retention_s + self.settings.scan_deadline_s)
        return ScanIndex(self.redis, self.keys, ttl_s=ttl_s)

    @cached_property
    def quotas(self) -> UserQuotas:
        s = self.settings
        return UserQuotas(
            self.redis,
            self.keys,
            scans_per_minute=s.user_scans_per_minute,
            max_active=s.user_max_active_scans,
            ttl_s=int(s.retention_s + s.scan_deadline_s),
        )

    @cached_property
    def jobs(self) -> JobQueue:
        return JobQueue(
            self.redis,
            self.keys,
            blocking=self._blocking,
            max_running=self.settings.user_max_running_jobs,
        )

    def claims(self, consumer: str) -> Claims:
        return Claims(self.redis, self.keys, consumer)

    @cached_property
    def running(self) -> RunningScans:
        return RunningScans(self.redis, self.keys)

    @cached_property
    def upkeep(self) -> Upkeep:
        return Upkeep(self.redis, self.keys)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.redis, self.keys)

    @cached_property
    def job_info(self) -> JobInfo:
        return JobInfo(self.redis, self.keys)

    @cached_property
    def exchange(self) -> LogExchange:
        return LogExchange(self.redis, self.keys)

    def tail_reader(self) -> TailReader:
        """A reader of many streams on a connection of its own (closed by its `aclose`)."""
        if not self.url:
            raise ValueError("a tail reader needs the Redis URL (Storage(url=...))")
        tail = client(self.url, max_connections=1, cluster=self.settings.redis_cluster)
        return TailReader(tail, self.redis, self.keys)

    async def ping(self) -> None:
        """Redis answers; on a cluster, it reports `cluster_state:ok` and every master
        answers (a master down and not yet replaced leaves some scans unreachable)."""
        async with store_errors():
            if not is_cluster(self.redis):
                await self.redis.ping()
                return
            cluster = cast(RedisCluster, self.redis)
            info: Any = await cluster.cluster_info()
            state = text(info.get("cluster_state", info.get(b"cluster_state", b"")))
            if state != "ok":
                raise StoreUnavailable(f"the Redis Cluster's state is {state or 'unknown'}")
            await cluster.ping(target_nodes=RedisCluster.PRIMARIES)

    async def eviction_policy(self) -> str | None:
        """Redis's `maxmemory-policy`, or None where CONFIG is not allowed (managed Redis).

        Anything but `noeviction` lets Redis evict keys with a TTL: a finished scan's log
        could vanish before its retention ends. Callers warn at start-up.
        """
        async with store_errors():
            try:
                if is_cluster(self.redis):  # the masters are assumed to be configured alike
                    cluster = cast(RedisCluster, self.redis)
                    node = cluster.get_default_node()
                    reply: Any = await cluster.config_get("maxmemory-policy", target_nodes=node)
                else:
                    reply = await self.redis.config_get("maxmemory-policy")
            except ResponseError:
                return None
        value = reply.get(b"maxmemory-policy", reply.get("maxmemory-policy"))
        return text(value) if value is not None else None

    async def aclose(self) -> None:
        """Close the clients this storage opened (`connect`)."""
        for owned in self._owned:
            await owned.aclose()
        self._owned = []
