"""Upkeep every worker runs, one worker per round: scan deadlines, job-stream trimming,
removing consumers that are gone.

- Deadlines: a scan still in the running set `scan_deadline_s` after its creation is ended
  with what it has (`EventStore.end_overdue_scan`), whether or not any worker is running
  its jobs: no scan stays `running` or `queued` for ever. The set is written when the
  scan is created (`EventStore.create_scan`), so no API change is needed to register it.
- The running set itself: a scan that ended leaves it by the next round
  (`RunningScans.forget_ended`), even when the removal that follows its end was lost.
- Trimming: acknowledged job entries are dropped (`Upkeep.trim`), never a pending or
  undelivered one. Scan streams are never trimmed: they expire whole, after they end.
- Consumers with no pending job that have not read for `consumer_expiry_s` are removed
  (`Upkeep.prune_consumers`); one that still owns a job never is.

A round takes the reaper lock for one interval (`Upkeep.take_round`), so however many
workers run, the sweep happens about once per interval. Every step is idempotent and
atomic on its own, so two workers sweeping at once (a lock that expired early) is
harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio

from consumers import metrics
from scanstream.errors import StoreUnavailable
from scanstream.settings import Settings
from scanstream.storage.connection import Storage

log = logging.getLogger("scanstream.reaper")
OVERDUE_BATCH = 100
MAX_BATCHES = 10  # per round; the rest waits for the next round
LAG_GAUGE_CAP = 1_000


@dataclass
class RoundReport:
    ended: list[tuple[str, str]]  # (scan id, terminal type) ended at the deadline
    forgotten: int  # running-set entries of scans that had already ended or expired
    trimmed: int
    pruned: list[str]


class Reaper:
    def __init__(self, storage: Storage, settings: Settings, name: str) -> None:
        self.store = storage.events
        self.running = storage.running
        self.upkeep = storage.upkeep
        self.jobs = storage.jobs
        self.job_info = storage.job_info
        self.settings = settings
        self.name = name

    async def run(self) -> None:
        """Forever: one round per `reap_interval_s` if this worker wins the round's lock."""
        while True:
            await anyio.sleep(self.settings.reap_interval_s)
            try:
                if await self._take_round():
                    await self.sweep()
            except StoreUnavailable:
                metrics.REDIS_ERRORS.labels("reaper").inc()

    async def _take_round(self) -> bool:
        ttl_ms = max(1, int(self.settings.reap_interval_s * 1000 * 0.9))
        return await self.upkeep.take_round(self.name, ttl_ms)

    async def sweep(self) -> RoundReport:
        """One round of every upkeep step."""
        ended, forgotten = await self.end_overdue_scans()
        forgotten += await self.running.forget_ended()
        await self.jobs.rebalance()
        trimmed = await self.upkeep.trim()
        if trimmed:
            metrics.TRIMMED.inc(trimmed)
        pruned = await self.upkeep.prune_consumers(int(self.settings.consumer_expiry_s * 1000))
        if pruned:
            metrics.CONSUMERS_PRUNED.inc(len(pruned))
            log.info(
                "removed %d gone consumers with no pending job: %s",
                len(pruned),
                ", ".join(pruned[:10]),
            )
        await self._gauges()
        return RoundReport(ended, forgotten, trimmed, pruned)

    async def end_overdue_scans(self) -> tuple[list[tuple[str, str]], int]:
        ended: list[tuple[str, str]] = []
        forgotten = 0
        for _ in range(MAX_BATCHES):
            overdue = await self.running.overdue(self.settings.scan_deadline_s, OVERDUE_BATCH)
            for scan_id in overdue:
                status, terminal = await self.store.end_overdue_scan(scan_id)
                if status == "ok":
                    ended.append((scan_id, terminal))
                    metrics.DEADLINE_ENDS.inc()
                    log.warning(
                        "scan ended at its deadline (%gs): %s",
                        self.settings.scan_deadline_s,
                        terminal,
                        extra={"scan_id": scan_id, "worker": self.name},
                    )
                else:
                    forgotten += 1
            if len(overdue) < OVERDUE_BATCH:
                break
        return ended, forgotten

    async def _gauges(self) -> None:
        info = await self.job_info.stream_info(lag_cap=LAG_GAUGE_CAP)
        metrics.PENDING.set(info.pending)
        if info.lag is not None:
            metrics.LAG.set(info.lag)
