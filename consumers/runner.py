"""Running one strategy job: attempts, timeouts, retries with backoff, dead letters.

Every write goes through the fenced store script, so a superseded attempt, a cancelled
scan or a finished strategy can never be written to. `run_job` returns whether the job
should be acknowledged: not when this worker lost it, since the new owner must keep it
pending until it is done.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from consumers.context import RunContext
from scanstream import events as ev
from scanstream.errors import StoreUnavailable
from scanstream.jobs import Job
from scanstream.settings import Settings
from scanstream.store import EventStore
from scanstream.strategies.api import Strategy, StrategyStopped

log = logging.getLogger("scanstream.worker")
MAX_BACKOFF_S = 30.0
_requested_decoder = msgspec.json.Decoder(ev.ScanRequested)


@dataclass
class Run:
    """One in-flight job, as the worker's heartbeat and cancel watcher see it."""

    job: Job
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    context: RunContext | None = None
    stop_reason: str | None = None  # "cancelled" (scan ended) or "lost" (claim taken)

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        if self.context is not None:
            self.context.stop_reason = self.stop_reason
        self.scope.cancel()


@dataclass
class JobRunner:
    store: EventStore
    settings: Settings
    strategies: Mapping[str, Strategy]
    market_factory: Callable[[Mapping[str, Any]], Any]
    worker_name: str
    on_dead_letter: Callable[[Job, int, ev.ErrorInfo], Awaitable[None]]
    on_event: Callable[[str, str], None] = lambda kind, strategy: None  # metrics hook

    async def run_job(self, run: Run) -> bool:
        """Run attempts until the strategy is terminal; True when the job may be acknowledged."""
        job = run.job
        while True:
            started = await self.store.start_strategy(job.scan_id, job.strategy, self.worker_name)
            if not started.ok:
                # ended / done / missing: nothing left to do for this job.
                return True
            verdict = await self._attempt(run, started.attempt, started.requested)
            if verdict is not None:
                return verdict

    async def _attempt(self, run: Run, attempt: int, requested_raw: bytes | None) -> bool | None:
        """One attempt. Returns ack/no-ack when the job is over, None to retry."""
        job = run.job
        extra = {"scan_id": job.scan_id, "strategy": job.strategy, "attempt": attempt}
        strategy = self.strategies.get(job.strategy)
        if strategy is None or requested_raw is None:
            problem = "unknown strategy" if strategy is None else "scan.requested is unreadable"
            error = ev.ErrorInfo(type="UnknownStrategy", message=f"{job.strategy}: {problem}")
            return await self._fail(run, attempt, error, final=True)
        params = _params_of(requested_raw)
        context = RunContext(
            self.store, scan_id=job.scan_id, strategy=job.strategy, attempt=attempt,
            params=params, market_factory=self.market_factory,
        )
        run.context = context
        if run.stop_reason:
            context.stop_reason = run.stop_reason
        timeout = strategy.timeout_s or self.settings.strategy_timeout_s
        run.scope = anyio.CancelScope()
        began = time.monotonic()
        log.info("strategy started", extra=extra)
        self.on_event("started", job.strategy)
        try:
            with run.scope:
                with anyio.fail_after(timeout):
                    await strategy.run(context)
                completed = ev.stamp(
                    ev.StrategyCompleted, strategy=job.strategy, attempt=attempt,
                    opportunities=context.found_count,
                    duration_ms=int((time.monotonic() - began) * 1000),
                )
                outcome = await self.store.finish_strategy(
                    job.scan_id, job.strategy, attempt, [*context.take_pending(), completed]
                )
                self.on_event("completed", job.strategy)
                log.info("strategy completed", extra=extra)
                return outcome.status != "stale"
        except StrategyStopped:
            pass
        except TimeoutError:
            error = ev.ErrorInfo(type="Timeout", message=f"exceeded its time limit of {timeout:g}s")
            return await self._fail(run, attempt, error, final=True)
        except StoreUnavailable:
            raise
        except Exception as exc:  # a strategy's own bug or bad data: retry, then dead-letter
            error = ev.ErrorInfo(type=type(exc).__name__, message=str(exc)[:500])
            final = attempt >= self.settings.max_attempts
            log.warning("strategy failed: %s", error.message, extra=extra,
                        exc_info=final)
            verdict = await self._fail(run, attempt, error, final=final)
            if final or verdict is False or run.stop_reason:
                return verdict
            run.scope = anyio.CancelScope()
            with run.scope:
                await anyio.sleep(self._backoff(attempt))
            return None if not run.stop_reason else run.stop_reason != "lost"
        # Stopped: the scan ended (acknowledge) or another worker owns the job (leave it).
        log.info("strategy stopped: %s", run.stop_reason or context.stop_reason, extra=extra)
        return (run.stop_reason or context.stop_reason) != "lost"

    async def _fail(self, run: Run, attempt: int, error: ev.ErrorInfo, *, final: bool) -> bool:
        job = run.job
        pending = run.context.take_pending() if run.context else []
        failed = ev.stamp(ev.StrategyFailed, strategy=job.strategy, attempt=attempt,
                          error=error, final=final)
        outcome = await self.store.finish_strategy(job.scan_id, job.strategy, attempt,
                                                   [*pending, failed])
        self.on_event("failed" if final else "retried", job.strategy)
        if outcome.status == "stale":
            return False
        if final and outcome.ok:
            await self.on_dead_letter(job, attempt, error)
        return True

    def _backoff(self, attempt: int) -> float:
        base = self.settings.retry_backoff_s * (2 ** (attempt - 1))
        return min(MAX_BACKOFF_S, base * random.uniform(0.5, 1.5))  # jitter spreads retries


def _params_of(requested_raw: bytes) -> Mapping[str, Any]:
    try:
        return _requested_decoder.decode(requested_raw).params
    except msgspec.MsgspecError:
        return {}
