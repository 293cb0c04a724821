"""Running one strategy job: attempts, timeouts, retries with backoff, dead letters.

Every write goes through the fenced store script, so a superseded attempt, a cancelled
scan or a finished strategy can never be written to. `run_job` returns whether the job
should be acknowledged: not when this worker lost it, since the new owner must keep it
pending until it is done.

Attempt numbers are allocated by the scan's fence and count every attempt, including
those whose worker died or lost the job (froze, or stalled past the claim idle time).
A strategy that raises fails for good at attempt `max_attempts`. A job delivered again
once `LOST_ATTEMPTS_FACTOR * max_attempts` attempts have started is failed for good
without running (`WorkerLost`): a strategy that kills or freezes its worker each time
would otherwise be retried for ever, taking workers down with it. The cap is wider than
`max_attempts` so that a healthy strategy whose workers were merely slow or restarted a
few times is not failed for it.

A store error never abandons a job: each write is sent again, with the same write token
(so a write that did land is not applied twice), until Redis answers; the job stays with
this worker meanwhile, and the heartbeat keeps its claim once Redis is back.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import msgspec

from consumers import metrics
from consumers.context import Pairs
from consumers.isolation import AttemptResult, AttemptSpec, Executor
from scanstream import events as ev
from scanstream.errors import StoreUnavailable
from scanstream.settings import Settings
from scanstream.storage.events import EventStore, WriteOutcome, new_write_token
from scanstream.storage.jobs import Job
from scanstream.strategies.api import Strategy

log = logging.getLogger("scanstream.worker")
MAX_BACKOFF_S = 30.0
LOST_ATTEMPTS_FACTOR = 2
# Re-sending a write while Redis is unreachable: 50 ms doubling to this, so a job goes on
# within about this long of Redis answering again.
STORE_RETRY_MAX_S = 0.5
_requested_decoder = msgspec.json.Decoder(ev.ScanRequested)
T = TypeVar("T")


@dataclass
class Run:
    """One in-flight job, as the worker's heartbeat and cancel watcher see it."""

    job: Job
    # The current attempt's (or retry backoff's) scope; each attempt checks `stop_reason`
    # when it opens its scope, so a stop that comes before any scope still stops it.
    scope: anyio.CancelScope | None = None
    attempt: int | None = None
    stop_reason: str | None = None  # "cancelled" (scan ended) or "lost" (claim taken)

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        if self.scope is not None:
            self.scope.cancel()


async def _always_owned(job: Job) -> bool:
    return True


