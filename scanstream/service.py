"""The application service: what the HTTP API does, with no HTTP in it.

Every read of a scan goes through the projection cache (one round trip in the steady
state) and answers `ScanNotFound` alike for an unknown, expired or another user's scan.

Each public method bounds its Redis work with the request deadline (`scanstream/deadline.py`):
one scope per call, whatever the number of round trips, and `StoreUnavailable` when Redis
does not answer in time. A long-poll's wait is not Redis work: it waits on the fan-out's
tail reader, and only its reads are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from scanstream import events as ev
from scanstream import projection
from scanstream.deadline import Deadline
from scanstream.errors import (
    InvalidRequest,
    QuotaExceeded,
    ScanConflict,
    ScanNotFound,
    StoreUnavailable,
)
from scanstream.events import LogEntry, ScanCancelRequested, ScanRequested
from scanstream.ids import is_scan_id, new_scan_id, scan_created_ms
from scanstream.limits import ScanLimits, check_scan
from scanstream.market.params import MarketParams
from scanstream.projection import ScanView
from scanstream.projection_cache import ProjectionCache
from scanstream.storage.events import EventStore
from scanstream.storage.index import ScanIndex
from scanstream.storage.jobs import JobQueue
from scanstream.storage.quotas import UserQuotas

if TYPE_CHECKING:  # the fan-out imports this module (sse.message uses log_event)
    from scanstream.live.fanout import Fanout

log = logging.getLogger("scanstream.service")

# (params, strategy names) -> anything; raises InvalidRequest naming `params.<field>`
ParamsValidator = Callable[[Mapping[str, Any], Sequence[str]], object]
LIST_CONCURRENCY = 8  # status reads in flight at once for one list page
LIST_REFILLS = 4  # pages read to fill one answer when listed scans have expired

_dict_decoder = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class Created:
    view: ScanView
    created: bool  # False: an Idempotency-Key replay answered with the existing scan


def log_event(scan_id: str, entry: LogEntry) -> dict[str, Any]:
    """An entry as an SSE message's `data`: its data's fields plus id, type and scan_id.

    An entry that cannot be read keeps its raw data as a string, with its `problem`.
    """
    if entry.event is not None:
        try:
            data = _dict_decoder.decode(entry.data)
        except msgspec.DecodeError:  # pragma: no cover - it decoded as an event just now
            data = None
        if data is not None:
            head = {"id": entry.id, "type": entry.type, "scan_id": scan_id}
            return head | {k: v for k, v in data.items() if k not in head}
    return {
        "id": entry.id,
        "type": entry.type,
        "scan_id": scan_id,
        "data": entry.data.decode("utf-8", "replace"),
        "problem": entry.problem or "unreadable entry",
    }


@dataclass(frozen=True, slots=True)
class Order:
    """What a `POST /v1/scans` asks for, validated."""

    requested: list[str] | None  # the strategies as asked (None: all of them)
    names: list[str]  # the strategies to run
    params: dict[str, Any]
    priority: int  # orders the user's own waiting scans (storage/jobs.py)


class ScanService:
    def __init__(
        self,
        *,
        store: EventStore,
        cache: ProjectionCache,
        index: ScanIndex,
        jobs: JobQueue,
        strategies: Sequence[str],
        validate_params: ParamsValidator,
        deadline: Deadline | None = None,
        live: Fanout | None = None,
        quotas: UserQuotas | None = None,
        limits: ScanLimits | None = None,
        works: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.index = index
        self.jobs = jobs
        self.strategies = tuple(strategies)
        self.validate_params = validate_params
        self.deadline = deadline or Deadline(0)
        self.live = live  # the tail reader that long-polls wait on
        self.quotas = quotas  # per-user admission of new scans (None: no limits)
        self.limits = limits  # what one scan may ask for (None: no limits)
        self.works = works or {}  # each strategy's kind of work, for the cost estimate
        self._group_ready = False

    async def prepare(self) -> None:
        """Create the job group (once). A store failure is left for the first scan to retry."""
        try:
            with self.deadline():
                await self.jobs.ensure_group()
            self._group_ready = True
        except StoreUnavailable:
            self._group_ready = False

    # -- reads -------------------------------------------------------------------------

    async def get_view(self, user_id: str, scan_id: str) -> ScanView:
        """The scan's current view; `ScanNotFound` for anything the user may not see."""
        with self.deadline():
            return await self._view(user_id, scan_id)

    async def _view(self, user_id: str, scan_id: str, *, since: float | None = None) -> ScanView:
        """The view; with `since`, possibly from a read shared with other waiting requests
        (`ProjectionCache.get_shared`)."""
        if not is_scan_id(scan_id):
            raise ScanNotFound(scan_id[:64])  # no key is ever built from it
        if since is None:
            view = await self.cache.get(scan_id)
        else:
            view = await self.cache.get_shared(scan_id, since)
        if view is None or not view.exists or view.user_id != user_id:
            raise ScanNotFound(scan_id)
        return view

    async def wait_for_end(self, user_id: str, scan_id: str, timeout_s: float) -> ScanView:
        """The view once the scan has ended, or as it is after `timeout_s`.

        The wait rides the fan-out's tail reader: it holds no Redis connection, and the
        terminal event wakes it at once. Over the caps (per user, per process) it raises
        `admission.Full` before any Redis work. Exactly once across the handoff, as for
        SSE (see `live/fanout.py`): the waiter follows the stream from the entry its view
        was read up to, and if the stream was already followed from a later position,
        the view is read again, so a terminal event is either in the view or handed over.
        """
        if self.live is None:
            raise RuntimeError("wait_for_end needs the fan-out (ScanService(live=...))")
        began = time.monotonic()
        waiter = self.live.admit_waiter(user_id, scan_id)
        slots = self.live.read_slots  # a burst of long-polls cannot take the Redis pool
        try:
            with self.deadline():
                async with slots:
                    view = await self._view(user_id, scan_id)
                    if view.terminal:
                        return view
                    known = view.last_event_id
                    if await self.live.follow(waiter, known=known) != known:
                        view = await self._view(user_id, scan_id)
            if view.terminal:
                return view
            await waiter.wait(began + timeout_s - time.monotonic())
            # Every waiter woken by the terminal event (or timed out at once) shares one read.
            with self.deadline():
                return await self._view(user_id, scan_id, since=began)
        finally:
            self.live.close(waiter)

    async def list_scans(
        self, user_id: str, limit: int, cursor: str | None
    ) -> tuple[list[ScanView], str | None]:
        """The user's scans, newest first, and the cursor of the next page (or None)."""
        with self.deadline():
            return await self._list_scans(user_id, limit, cursor)

    async def _list_scans(
        self, user_id: str, limit: int, cursor: str | None
    ) -> tuple[list[ScanView], str | None]:
        views: list[ScanView] = []
        semaphore = asyncio.Semaphore(LIST_CONCURRENCY)

        async def read(scan_id: str) -> ScanView | None:
            async with semaphore:
                return await self.cache.get(scan_id)

        more = False
        for _ in range(LIST_REFILLS):
            ids, more = await self.index.page(user_id, cursor, limit - len(views))
            if not ids:
                break
            found = await asyncio.gather(*(read(i) for i in ids))
            gone = [i for i, v in zip(ids, found, strict=True) if v is None]
            await self.index.remove(user_id, gone)  # expired: listed no more
            views += [v for v in found if v is not None and v.exists and v.user_id == user_id]
            cursor = ids[-1]
            if not more or len(views) >= limit:
                break
        return views, (cursor if more else None)

    async def read_log(
        self, user_id: str, scan_id: str, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to `limit` raw log entries after `after`, and the id to continue from."""
        with self.deadline():
            await self._view(user_id, scan_id)
            entries = await self.store.read(scan_id, after=after, count=limit + 1)
        page = entries[:limit]
        more = len(entries) > limit
        return [log_event(scan_id, e) for e in page], (page[-1].id if more and page else None)

    # -- writes ------------------------------------------------------------------------

    async def cancel_scan(self, user_id: str, scan_id: str) -> ScanView:
        with self.deadline():
            return await self._cancel(user_id, scan_id)

    async def _cancel(self, user_id: str, scan_id: str) -> ScanView:
        view = await self._view(user_id, scan_id)
        if view.terminal:
            raise ScanConflict(f"The scan has already ended: it is {view.state}.")
        request = ev.stamp(ScanCancelRequested, user_id=user_id)
        status, detail = await self.store.end_scan(scan_id, "scan.cancelled", before=[request])
        if status == "ended":
            raise ScanConflict(f"The scan has already ended ({detail}).")
        if status == "missing":
            raise ScanNotFound(scan_id)
        return await self._view(user_id, scan_id)

    async def create_scan(
        self,
        user_id: str,
        strategies: list[str] | None,
        params: dict[str, Any] | None,
        idempotency_key: str | None = None,
        *,
        priority: int = 0,
    ) -> Created:
        """Validate, create the scan and queue its jobs; see `_create` for the write order."""
        names = self._resolve(strategies)
        params = {} if params is None else params
        market = self.validate_params(params, names)  # stored as given, not as parsed
        if self.limits is not None and isinstance(market, MarketParams):
            works = [self.works.get(name, "series") for name in names]
            check_scan(self.limits, params, market, works)
        order = Order(strategies, names, params, priority)
        with self.deadline():
            return await self._create_scan(user_id, order, idempotency_key)

    async def _create_scan(
        self, user_id: str, order: Order, idempotency_key: str | None
    ) -> Created:
        if idempotency_key is None:
            return Created(await self._create(user_id, new_scan_id(), order), True)

        candidate = new_scan_id()
        held = await self.index.claim(user_id, idempotency_key, candidate)
        if held is None:
            return Created(await self._create(user_id, candidate, order), True)
        view = await self.cache.get(held)
        if view is not None:
            if not view.exists or view.user_id != user_id:
                raise ScanNotFound(held)
            self._check_replay(view, order.requested, order.params)
            return Created(view, False)
        # The key names a scan whose stream does not exist. Either the request that
        # claimed the key died (or is still in flight) between claiming it and creating
        # the scan, or the scan already expired. A stream only ever expires `retention`
        # after its terminal event, so an id minted less than `retention` ago cannot have
        # expired: create it now under that id. `create_scan` is atomic and idempotent,
        # and only the call that really appended `scan.requested` queues the jobs, so a
        # twin in flight and this retry never queue them twice. Older: the key outlived
        # its scan, so it starts over with a new scan.
        if ev.wall_ms() - scan_created_ms(held) < self.store.retention_s * 1000:
            return Created(await self._create(user_id, held, order), True)
        await self.index.replace(user_id, idempotency_key, candidate)
        return Created(await self._create(user_id, candidate, order), True)

    async def _create(self, user_id: str, scan_id: str, order: Order) -> ScanView:
        """Count the scan against its user's quotas, append scan.requested, then list the
        scan and queue one job per strategy.

        Three round trips, in this order: the user's quota keys, the scan's stream and the
        job stream live in different hash slots, so they cannot be written atomically.
        Jobs are queued only after the scan exists (a worker would drop a job for a missing
        scan). If the process dies between the last two writes the scan stays `queued`
        until its deadline: the job writes are never repeated, because `create_scan` tells
        us whether this call created the scan and only that call enqueues.

        So the writes are shielded from the request's deadline: once the first is sent, a
        Redis slow to answer gets them all (the request itself answers 503 in time), a
        retry with the same Idempotency-Key finds a scan that will run, and no admission
        is counted for a scan that was never created.
        """
        creating = asyncio.ensure_future(self._create_now(user_id, scan_id, order))
        creating.add_done_callback(_report_create)
        return await asyncio.shield(creating)

    async def _create_now(self, user_id: str, scan_id: str, order: Order) -> ScanView:
        await self._admit(user_id, scan_id)
        requested = ev.stamp(
            ScanRequested, user_id=user_id, strategies=order.names, params=order.params
        )
        entry_id = await self.store.create_scan(scan_id, requested)
        if entry_id is None:  # created by a twin request: read what it wrote
            view = await self.cache.get(scan_id)
            if view is None or not view.exists or view.user_id != user_id:
                raise ScanNotFound(scan_id)
            return view
        await self._enqueue(user_id, scan_id, order)
        # Fold what we wrote instead of reading it back: no round trip.
        entry = LogEntry(entry_id, "scan.requested", ev.encode(requested), event=requested)
        view = projection.fold_all(scan_id, [entry])
        return self.cache.offer(view)

    async def _admit(self, user_id: str, scan_id: str) -> None:
        """Count a new scan against its user's limits, or raise `QuotaExceeded`."""
        if self.quotas is None:
            return
        admission = await self.quotas.admit(user_id, scan_id)
        if admission.outcome == "rate":
            raise QuotaExceeded(
                f"You may start {self.quotas.scans_per_minute} scans a minute "
                "(SCANSTREAM_USER_SCANS_PER_MINUTE); retry shortly.",
                admission.retry_after_s,
            )
        if admission.outcome == "active":
            raise QuotaExceeded(
                f"You have {self.quotas.max_active} scans queued or running already "
                "(SCANSTREAM_USER_MAX_ACTIVE_SCANS); start more once some have ended.",
                admission.retry_after_s,
            )

    async def _enqueue(self, user_id: str, scan_id: str, order: Order) -> None:
        """List the scan for its user and queue one job per strategy: one round trip.

        Pair strategies are queued first (their work grows with the square of the
        universe, a series strategy's with its size): a scan ends sooner when its longest
        jobs start first, and while one worker runs them the others take the rest."""
        if not self._group_ready:
            await self.prepare()
        listing = self.index.listing(user_id, scan_id)
        names = sorted(order.names, key=lambda name: self.works.get(name) != "pairs")
        await self.jobs.enqueue(scan_id, user_id, names, priority=order.priority, listing=listing)

    def _resolve(self, requested: list[str] | None) -> list[str]:
        if requested is None:
            if not self.strategies:
                raise InvalidRequest("strategies: no strategies are available", field="strategies")
            return list(self.strategies)
        if not requested:
            raise InvalidRequest(
                "strategies: must not be empty (leave it out to run every strategy)",
                field="strategies",
            )
        seen: set[str] = set()
        for i, name in enumerate(requested):
            if name not in self.strategies:
                known = ", ".join(self.strategies[:30])
                raise InvalidRequest(
                    f"strategies[{i}]: unknown strategy {name[:100]!r} (available: {known})",
                    field=f"strategies[{i}]",
                )
            if name in seen:
                raise InvalidRequest(
                    f"strategies[{i}]: {name!r} is listed twice", field=f"strategies[{i}]"
                )
            seen.add(name)
        return list(requested)

    @staticmethod
    def _check_replay(view: ScanView, strategies: list[str] | None, params: dict[str, Any]) -> None:
        """A key reused with a different request is a client bug: say so (422)."""
        same = view.params == params and (strategies is None or list(view.strategies) == strategies)
        if not same:
            raise InvalidRequest(
                "Idempotency-Key: this key was already used with a different request",
                field="Idempotency-Key",
            )


def _report_create(task: asyncio.Future[ScanView]) -> None:
    """Log a creation whose writes failed: its request may have gone already (its deadline),
    and the scan then does not exist, or stays queued until its deadline (the reaper)."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, StoreUnavailable):
        log.warning("creating a scan failed half-way or late: %s", exc)
