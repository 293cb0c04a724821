"""A per-process LRU of scan projections, brought up to date with one round trip.

`get(scan_id)` asks the store for the entries after the cached view's last entry id (one
inclusive XRANGE, see `EventStore.read_if_exists`) and folds only those. A stream that
no longer exists drops the cached view, so a cached projection never outlives its scan.

Concurrent requests for the same scan may each read and fold the same new entries: that
is safe because `fold` returns a new view and never mutates the cached one, and the slot
is replaced only by a view that advanced further along the stream.

The rendered JSON of status and results is cached beside the view, keyed by the view's
last entry id, so a finished scan's status costs one round trip and no re-encoding.

`get_shared` lets requests that are already waiting share one read (long-polls woken by
the same terminal event): see its docstring for why that is exact.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from scanstream import projection, render
from scanstream.ids import stream_id_key
from scanstream.projection import ScanView
from scanstream.storage.events import EventStore

DEFAULT_SIZE = 10_000
DEFAULT_MAX_BYTES = 64 * 2**20
_encode = msgspec.json.Encoder().encode


def entry_key(entry_id: str | None) -> tuple[int, int]:
    """Stream ids compare as (ms, seq); None sorts first."""
    return stream_id_key(entry_id) if entry_id else (-1, -1)


@dataclass
class _Slot:
    view: ScanView
    rendered: dict[str, bytes] = field(default_factory=dict)

    @property
    def weight(self) -> int:
        """What the slot holds, in bytes of event data folded and of JSON rendered (the
        Python objects take a few times that; the bound is on what grows with a log)."""
        return self.view.log_bytes + sum(len(body) for body in self.rendered.values())


@dataclass
class CacheStats:
    hits: int = 0  # a cached view existed: only new entries were read
    misses: int = 0  # read from the start of the stream
    dropped: int = 0  # the stream was gone: the cached view was dropped
    unreadable: int = 0  # log entries the fold skipped (hostile or broken), as folded here


RENDERERS: dict[str, Callable[[ScanView], msgspec.Struct]] = {
    "status": render.status_of,
    "results": render.results_of,
}


class ProjectionCache:
    def __init__(
        self, store: EventStore, size: int = DEFAULT_SIZE, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.store = store
        self.size = max(1, size)
        # Bounded in scans and in bytes (`SCANSTREAM_PROJECTION_CACHE_BYTES`): a few huge
        # logs cannot take the process's memory, whatever the count.
        self.max_bytes = max(1, max_bytes)
        self.bytes = 0
        self.stats = CacheStats()
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        # scan id -> (when it was started, time.monotonic(); the read in flight)
        self._flights: dict[str, tuple[float, asyncio.Task[ScanView | None]]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def peek(self, scan_id: str) -> ScanView | None:
        """The cached view as it is, with no I/O (may be stale)."""
        slot = self._slots.get(scan_id)
        return slot.view if slot else None

    async def get(self, scan_id: str) -> ScanView | None:
        """The scan's current view, or None when its stream does not exist."""
        slot = self._slots.get(scan_id)
        cached = slot.view if slot else None
        if cached is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        entries = await self.store.read_if_exists(
            scan_id, after=cached.last_event_id if cached else None
        )
        if entries is None:
            if self._drop(scan_id) is not None:
                self.stats.dropped += 1
            return None
        if cached is not None and not entries:
            self._touch(scan_id)
            return self._current(scan_id, cached)
        self.stats.unreadable += sum(1 for entry in entries if entry.event is None)
        view = projection.fold(cached or projection.empty(scan_id), entries)
        return self.offer(view)

    async def get_shared(self, scan_id: str, since: float) -> ScanView | None:
        """`get`, but joining a read of this scan in flight that was started at or after
        `since` (a `time.monotonic()`) instead of sending one more.

        Such a read reaches Redis after `since`, so it sees every write acknowledged
        before then: for a request that began by `since` it is as good as a read of its
        own. A thousand long-polls woken by one terminal event cost one round trip. A
        cancelled joiner (its deadline) leaves the read running for the others.
        """
        flight = self._flights.get(scan_id)
        if flight is None or flight[0] < since:
            task = asyncio.ensure_future(self.get(scan_id))
            flight = self._flights[scan_id] = (time.monotonic(), task)
            task.add_done_callback(lambda done: self._landed(scan_id, done))
        return await asyncio.shield(flight[1])

    def _landed(self, scan_id: str, task: asyncio.Task[ScanView | None]) -> None:
        flight = self._flights.get(scan_id)
        if flight is not None and flight[1] is task:
            del self._flights[scan_id]
        if not task.cancelled():
            task.exception()  # retrieved: every joiner may have gone (their deadlines)

    def forget(self, scan_id: str) -> None:
        self._drop(scan_id)

    def _drop(self, scan_id: str) -> _Slot | None:
        slot = self._slots.pop(scan_id, None)
        if slot is not None:
            self.bytes -= slot.weight
        return slot

    def render(self, view: ScanView, kind: str) -> bytes:
        """The JSON of `render.status_of` / `render.results_of` for `view`, encoded once."""
        slot = self._slots.get(view.scan_id)
        if slot is None or slot.view.last_event_id != view.last_event_id:
            return _encode(RENDERERS[kind](view))
        body = slot.rendered.get(kind)
        if body is None:
            body = slot.rendered[kind] = _encode(RENDERERS[kind](slot.view))
            self.bytes += len(body)
            self._evict()
        return body

    def _current(self, scan_id: str, fallback: ScanView) -> ScanView:
        slot = self._slots.get(scan_id)
        return slot.view if slot else fallback

    def _touch(self, scan_id: str) -> None:
        if scan_id in self._slots:
            self._slots.move_to_end(scan_id)

    def offer(self, view: ScanView) -> ScanView:
        """Keep `view` if it is further along than the cached one; return the furthest."""
        slot = self._slots.get(view.scan_id)
        if slot is not None and entry_key(slot.view.last_event_id) >= entry_key(view.last_event_id):
            self._slots.move_to_end(view.scan_id)
            return slot.view
        self._drop(view.scan_id)
        slot = self._slots[view.scan_id] = _Slot(view)
        self.bytes += slot.weight
        self._evict()
        return view

    def _evict(self) -> None:
        """Least recently used first, down to the bounds; the newest slot always stays."""
        while len(self._slots) > 1 and (
            len(self._slots) > self.size or self.bytes > self.max_bytes
        ):
            _, slot = self._slots.popitem(last=False)
            self.bytes -= slot.weight
