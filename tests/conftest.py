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


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def settings(redis_server: RedisProcess, prefix: str) -> Settings:
    return Settings(
        redis_url=redis_server.url,
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
    r = client(settings.redis_url or "")
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
