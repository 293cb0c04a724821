"""The projection cache: one round trip per read, only new entries folded, never outliving
the stream, safe under concurrent reads."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import msgspec
import pytest
from redis.asyncio import Redis

from scanstream import projection, render
from scanstream.events import ScanRequested, stamp
from scanstream.ids import new_scan_id
from scanstream.projection_cache import ProjectionCache, entry_key
from scanstream.storage.events import EventStore
from tests.support import api_events as scans

pytestmark = pytest.mark.anyio


async def new_scan(store: EventStore, strategies: list[str] | None = None) -> str:
    scan_id = new_scan_id()
    names = strategies or ["a", "b"]
    requested = stamp(ScanRequested, user_id="alice", strategies=names, params={})
    assert await store.create_scan(scan_id, requested)
    return scan_id


async def test_unknown_scan_is_none(store: EventStore) -> None:
    """A scan with no stream reads as None and is not cached."""
    cache = ProjectionCache(store)
    assert await cache.get(new_scan_id()) is None
    assert len(cache) == 0


async def test_reads_fold_only_new_entries(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first read, each read asks only for entries after the cached last id."""
    sid = await new_scan(store)
    cache = ProjectionCache(store)
    first = await cache.get(sid)
    assert first is not None and first.state == "queued"
    asked: list[str | None] = []
    real = store.read_if_exists

    async def spy(scan_id: str, after: str | None) -> object:
        asked.append(after)
        return await real(scan_id, after)

    monkeypatch.setattr(store, "read_if_exists", spy)
    attempt = await scans.start(store, sid, "a")
    second = await cache.get(sid)
    assert second is not None and second.state == "running"
    assert asked == [first.last_event_id]
    assert second.events_folded == first.events_folded + 1
    third = await cache.get(sid)
    assert third is second  # nothing new: the cached view itself, no fold
    assert asked[-1] == second.last_event_id
    await scans.complete(store, sid, "a", attempt, 0)
    assert (await cache.get(sid)).strategies["a"].state == "completed"  # type: ignore[union-attr]
    assert (cache.stats.hits, cache.stats.misses) == (3, 1)


async def test_a_deleted_stream_drops_the_cached_view(store: EventStore, redis: Redis) -> None:
    """When the stream is gone the cached view is dropped and the read is None."""
    sid = await new_scan(store)
    cache = ProjectionCache(store)
    assert await cache.get(sid) is not None
    await redis.delete(store.keys.events(sid))
    assert await cache.get(sid) is None
    assert cache.peek(sid) is None and cache.stats.dropped == 1


async def test_concurrent_reads_never_fold_twice_into_a_shared_view(store: EventStore) -> None:
    """Many concurrent reads while entries are appended end at the same view as one full
    fold, and a view once handed out is never changed afterwards."""
    sid = await new_scan(store, ["a"])
    cache = ProjectionCache(store)
    handed_out: list[tuple[projection.ScanView, bytes]] = []

    async def reader() -> None:
        for _ in range(20):
            view = await cache.get(sid)
            assert view is not None
            handed_out.append((view, msgspec.json.encode(render.status_of(view))))
            await anyio.lowlevel.checkpoint()

    async def writer() -> None:
        attempt = await scans.start(store, sid, "a")
        for i in range(10):
            await scans.progress(store, sid, "a", attempt, i / 10, [(f"S{i}", i / 10)])
        await scans.complete(store, sid, "a", attempt, 10)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        for _ in range(8):
            tg.start_soon(reader)
    final = await cache.get(sid)
    full = projection.fold_all(sid, await store.read(sid))
    assert final is not None
    assert render.status_of(final) == render.status_of(full)
    assert final.events_folded == full.events_folded
    assert len(final.opportunities) == 10
    for view, encoded in handed_out:
        assert msgspec.json.encode(render.status_of(view)) == encoded


async def test_the_slot_only_moves_forward(store: EventStore) -> None:
    """Offering a view older than the cached one keeps the newer one."""
    sid = await new_scan(store)
    cache = ProjectionCache(store)
    old = await cache.get(sid)
    await scans.start(store, sid, "a")
    new = await cache.get(sid)
    assert old is not None and new is not None
    assert cache.offer(old) is new
    assert cache.peek(sid) is new


async def test_the_cache_is_a_bounded_lru(store: EventStore) -> None:
    """Past its size the least recently read scan is evicted."""
    cache = ProjectionCache(store, size=2)
    a, b, c = [await new_scan(store) for _ in range(3)]
    await cache.get(a)
    await cache.get(b)
    await cache.get(a)
    await cache.get(c)
    assert len(cache) == 2
    assert cache.peek(b) is None and cache.peek(a) is not None and cache.peek(c) is not None


async def test_rendered_json_is_cached_per_last_event_id(store: EventStore) -> None:
    """Status and results JSON are encoded once per last entry id, and again after it moves."""
    sid = await new_scan(store)
    cache = ProjectionCache(store)
    view = await cache.get(sid)
    assert view is not None
    status = cache.render(view, "status")
    assert cache.render(view, "status") is status
    assert msgspec.json.decode(status) == msgspec.to_builtins(render.status_of(view))
    results = cache.render(view, "results")
    assert msgspec.json.decode(results)["complete"] is False
    await scans.start(store, sid, "a")
    newer = await cache.get(sid)
    assert newer is not None
    assert msgspec.json.decode(cache.render(newer, "status"))["state"] == "running"
    assert cache.render(view, "status") == status  # an old view still renders as itself


def test_entry_ids_compare_numerically() -> None:
    """Stream ids order by (ms, seq) as numbers, not as text."""
    assert entry_key("9-0") < entry_key("10-0") < entry_key("10-1") < entry_key("10-10")
    assert entry_key(None) < entry_key("0-0")


async def test_the_cache_is_bounded_in_bytes_as_well_as_in_scans(store: EventStore) -> None:
    """Big logs: a cache of 3 scans' worth of bytes keeps the 3 most recently read, and
    every view it hands out is still whole."""
    ids = [await new_scan(store, [f"s{i}" for i in range(200)]) for _ in range(6)]
    one = (await ProjectionCache(store).get(ids[0])).log_bytes  # type: ignore[union-attr]
    cache = ProjectionCache(store, max_bytes=3 * one + one // 2)
    for scan_id in ids:
        view = await cache.get(scan_id)
        assert view is not None and len(view.strategies) == 200
    assert len(cache) == 3
    assert cache.bytes <= cache.max_bytes
    assert [cache.peek(s) is not None for s in ids] == [False] * 3 + [True] * 3
