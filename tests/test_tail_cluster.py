"""The tail reader on a Redis Cluster: scans on several masters followed at once, one
connection per node, a poll that waits out `block_ms`, and a followed slot moved to
another master between reads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import cast

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from scanstream import events as ev
from scanstream.errors import StoreUnavailable
from scanstream.ids import new_scan_id
from scanstream.settings import Settings
from scanstream.storage.connection import Storage
from scanstream.storage.replies import text
from scanstream.storage.tail import POLL_S, TailReader, TailUnreadable
from tests.support.cluster import LocalCluster

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

SCANS = 6


@pytest.fixture
async def storage(redis_cluster: LocalCluster, prefix: str) -> AsyncIterator[Storage]:
    settings = Settings(
        redis_url=redis_cluster.seed_url, redis_cluster=True, prefix=prefix, secret="x"
    )
    storage = Storage.connect(settings)
    yield storage
    await storage.aclose()


@pytest.fixture
async def tail(storage: Storage) -> AsyncIterator[TailReader]:
    reader = storage.tail_reader()
    yield reader
    await reader.aclose()


async def spread_scans(storage: Storage, cluster: LocalCluster) -> dict[str, str]:
    """SCANS new scans whose streams live on at least 2 masters: scan id -> the id of
    its scan.requested entry."""
    scans: dict[str, str] = {}
    while len(scans) < SCANS or len(masters_of(cluster, storage, scans)) < 2:
        scan_id = new_scan_id()
        requested = ev.stamp(ev.ScanRequested, user_id="alice", strategies=["a"], params={})
        entry_id = await storage.events.create_scan(scan_id, requested)
        assert entry_id is not None
        scans[scan_id] = entry_id
    return scans


def masters_of(cluster: LocalCluster, storage: Storage, scan_ids: Iterable[str]) -> set[int]:
    return {cluster.master_for_key(storage.keys.events(s)).port for s in scan_ids}


async def append(storage: Storage, scan_id: str, n: int) -> list[str]:
    key = storage.keys.events(scan_id)
    fields = [{"type": "strategy.progress", "data": f'{{"i":{i}}}'} for i in range(n)]
    return [text(await storage.redis.xadd(key, f)) for f in fields]  # type: ignore[arg-type]


def tail_connections(tail: TailReader) -> dict[str, int]:
    cluster = cast(RedisCluster, tail.tail)
    return {node.name: len(node._connections) for node in cluster.get_nodes()}


async def test_new_entries_of_scans_on_several_masters_come_in_order_on_one_connection_each(
    storage: Storage, tail: TailReader, redis_cluster: LocalCluster
) -> None:
    """Given 6 scans on at least 2 masters, when entries are appended to each, then one
        read returns every new entry of every scan in order, a read after them returns []
        after about block_ms, and the tail holds one connection on each master it reads (and at
    most the one it learned the slots on, on the seed node)."""
    positions = await spread_scans(storage, redis_cluster)
    appended = {
        scan_id: await append(storage, scan_id, 3 + i) for i, scan_id in enumerate(positions)
    }

    replies = await tail.read(positions, count=100, block_ms=500)

    assert {scan_id: [e.id for e in entries] for scan_id, entries in replies} == appended
    assert all(e.data == b'{"i":%d}' % i for _, es in replies for i, e in enumerate(es))
    caught_up = {scan_id: ids[-1] for scan_id, ids in appended.items()}
    began = time.monotonic()
    assert await tail.read(caught_up, count=100, block_ms=300) == []
    assert 0.3 <= time.monotonic() - began < 0.3 + 0.25
    assert tail.pool_size == 1
    connections = tail_connections(tail)
    followed = {f"127.0.0.1:{port}" for port in masters_of(redis_cluster, storage, positions)}
    # The seed node also keeps the connection the client learned the cluster's slots on.
    seed = redis_cluster.seed_url.removeprefix("redis://").removesuffix("/0")
    assert {name: n for name, n in connections.items() if name in followed} == dict.fromkeys(
        followed, 1
    )
    assert {n for name, n in connections.items() if name not in followed | {seed}} <= {0}
    assert connections.get(seed, 0) <= 1


async def test_a_read_wakes_within_a_poll_of_an_append_and_count_bounds_each_stream(
    storage: Storage, tail: TailReader, redis_cluster: LocalCluster
) -> None:
    """Given a read waiting on 6 scans, when one scan gets an entry, then the read returns
    it within a poll interval or so; with `count`, each stream gives at most that many."""
    positions = await spread_scans(storage, redis_cluster)
    late = list(positions)[-1]
    appended_at: list[float] = []

    async def append_later() -> None:
        await anyio.sleep(0.2)
        await append(storage, late, 1)
        appended_at.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(append_later)
        replies = await tail.read(positions, count=100, block_ms=5_000)
    assert [scan_id for scan_id, _ in replies] == [late]
    assert time.monotonic() - appended_at[0] < POLL_S + 0.1

    for scan_id in positions:
        await append(storage, scan_id, 5)
    replies = await tail.read(positions, count=2, block_ms=100)
    assert sorted(len(entries) for _, entries in replies) == [2] * SCANS


async def test_a_followed_slot_moved_to_another_master_is_read_there(
    storage: Storage, tail: TailReader, redis_cluster: LocalCluster
) -> None:
    """Given a read over scans on several masters, when one scan's slot moves to another
    master and it gets a new entry, then the next read (or the one after a
    StoreUnavailable) returns it, and the reader then asks the new owner directly."""
    positions = await spread_scans(storage, redis_cluster)
    moved = next(iter(positions))
    key = storage.keys.events(moved)
    owner = redis_cluster.master_for_key(key)
    target = next(m for m in redis_cluster.masters() if m.port != owner.port)
    assert await tail.read(positions, count=100, block_ms=50) == []

    await anyio.to_thread.run_sync(redis_cluster.migrate_slot, key_slot(key.encode()), target)
    [entry_id] = await append(storage, moved, 1)

    try:
        replies = await tail.read(positions, count=100, block_ms=1_000)
    except StoreUnavailable:
        replies = await tail.read(positions, count=100, block_ms=1_000)
    assert [(s, [e.id for e in entries]) for s, entries in replies] == [(moved, [entry_id])]
    cluster = cast(RedisCluster, tail.tail)
    node = cluster.get_node_from_key(key)
    assert node is not None and node.port == target.port
    assert max(tail_connections(tail).values()) <= 1


async def test_a_followed_key_that_is_not_a_stream_is_tail_unreadable(
    storage: Storage, tail: TailReader, redis_cluster: LocalCluster
) -> None:
    """Given followed scans, when one scan's key holds a string, then the read raises
    TailUnreadable, and `not_streams` names that scan."""
    positions = await spread_scans(storage, redis_cluster)
    broken = list(positions)[2]
    await storage.redis.delete(storage.keys.events(broken))
    await storage.redis.set(storage.keys.events(broken), b"not a stream")

    with pytest.raises(TailUnreadable):
        await tail.read(positions, count=100, block_ms=100)
    assert [n.scan_id for n in await tail.not_streams(list(positions))] == [broken]
