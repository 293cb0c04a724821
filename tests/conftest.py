"""Shared fixtures: a private redis-server per test session, a fresh key prefix per test.

Async tests use anyio's pytest plugin (`@pytest.mark.anyio`) on the asyncio backend.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from scanstream.embedded import RedisProcess
from scanstream.settings import Settings
from scanstream.storage.connection import Storage, client
from scanstream.storage.events import EventStore
from tests.support.cluster import LocalCluster

SECRET = "test-secret-not-for-production"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One real redis-server for the whole session, on a free port."""
    server = RedisProcess(data_dir=tmp_path_factory.mktemp("redis"), appendfsync="everysec")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One local Redis Cluster (3 masters, 3 replicas) for the session's `cluster` tests.
    Tests that kill nodes start a `LocalCluster` of their own; this one keeps 3 healthy
    masters."""
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """ "single" unless a test is marked `on_both_backends` (tests/support/backends.py)."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def settings(request: pytest.FixtureRequest, backend: str, prefix: str) -> Settings:
    if backend == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        url, on_cluster = cluster.seed_url, True
    else:
        url, on_cluster = request.getfixturevalue("redis_server").url, False
    return Settings(
        redis_url=url,
        redis_cluster=on_cluster,
        secret=SECRET,
        prefix=prefix,
        strategy_modules=("tests.support.strategies",),
        claim_idle_ms=1_500,
        heartbeat_ms=300,
        retry_backoff_s=0.05,
        retention_s=3600,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    r = client(settings.redis_url or "", cluster=settings.redis_cluster)
    yield r
    await r.aclose()


@pytest.fixture
def storage(redis: Redis, settings: Settings) -> Storage:
    """The storage layer on the test's client and prefix."""
    return Storage(redis, settings)


@pytest.fixture
def store(storage: Storage) -> EventStore:
    return storage.events


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
