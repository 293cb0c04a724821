"""The strategy consumer process: reads jobs from the consumer group and runs N at a time.

Four small loops share one task group:
- read:      XREADGROUP new jobs whenever a slot is free;
- heartbeat: keep the claim on running jobs alive, stop runs whose claim was taken;
- reclaim:   take over jobs idle past `claim_idle_ms` (their worker died);
- watch:     stop runs whose scan has ended (learned from the scan's stream), within ~0.2 s.
Acknowledgements are batched by a fifth loop.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from consumers.leases import Leases, job_from_entry
from consumers.runner import JobRunner, Run
from scanstream import events as ev
from scanstream.errors import StoreUnavailable
from scanstream.jobs import Job, ensure_group
from scanstream.keys import JOB_GROUP, Keys
from scanstream.redis_conn import client
from scanstream.settings import Settings
from scanstream.store import REDIS_FAULTS, EventStore, store_errors
from scanstream.strategies.api import Strategy

log = logging.getLogger("scanstream.worker")
WATCH_INTERVAL_S = 0.2
READ_BLOCK_MS = 1000
DEAD_LETTER_MAXLEN = 100_000


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        settings: Settings,
        strategies: Mapping[str, Strategy],
        market_factory: Callable[[Mapping[str, Any]], Any],
        *,
        concurrency: int = 8,
        name: str | None = None,
    ) -> None:
        if not settings.redis_url:
            raise ValueError("the worker needs settings.redis_url")
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.concurrency = max(1, concurrency)
        self.name = name or consumer_name()
        self.redis: Redis = client(settings.redis_url, max_connections=self.concurrency + 16)
        self.blocking: Redis = client(settings.redis_url, max_connections=2)
        self.store = EventStore(self.redis, self.keys, retention_s=settings.retention_s)
        self.leases = Leases(self.redis, self.keys, self.name)
        self.runner = JobRunner(
            store=self.store, settings=settings, strategies=strategies,
            market_factory=market_factory, worker_name=self.name,
            on_dead_letter=self._dead_letter,
        )
        self.inflight: dict[str, Run] = {}
        self._slot_freed = anyio.Event()
        self._acks: list[str] = []
        self._acks_ready = anyio.Event()
        self._draining = False
        self.jobs_done = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        await self._ensure_group_with_retry()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._read_loop)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._reclaim_loop)
                tg.start_soon(self._watch_loop)
                tg.start_soon(self._ack_loop)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self._flush_acks()
                await self.redis.aclose()
                await self.blocking.aclose()

    async def drain(self, grace_s: float) -> None:
        """Stop taking jobs; let running ones finish within `grace_s`; leave the rest pending
        (another worker reclaims them once they go idle)."""
        self._draining = True
        with anyio.move_on_after(grace_s):
            while self.inflight:
                await anyio.sleep(0.05)
        await self._flush_acks()
        self._tg.cancel_scope.cancel()

    # -- loops -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        backoff = _Backoff()
        while not self._draining:
            free = self.concurrency - len(self.inflight)
            if free <= 0:
                await self._wait_for_slot()
                continue
            try:
                async with store_errors():
                    reply = await self.blocking.xreadgroup(
                        JOB_GROUP, self.name, {self.keys.jobs: ">"}, count=free, block=READ_BLOCK_MS,
                    )
            except StoreUnavailable as exc:
                await backoff.wait(exc)
                continue
            except redis_errors.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost its data (no AOF): recreate the group
                    await self._ensure_group_with_retry()
                    continue
                raise
            backoff.reset()
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    self._start(entry_id, fields)

    def _start(self, entry_id: bytes | str, fields: dict[bytes, bytes] | None, deliveries: int = 1) -> None:
        job = job_from_entry(entry_id, fields, deliveries)
        if job is None:
            log.warning("job without a usable body acknowledged", extra={"job_id": str(entry_id)})
            self._ack(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
            return
        self._start_job(job)

    async def _run(self, run: Run) -> None:
        ack = False
        try:
            ack = await self.runner.run_job(run)
        except (StoreUnavailable, *REDIS_FAULTS) as exc:
            # Leave the job pending: it is reclaimed once Redis is back and it goes idle.
            log.warning("store unavailable while running a job: %s", exc,
                        extra={"scan_id": run.job.scan_id, "strategy": run.job.strategy})
        finally:
            self.inflight.pop(run.job.entry_id, None)
            self._slot_freed.set()
        if ack:
            self.jobs_done += 1
            self._ack(run.job.entry_id)

    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_ms / 1000)
            ids = list(self.inflight)
            try:
                lost = await self.leases.refresh(ids)
            except StoreUnavailable:
                continue
            for entry_id in lost:
                run = self.inflight.get(entry_id)
                if run is not None:
                    log.warning("claim lost to another worker; stopping without writing",
                                extra={"scan_id": run.job.scan_id, "strategy": run.job.strategy})
                    run.stop("lost")

    async def _reclaim_loop(self) -> None:
        interval = max(0.05, self.settings.claim_idle_ms / 2000)
        while not self._draining:
            await anyio.sleep(interval)
            free = self.concurrency - len(self.inflight)
            if free <= 0 or self._draining:
                continue
            try:
                jobs, dead = await self.leases.reclaim(self.settings.claim_idle_ms, free)
            except StoreUnavailable:
                continue
            for entry_id in dead:
                self._ack(entry_id)
            for job in jobs:
                log.info("reclaimed a job from an idle worker",
                         extra={"scan_id": job.scan_id, "strategy": job.strategy, "job_id": job.entry_id})
                self._start_job(job)

    def _start_job(self, job: Job) -> None:
        if job.entry_id in self.inflight:
            return
        run = Run(job)
        self.inflight[job.entry_id] = run
        self._tg.start_soon(self._run, run)

    async def _watch_loop(self) -> None:
        """Stop runs of scans that ended (cancelled, deadline): learned from the stream's tail."""
        while True:
            await anyio.sleep(WATCH_INTERVAL_S)
            scans = {run.job.scan_id for run in self.inflight.values()}
            if not scans:
                continue
            try:
                ended = await self._ended_scans(sorted(scans))
            except StoreUnavailable:
                continue
            for run in list(self.inflight.values()):
                if run.job.scan_id in ended:
                    run.stop("cancelled")

    async def _ended_scans(self, scan_ids: list[str]) -> set[str]:
        async with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for scan_id in scan_ids:
                pipe.xrevrange(self.keys.events(scan_id), "+", "-", count=1)
            tails = await pipe.execute()
        ended = set()
        for scan_id, tail in zip(scan_ids, tails, strict=True):
            if not tail or tail[0][1].get(b"type", b"").decode() in ev.TERMINAL_TYPES:
                ended.add(scan_id)
        return ended

    # -- acknowledgements and dead letters --------------------------------------------

    def _ack(self, entry_id: str) -> None:
        self._acks.append(entry_id)
        self._acks_ready.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._acks_ready.wait()
            self._acks_ready = anyio.Event()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        backoff = _Backoff()
        while self._acks:
            batch = self._acks[:]
            try:
                async with store_errors():
                    await self.redis.xack(self.keys.jobs, JOB_GROUP, *batch)
            except StoreUnavailable as exc:
                await backoff.wait(exc)
                continue
            del self._acks[: len(batch)]

    async def _dead_letter(self, job: Job, attempts: int, error: ev.ErrorInfo) -> None:
        async with store_errors():
            await self.redis.xadd(self.keys.dead_letters, {
                "job_id": job.entry_id, "scan_id": job.scan_id, "strategy": job.strategy,
                "attempts": attempts, "error_type": error.type, "error": error.message,
                "worker": self.name, "ts": ev.now_rfc3339(),
            }, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        log.error("job dead-lettered after %d attempts", attempts,
                  extra={"scan_id": job.scan_id, "strategy": job.strategy, "job_id": job.entry_id})

    # -- helpers -----------------------------------------------------------------------

    async def _wait_for_slot(self) -> None:
        self._slot_freed = anyio.Event()
        if self.concurrency - len(self.inflight) <= 0:
            with anyio.move_on_after(1.0):
                await self._slot_freed.wait()

    async def _ensure_group_with_retry(self) -> None:
        backoff = _Backoff()
        while True:
            try:
                await ensure_group(self.redis, self.keys)
                return
            except StoreUnavailable as exc:
                await backoff.wait(exc)


class _Backoff:
    """Exponential backoff for reconnecting: 0.1 s doubling to 2 s; no crash loop."""

    def __init__(self) -> None:
        self.delay = 0.1

    async def wait(self, exc: BaseException) -> None:
        log.warning("Redis unavailable (%s); retrying in %.1fs", exc, self.delay)
        await anyio.sleep(self.delay)
        self.delay = min(2.0, self.delay * 2)

    def reset(self) -> None:
        self.delay = 0.1


async def serve(settings: Settings, concurrency: int, grace_s: float = 10.0) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain gracefully."""
    import signal

    from scanstream.market import market_for, parse_params
    from scanstream.strategies.registry import load_strategies

    strategies = load_strategies(settings.strategy_modules)

    def market_factory(params: Mapping[str, Any]) -> Any:
        return market_for(parse_params(dict(params)))

    worker = Worker(settings, strategies, market_factory, concurrency=concurrency)
    log.info("worker %s started: %d strategies, concurrency %d", worker.name,
             len(strategies), concurrency)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _signum in signals:
                log.info("signal received: draining (grace %.0fs)", grace_s)
                await worker.drain(grace_s)
                break
