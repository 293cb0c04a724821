"""One attempt of a strategy, wherever it runs, reduced to what the runner writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consumers.context import Pairs, RunContext, WriteFn
from scanstream import events as ev
from scanstream.strategies.api import Strategy, StrategyStopped

MAX_ERROR_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    scan_id: str
    strategy: str
    attempt: int
    params: Mapping[str, Any]
    max_findings: int = 0  # findings one attempt may write (0: no cap)


@dataclass(slots=True)
class AttemptResult:
    """`pending`: events not written yet (they go with the final event); `error`: the
    strategy raised; `stopped`: a write was refused ("cancelled": the scan ended, "lost":
    another attempt owns the strategy), so nothing more may be written."""

    pending: Pairs = field(default_factory=list)
    found_count: int = 0
    error: ev.ErrorInfo | None = None
    stopped: str | None = None
    findings_dropped: int = 0


def context_for(
    spec: AttemptSpec, write: WriteFn, market_factory: Callable[[Mapping[str, Any]], Any]
) -> RunContext:
    """The strategy's context for this attempt, writing through `write`."""
    return RunContext(
        write,
        scan_id=spec.scan_id,
        strategy=spec.strategy,
        attempt=spec.attempt,
        params=spec.params,
        market_factory=market_factory,
        max_findings=spec.max_findings,
    )


def error_info(exc: BaseException) -> ev.ErrorInfo:
    return ev.ErrorInfo(type=type(exc).__name__, message=str(exc)[:MAX_ERROR_MESSAGE])


async def run_attempt(strategy: Strategy, context: RunContext) -> AttemptResult:
    """Run the strategy to its end and say how it ended; never raises an `Exception`."""
    try:
        await strategy.run(context)
    except StrategyStopped:
        return AttemptResult(
            found_count=context.found_count, stopped=context.stop_reason or "cancelled"
        )
    except Exception as exc:  # a strategy's own bug or bad data: the runner retries
        return AttemptResult(
            context.take_pending(),
            context.found_count,
            error=error_info(exc),
            findings_dropped=context.findings_dropped,
        )
    return AttemptResult(
        context.take_pending(), context.found_count, findings_dropped=context.findings_dropped
    )