@dataclass
class JobRunner:
    store: EventStore
    settings: Settings
    strategies: Mapping[str, Strategy]
    executor: Executor
    worker_name: str
    on_dead_letter: Callable[[Job, int, ev.ErrorInfo], Awaitable[None]]
    # Whether this worker still owns the job (an owner-checked claim refresh). Asked
    # before each retry: a worker frozen in its backoff sleep, whose job was taken over
    # meanwhile, must not start a new attempt that would supersede the new owner's.
    still_owned: Callable[[Job], Awaitable[bool]] = _always_owned
    labels: metrics.Labels = field(default_factory=lambda: metrics.Labels(()))

    def __post_init__(self) -> None:
        if not self.labels.known:
            self.labels = metrics.Labels(self.strategies)

    async def run_job(self, run: Run) -> bool:
        """Run attempts until the strategy is terminal; True when the job may be acknowledged."""
        job = run.job
        first = True
        while True:
            if not first and not await self.until_stored(run, lambda: self.still_owned(job)):
                self._log_stop(run, "lost", {"scan_id": job.scan_id, "strategy": job.strategy})
                return False
            first = False
            started = await self._write(run, "start", 0, [])
            if not started.ok:
                # ended / done / missing: nothing left to do for this job.
                metrics.JOBS.labels("skipped").inc()
                log.info("job needs no run: %s", started.status, extra=self._extra(job, None))
                return True
            if started.attempt > LOST_ATTEMPTS_FACTOR * self.settings.max_attempts:
                error = ev.ErrorInfo(
                    type="WorkerLost",
                    message=f"{started.attempt - 1} attempts started and never finished or "
                    "failed; their workers died or froze",
                )
                log.error(
                    "strategy abandoned after lost attempts",
                    extra=self._extra(job, started.attempt),
                )
                return await self._fail(run, started.attempt, error, [], final=True)
            verdict = await self._attempt(run, started.attempt, started.requested)
            if verdict is not None:
                return verdict

    async def _attempt(self, run: Run, attempt: int, requested_raw: bytes | None) -> bool | None:
        """One attempt. Returns ack/no-ack when the job is over, None to retry."""
        job = run.job
        run.attempt = attempt
        extra = self._extra(job, attempt)
        strategy = self.strategies.get(job.strategy)
        params = _params_of(requested_raw) if requested_raw is not None else None
        if strategy is None or params is None:
            if params is None:
                metrics.UNREADABLE_REQUESTS.inc()
            problem = "unknown strategy" if strategy is None else "scan.requested is unreadable"
            error = ev.ErrorInfo(
                type="UnknownStrategy" if strategy is None else "UnreadableScan",
                message=f"{job.strategy}: {problem}",
            )
            log.error("strategy cannot run: %s", problem, extra=extra)
            return await self._fail(run, attempt, error, [], final=True)
        spec = AttemptSpec(
            job.scan_id, job.strategy, attempt, params, self.settings.max_findings_per_strategy
        )

        async def write(pairs: Pairs) -> str:
            return (await self._write(run, "append", attempt, pairs)).status

        timeout = strategy.timeout_s or self.settings.strategy_timeout_s
        # One scope per attempt serves both the stop (run.stop cancels it) and the time
        # limit (its deadline, lifted before the finishing write). Cancelling it stops the
        # strategy wherever it runs (see consumers/isolation).
        deadline = anyio.current_time() + timeout
        scope = run.scope = anyio.CancelScope(deadline=deadline)
        if run.stop_reason:  # stopped while between attempts
            scope.cancel()
        label = self.labels(job.strategy)
        began = time.monotonic()
        log.debug("strategy started", extra=extra)  # the stream has it: strategy.started
        metrics.ATTEMPTS.labels(label).inc()
        with scope:
            result = await self.executor.run(strategy, spec, write)
            if scope.cancel_called and run.stop_reason is None:
                result.error = result.error or _timeout(timeout)  # it ended only as time ran out
            scope.deadline = math.inf  # the limit is the strategy's, not the write's
            if result.stopped:
                run.stop_reason = run.stop_reason or result.stopped
            elif result.error is not None:
                return await self._failed(run, attempt, result.error, result.pending, began)
            else:
                return await self._completed(run, attempt, result, began)
        if scope.cancelled_caught and run.stop_reason is None:
            return await self._failed(run, attempt, _timeout(timeout), [], began)
        # Stopped: the scan ended (acknowledge) or another worker owns the job (leave it).
        reason = run.stop_reason or "cancelled"
        metrics.DURATION.labels(label, "stopped").observe(time.monotonic() - began)
        self._log_stop(run, reason, extra)
        return reason != "lost"

    async def _completed(self, run: Run, attempt: int, result: AttemptResult, began: float) -> bool:
        job = run.job
        extra = self._extra(job, attempt)
        completed = ev.stamp(
            ev.StrategyCompleted,
            strategy=job.strategy,
            attempt=attempt,
            opportunities=result.found_count,
            duration_ms=int((time.monotonic() - began) * 1000),
            findings_dropped=result.findings_dropped,
        )
        outcome = await self._write(
            run, "finish", attempt, [*result.pending, *ev.pairs([completed])]
        )
        metrics.DURATION.labels(self.labels(job.strategy), "completed").observe(
            time.monotonic() - began
        )
        if outcome.status == "stale":
            self._log_stop(run, "lost", extra)
            return False
        if not outcome.ok:
            self._log_stop(run, "cancelled" if outcome.status == "ended" else "done", extra)
            return True
        metrics.JOBS.labels("completed").inc()
        if log.isEnabledFor(logging.DEBUG):  # per job; the scan's log records it
            ended = f", scan ended {outcome.terminal}" if outcome.terminal else ""
            log.debug(
                "strategy completed: %d opportunities%s", result.found_count, ended, extra=extra
            )
        return True

    async def _failed(
        self, run: Run, attempt: int, error: ev.ErrorInfo, pending: Pairs, began: float
    ) -> bool | None:
        """A failed attempt: time limit (final), or an error (retried, then dead-lettered)."""
        job = run.job
        extra = self._extra(job, attempt)
        label = self.labels(job.strategy)
        if error.type == "Timeout":
            metrics.TIMEOUTS.labels(label).inc()
            metrics.DURATION.labels(label, "timeout").observe(time.monotonic() - began)
            log.warning("strategy timed out: %s", error.message, extra=extra)
            return await self._fail(run, attempt, error, pending, final=True)
        metrics.DURATION.labels(label, "failed").observe(time.monotonic() - began)
        final = attempt >= self.settings.max_attempts
        log.warning(
            "strategy failed%s: %s: %s",
            "" if final else ", will retry",
            error.type,
            error.message,
            extra=extra,
        )
        verdict = await self._fail(run, attempt, error, pending, final=final)
        if final or verdict is False or run.stop_reason:
            return verdict
        run.scope = anyio.CancelScope()
        with run.scope:
            await anyio.sleep(self._backoff(attempt))
        if run.stop_reason:
            self._log_stop(run, run.stop_reason, extra)
            return run.stop_reason != "lost"
        return None

    async def _fail(
        self, run: Run, attempt: int, error: ev.ErrorInfo, pending: Pairs, *, final: bool
    ) -> bool:
        job = run.job
        failed = ev.stamp(
            ev.StrategyFailed, strategy=job.strategy, attempt=attempt, error=error, final=final
        )
        outcome = await self._write(run, "finish", attempt, [*pending, *ev.pairs([failed])])
        if outcome.status == "stale":
            self._log_stop(run, "lost", self._extra(job, attempt))
            return False
        if not outcome.ok:
            return True
        if final:
            metrics.JOBS.labels("failed").inc()
            await self.until_stored(run, lambda: self.on_dead_letter(job, attempt, error))
            metrics.DEAD_LETTERS.labels(self.labels(job.strategy)).inc()
        else:
            metrics.RETRIES.labels(self.labels(job.strategy)).inc()
        return True

    # -- writes that outlive a Redis restart --------------------------------------------

    async def _write(self, run: Run, mode: str, attempt: int, pairs: Pairs) -> WriteOutcome:
        """One fenced write of this job, re-sent with its token until Redis answers."""
        job = run.job
        token = new_write_token()
        if mode == "start":
            return await self.until_stored(
                run,
                lambda: self.store.start_strategy(
                    job.scan_id, job.strategy, self.worker_name, token=token
                ),
            )
        return await self.until_stored(
            run,
            lambda: self.store.write_strategy(
                job.scan_id, mode, job.strategy, attempt, pairs, token=token
            ),
        )

    async def until_stored(self, run: Run, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, again after each `StoreUnavailable`, until Redis answers.

        The job is not given up: its claim stays with this worker (no other worker can
        take it while Redis is down, and the heartbeat refreshes it once Redis is back),
        so it goes on within `STORE_RETRY_MAX_S` of Redis answering instead of waiting a
        claim idle time for another worker to reclaim it.
        """
        delay = 0.05
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                metrics.STORE_WAITS.inc()
                if delay == 0.05:
                    log.warning(
                        "Redis unavailable while running a job; it stays here and goes on "
                        "once Redis answers: %s",
                        exc,
                        extra=self._extra(run.job, run.attempt),
                    )
                await anyio.sleep(delay)
                delay = min(STORE_RETRY_MAX_S, delay * 2)

    def _backoff(self, attempt: int) -> float:
        base = self.settings.retry_backoff_s * (2 ** (attempt - 1))
        return min(MAX_BACKOFF_S, base * random.uniform(0.5, 1.5))  # jitter spreads retries

    def _extra(self, job: Job, attempt: int | None) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "scan_id": job.scan_id,
            "strategy": job.strategy,
            "job_id": job.id,
            "worker": self.worker_name,
        }
        if attempt is not None:
            extra["attempt"] = attempt
        return extra

    @staticmethod
    def _log_stop(run: Run, reason: str, extra: Mapping[str, Any]) -> None:
        metrics.JOBS.labels("lost" if reason == "lost" else "stopped").inc()
        if reason == "lost":
            log.warning(
                "strategy stopped: lost (another worker owns the job); nothing written",
                extra=dict(extra),
            )
        else:
            log.info("strategy stopped: %s", reason, extra=dict(extra))


def _timeout(timeout_s: float) -> ev.ErrorInfo:
    return ev.ErrorInfo(type="Timeout", message=f"exceeded its time limit of {timeout_s:g}s")


def _params_of(requested_raw: bytes) -> Mapping[str, Any] | None:
    try:
        return _requested_decoder.decode(requested_raw).params
    except msgspec.MsgspecError:
        return None
