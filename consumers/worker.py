"""The strategy consumer process: reads jobs from the consumer group and runs N at a time.

Small loops share one task group:
- read:      one reader per job partition, taking turns: XREADGROUP new jobs whenever
             slots are free (with the acknowledgements waiting, in one round trip);
- heartbeat: keep the claim on running jobs alive, stop runs whose claim was taken;
- reclaim:   take over jobs idle past `claim_idle_ms` (their worker died);
- watch:     stop runs whose scan has ended (cancelled, deadline), within ~0.2 s;
- ack:       batched acknowledgements that no read took along;
- peers:     whether other workers read jobs too (reads are paced then);
- reap:      end overdue scans, trim the job stream, drop gone consumers (consumers/reaper.py).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from consumers import metrics
from consumers.isolation import executor_for
from consumers.reaper import Reaper
from consumers.runner import JobRunner, Run
from scanstream import events as ev
from scanstream.errors import StoreUnavailable
from scanstream.settings import Settings
from scanstream.storage.connection import Storage
from scanstream.storage.jobs import GroupMissing, Job, split_job_id
from scanstream.strategies.api import Strategy

log = logging.getLogger("scanstream.worker")
WATCH_INTERVAL_S = 0.2
READ_BLOCK_MS = 1000
# When nearly every slot is busy, the read loop waits this long at most for a quarter of
# them to free up before it reads: one read, one pipelined batch of starts, of finishes
# and one XACK then serve several jobs instead of one each (a round trip costs the
# worker more CPU than a no-op job's own work). An idle worker reads at once.
READ_GATHER_S = 0.002
# How often a worker looks whether other workers read jobs too (`_peers_loop`).
PEERS_EVERY_S = 1.0
# Acknowledgements wait this long at most for a read to take them along (JobQueue.read)
# before they go on their own round trip.
ACK_GATHER_S = 0.005


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
        self.concurrency = max(1, concurrency)
        self.name = name or consumer_name()
        # Job reads block: they get a client of their own beside the hot pool.
        self.storage = Storage.connect(
            settings, max_connections=self.concurrency + 16, blocking_reads=True
        )
        self.store = self.storage.events
        self.jobs = self.storage.jobs
        self.claims = self.storage.claims(self.name)
        self.executor = executor_for(settings, market_factory, concurrency=self.concurrency)
        self.runner = JobRunner(
            store=self.store,
            settings=settings,
            strategies=strategies,
            executor=self.executor,
            worker_name=self.name,
            on_dead_letter=self._dead_letter,
            still_owned=self._still_owned,
        )
        self.reaper = Reaper(self.storage, settings, self.name)
        self.inflight: dict[str, Run] = {}
        self._reserved = 0  # slots asked for by reads still out (see _partition_reader)
        self._runs_ended = 0  # paces the reads (see _partition_reader)
        self._has_peers = True  # other workers read jobs too: pace (see _peers_loop)
        # The partition readers' turns at the free slots, first come, first served.
        self._turn = anyio.Lock(fast_acquire=True)
        # Set when a run ends, if anyone waits for that (`_run_end`); then dropped.
        self._run_ended: anyio.Event | None = None
        self._acks: list[tuple[str, str]] = []  # (job id, its user)
        self._acks_ready = anyio.Event()
        self._draining = False
        self.jobs_done = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        await self._ensure_group_with_retry()
        await self._check_eviction_policy()
        await self.executor.start()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._read_loop)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._reclaim_loop)
                tg.start_soon(self._watch_loop)
                tg.start_soon(self._ack_loop)
                tg.start_soon(self._peers_loop)
                tg.start_soon(self.reaper.run)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self.executor.aclose()
                await self._flush_acks()
                await self.storage.aclose()

    async def drain(self, grace_s: float) -> None:
        """Stop taking jobs; let running ones finish within `grace_s`; leave the rest pending
        (another worker reclaims them once they go idle)."""
        self._draining = True
        with anyio.move_on_after(grace_s):
            while self.inflight:
                await self._run_end()
        await self._flush_acks()
        self._tg.cancel_scope.cancel()

    # -- loops -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        async with anyio.create_task_group() as tg:
            for partition in range(self.jobs.partitions):
                tg.start_soon(self._partition_reader, partition)

    async def _partition_reader(self, partition: int) -> None:
        """Take jobs of one partition while slots are free.

        Every partition has a reader, so none waits behind another's backlog. The readers
        take turns at the free slots (`_turn`, first come, first served): in its turn a
        reader waits for slots and claims them, then passes the turn on as its read goes
        out. So every partition with work is read in turn, and a run that ends wakes one
        reader, not all of them.

        A reader whose partition had work waits, in its turn, for a quarter of the slots
        (READ_GATHER_S at most) and reads as many jobs as slots are free, reserving them
        while the read is out: one read, then one pipelined batch of starts and one of
        finishes, serve many jobs. Its read takes the acknowledgements waiting along
        (`_acks_for_read`). A reader whose partition was empty blocks for one job once a
        slot is free, reserving nothing: idle partitions hold no slot from busy ones. So
        a worker may start up to one job per idle partition beyond `--concurrency` when
        they all get one at once.

        Pacing, while other workers read jobs too (`_peers_loop`): a read takes one job
        more than twice the runs that ended since the reader's last read (`_paced`), none
        counted while it blocked. Slots that runs freed are refilled in one read, so a
        busy worker's batches stay full; slots that were free because the worker was
        idle are filled one job a read. So the workers woken by a burst of jobs take
        turns at it, and a worker whose strategies compute hard (its loop waits for the
        GIL) reads slower and takes fewer. Without pacing, the worker woken first took
        every job its slots allowed: one scan's 14 jobs landed 13 on one worker and 1 on
        the other, and a second worker could not shorten a scan of heavy strategies. A
        worker alone takes every job its slots allow at once: one read, not one a job.
        """
        backoff = _Backoff()
        gather = max(1, self.concurrency // 4)
        busy = False
        # After a failed read, first re-read this consumer's own pending jobs ("0"): a read
        # that Redis served but whose reply was lost (the connection broke, Redis restarted
        # from its AOF) delivered jobs to us that we never saw. Without this they would
        # wait a claim idle time for the reclaim loop.
        position = ">"
        ended_at_last_read = self._runs_ended
        while not self._draining:
            async with self._turn:
                count = await self._slots_for_read(busy or position != ">", gather)
                if position == ">" and self._has_peers:
                    count = _paced(count, self._runs_ended - ended_at_last_read)
                ended_at_last_read = self._runs_ended
                reserved = count if busy else 0
                self._reserved += reserved
            if count <= 0:
                continue
            acks = self._acks_for_read(partition) if busy and position == ">" else []
            try:
                delivered = await self.jobs.read(
                    partition,
                    self.name,
                    count,
                    position=position,
                    block_ms=READ_BLOCK_MS if position == ">" and not busy else None,
                    acks=acks,
                )
            except StoreUnavailable as exc:
                self._unsent_acks(acks)
                metrics.REDIS_ERRORS.labels("read").inc()
                position, busy = "0", False
                await backoff.wait(exc)
                continue
            except GroupMissing:  # Redis lost its data (no AOF): recreate the groups
                self._unsent_acks(acks)
                await self._ensure_group_with_retry()
                continue
            except BaseException:
                self._unsent_acks(acks)
                raise
            finally:
                self._reserved -= reserved
            if not busy:  # slots freed while it blocked were idle ones: no credit for them
                ended_at_last_read = self._runs_ended
            backoff.reset()
            for job_id, job in delivered:
                if job_id not in self.inflight:
                    self._start(job_id, job)
            if position != ">":  # page through our pending jobs, then back to new ones
                position = delivered[-1][0].partition("/")[2] if delivered else ">"
            busy = bool(delivered)

    async def _slots_for_read(self, many: bool, gather: int) -> int:
        """In a reader's turn: how many jobs its read may take (0: none, try again). With
        `many`, every free slot once `gather` are or READ_GATHER_S has passed with fewer;
        else one, once a slot is free."""
        if self._free() <= 0:
            await self._wait_for_free(1)
            if self._free() <= 0:
                return 0
        if many and self._free() < gather:
            await self._wait_for_free(gather, timeout_s=READ_GATHER_S)
        if self._draining:
            return 0
        return self._free() if many else 1

    def _start(self, job_id: str, job: Job | None) -> None:
        if job is None:
            metrics.UNUSABLE_JOBS.labels("no scan").inc()
            log.warning("job without a usable body acknowledged", extra={"job_id": job_id})
            self._ack(job_id)
            return
        self._start_job(job)

    async def _run(self, run: Run) -> None:
        ack = False
        try:
            # Every store call of a run waits for Redis (JobRunner.until_stored): a Redis
            # restart delays the job, it never leaves it for another worker to reclaim.
            ack = await self.runner.run_job(run)
        finally:
            self.inflight.pop(run.job.id, None)
            self._runs_ended += 1
            metrics.INFLIGHT.dec()
            if self._run_ended is not None:
                self._run_ended.set()
                self._run_ended = None
        if ack:
            self.jobs_done += 1
            self._ack(run.job.id, run.job.user)

    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_ms / 1000)
            ids = list(self.inflight)
            try:
                lost = await self.claims.refresh(ids)
            except StoreUnavailable:
                metrics.REDIS_ERRORS.labels("heartbeat").inc()
                continue
            for job_id in lost:
                run = self.inflight.get(job_id)
                if run is not None and run.stop_reason is None:
                    metrics.CLAIMS_LOST.inc()
                    extra: dict[str, Any] = {
                        "scan_id": run.job.scan_id,
                        "strategy": run.job.strategy,
                        "job_id": job_id,
                        "worker": self.name,
                    }
                    if run.attempt is not None:
                        extra["attempt"] = run.attempt
                    log.warning(
                        "claim lost to another worker; stopping without writing", extra=extra
                    )
                    run.stop("lost")

    async def _reclaim_loop(self) -> None:
        interval = max(0.05, self.settings.claim_idle_ms / 2000)
        while not self._draining:
            await anyio.sleep(interval)
            free = self._free()
            if free <= 0 or self._draining:
                continue
            try:
                jobs, dead = await self.claims.reclaim(self.settings.claim_idle_ms, free)
            except StoreUnavailable:
                metrics.REDIS_ERRORS.labels("reclaim").inc()
                continue
            for job_id in dead:
                metrics.UNUSABLE_JOBS.labels("no body").inc()
                log.warning(
                    "pending job without a usable body acknowledged", extra={"job_id": job_id}
                )
                self._ack(job_id)
            for job in jobs:
                metrics.RECLAIMS.inc()
                log.info(
                    "reclaimed a job from an idle worker (delivery %d)",
                    job.deliveries,
                    extra={
                        "scan_id": job.scan_id,
                        "strategy": job.strategy,
                        "job_id": job.id,
                    },
                )
                self._start_job(job)

    def _start_job(self, job: Job) -> None:
        if job.id in self.inflight:
            return
        run = Run(job)
        self.inflight[job.id] = run
        metrics.INFLIGHT.inc()
        self._tg.start_soon(self._run, run)

    async def _watch_loop(self) -> None:
        """Stop runs of scans that ended (cancelled, deadline), within WATCH_INTERVAL_S.

        Whether a scan ended is read from its fence (`terminal`), which the same script call
        that appends the terminal event writes: a hand-written entry that merely looks
        terminal at the stream's tail cannot stop a strategy, and a real end always does.
        """
        while True:
            await anyio.sleep(WATCH_INTERVAL_S)
            scans = sorted({run.job.scan_id for run in self.inflight.values()})
            if not scans:
                continue
            try:
                ended = await self.store.ended_scans(scans)
            except StoreUnavailable:
                metrics.REDIS_ERRORS.labels("watch").inc()
                continue
            for run in list(self.inflight.values()):
                if run.job.scan_id in ended and run.stop_reason is None:
                    run.stop("cancelled")

    async def _peers_loop(self) -> None:
        """Whether other workers read jobs (then reads are paced: see _partition_reader):
        each worker says it is there every PEERS_EVERY_S, and counts the others that
        did within the last few (a worker that stopped counts for that long)."""
        window_ms = int(3 * PEERS_EVERY_S * 1000)
        while True:
            try:
                others = await self.jobs.others_present(self.name, window_ms)
            except StoreUnavailable:
                metrics.REDIS_ERRORS.labels("peers").inc()
            else:
                if others is not None:
                    self._has_peers = others > 0
            await anyio.sleep(PEERS_EVERY_S)

    async def _still_owned(self, job: Job) -> bool:
        """An owner-checked claim refresh of one job (also resets its idle time)."""
        return job.id not in await self.claims.refresh([job.id])

    # -- acknowledgements and dead letters --------------------------------------------

    def _ack(self, job_id: str, user: str = "") -> None:
        self._acks.append((job_id, user))
        self._acks_ready.set()

    def _acks_for_read(self, partition: int) -> list[tuple[str, str]]:
        """The acknowledgements waiting that a read of `partition` takes along in its
        round trip (JobQueue.read): all of them on one Redis; on a cluster, the
        partition's own."""
        if self.jobs.one_node:
            every, self._acks = self._acks, []
            return every
        own: list[tuple[str, str]] = []
        others: list[tuple[str, str]] = []
        for pair in self._acks:
            (own if split_job_id(pair[0])[0] == partition else others).append(pair)
        self._acks = others
        return own

    def _unsent_acks(self, acks: list[tuple[str, str]]) -> None:
        """Acknowledgements whose round trip failed: sent again (twice is harmless)."""
        if acks:
            self._acks[:0] = acks
            self._acks_ready.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._acks_ready.wait()
            self._acks_ready = anyio.Event()
            # The next read takes them along when one goes out meanwhile (a busy worker
            # reads every few ms): one round trip for both. What none took goes now.
            await anyio.sleep(ACK_GATHER_S)
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        backoff = _Backoff()
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                await self.jobs.ack(batch)
            except BaseException as exc:
                self._unsent_acks(batch)
                if not isinstance(exc, StoreUnavailable):
                    raise
                metrics.REDIS_ERRORS.labels("ack").inc()
                await backoff.wait(exc)

    async def _dead_letter(self, job: Job, attempts: int, error: ev.ErrorInfo) -> None:
        await self.storage.dead_letters.add(
            {
                "job_id": job.id,
                "scan_id": job.scan_id,
                "strategy": job.strategy,
                "user": job.user,
                "attempts": attempts,
                "error_type": error.type,
                "error": error.message,
                "worker": self.name,
                "ts": ev.now_rfc3339(),
            },
        )
        log.error(
            "job dead-lettered after %d attempts",
            attempts,
            extra={
                "scan_id": job.scan_id,
                "strategy": job.strategy,
                "attempt": attempts,
                "job_id": job.id,
            },
        )

    # -- helpers -----------------------------------------------------------------------

    def _free(self) -> int:
        return self.concurrency - len(self.inflight) - self._reserved

    async def _run_end(self) -> None:
        """Until a run ends."""
        if self._run_ended is None:
            self._run_ended = anyio.Event()
        await self._run_ended.wait()

    async def _wait_for_free(self, wanted: int, timeout_s: float = 1.0) -> None:
        """Until `wanted` slots are free, `timeout_s` passes or the worker drains."""
        if self._free() >= wanted or self._draining:
            return
        with anyio.move_on_after(timeout_s):
            while self._free() < wanted and not self._draining:
                await self._run_end()

    async def _check_eviction_policy(self) -> None:
        try:
            policy = await self.storage.eviction_policy()
        except StoreUnavailable:
            return
        if policy not in (None, "noeviction"):
            log.warning(
                "Redis maxmemory-policy is %r: Redis may evict finished scans before "
                "their retention ends; use noeviction",
                policy,
                extra={"worker": self.name},
            )

    async def _ensure_group_with_retry(self) -> None:
        backoff = _Backoff()
        while True:
            try:
                await self.jobs.ensure_group()
                return
            except StoreUnavailable as exc:
                await backoff.wait(exc)


def _paced(free: int, runs_ended: int) -> int:
    """How many of `free` slots a read may fill, `runs_ended` runs after the reader's last
    read (see Worker._partition_reader)."""
    return min(free, 1 + 2 * runs_ended)


class _Backoff:
    """Exponential backoff for reconnecting: 0.1 s doubling to 1 s; no crash loop, and a
    restarted Redis is used again within a second."""

    def __init__(self) -> None:
        self.delay = 0.1

    async def wait(self, exc: BaseException) -> None:
        log.warning("Redis unavailable (%s); retrying in %.1fs", exc, self.delay)
        await anyio.sleep(self.delay)
        self.delay = min(1.0, self.delay * 2)

    def reset(self) -> None:
        self.delay = 0.1


async def serve(
    settings: Settings, concurrency: int, grace_s: float = 10.0, metrics_port: int | None = None
) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain gracefully."""
    import signal

    from scanstream.market import load_market
    from scanstream.strategies.registry import load_strategies

    strategies = load_strategies(settings.strategy_modules)

    def market_factory(params: Mapping[str, Any]) -> Any:
        return load_market(params, settings.csv)

    if metrics_port is not None:
        metrics.serve(metrics_port)
    worker = Worker(settings, strategies, market_factory, concurrency=concurrency)
    log.info(
        "worker %s started: %d strategies, concurrency %d%s",
        worker.name,
        len(strategies),
        concurrency,
        f", metrics on :{metrics_port}/metrics" if metrics_port is not None else "",
        extra={"worker": worker.name},
    )
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _signum in signals:
                log.info("signal received: draining (grace %.0fs)", grace_s)
                await worker.drain(grace_s)
                break
