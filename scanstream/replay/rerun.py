"""Re-run one strategy locally on a scan's recorded inputs and compare its findings.

Nothing is written anywhere: the strategy runs against `LocalContext`, an in-memory
`StrategyContext` that derives opportunity ids exactly as the worker's `RunContext` does
(`make_opportunity` with the market's fingerprint). Same findings: the code and the data
behave as recorded. Different ones with the same params: the code (or the data behind
the params, e.g. CSV files) changed since.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from scanstream import events as ev
from scanstream.events import ErrorInfo, Opportunity
from scanstream.replay.changes import plain
from scanstream.replay.diff import OpportunityDiff, compare_opportunities
from scanstream.replay.source import Log, ReplayError
from scanstream.settings import Settings
from scanstream.strategies.api import ContextBase, Strategy, StrategyStopped

MarketFactory = Callable[[Mapping[str, Any]], Any]


class LocalContext(ContextBase):
    """A `StrategyContext` that keeps everything in memory."""

    def __init__(
        self,
        *,
        scan_id: str,
        strategy: str,
        attempt: int,
        params: Mapping[str, Any],
        market_factory: MarketFactory,
    ) -> None:
        super().__init__(
            scan_id=scan_id,
            strategy=strategy,
            attempt=attempt,
            params=params,
            market_factory=market_factory,
        )
        self.found_list: list[Opportunity] = []
        self.progress_reports: list[tuple[float, str]] = []

    @property
    def cancelled(self) -> bool:
        return False

    async def progress(self, fraction: float, message: str = "") -> None:
        self.progress_reports.append((min(1.0, max(0.0, float(fraction))), message[:200]))

    async def found(self, opportunity: Opportunity) -> None:
        if self._first_sighting(opportunity):  # as RunContext: once per attempt
            self.found_list.append(opportunity)


@dataclass
class Recorded:
    attempt: int  # the attempt compared with: the last completed one, else the last one
    state: str  # how that attempt ended: completed / failed / unfinished
    opportunities: dict[str, Opportunity]
    error: ErrorInfo | None = None


@dataclass
class RerunReport:
    scan_id: str
    strategy: str
    recorded: Recorded
    found: list[Opportunity]
    opportunities: OpportunityDiff
    duration_ms: int
    error: ErrorInfo | None = None  # the local run raised
    progress_reports: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        ok_now = self.error is None
        ok_then = self.recorded.state == "completed"
        return ok_now == ok_then and self.opportunities.empty

    def to_json(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "strategy": self.strategy,
            "same": self.same,
            "recorded": {
                "attempt": self.recorded.attempt,
                "state": self.recorded.state,
                "opportunities": len(self.recorded.opportunities),
                "error": plain(self.recorded.error),
            },
            "rerun": {
                "opportunities": len(self.found),
                "duration_ms": self.duration_ms,
                "error": plain(self.error),
            },
            "opportunities": self.opportunities.to_json(),
            "notes": self.notes,
        }


def recorded_findings(log: Log, strategy: str) -> Recorded:
    """The findings of the strategy's last completed attempt (else of its last attempt)."""
    found: dict[int, dict[str, Opportunity]] = {}
    ends: dict[int, tuple[str, ErrorInfo | None]] = {}
    last = 0
    for entry in log.entries:
        event = entry.event
        if getattr(event, "strategy", None) != strategy:
            continue
        match event:
            case ev.StrategyStarted():
                last = max(last, event.attempt)
            case ev.OpportunityFound():
                found.setdefault(event.attempt, {})[event.opportunity.id] = event.opportunity
            case ev.StrategyCompleted():
                ends[event.attempt] = ("completed", None)
            case ev.StrategyFailed():
                ends[event.attempt] = ("failed", event.error)
    completed = [a for a, (state, _) in ends.items() if state == "completed"]
    attempt = max(completed) if completed else last
    state, error = ends.get(attempt, ("unfinished", None))
    return Recorded(attempt, state, found.get(attempt, {}), error)


def default_strategies(settings: Settings) -> dict[str, Strategy]:
    from scanstream.strategies.registry import load_strategies

    return load_strategies(settings.strategy_modules)


def default_market(params: Mapping[str, Any]) -> Any:
    from scanstream.market import load_market

    return load_market(params)  # the CSV settings from SCANSTREAM_CSV_*


async def rerun(
    log: Log,
    strategy: str,
    *,
    strategies: Mapping[str, Strategy] | None = None,
    market_factory: MarketFactory | None = None,
    settings: Settings | None = None,
    attempt: int | None = None,
) -> RerunReport:
    """Run `strategy` on the params of the log's scan.requested, and compare its findings
    with the recorded ones. `strategies` defaults to the built-ins plus
    `settings.strategy_modules`; `market_factory` to `load_market(params)`."""
    settings = settings or Settings.from_env()
    requested = log.requested
    if requested is None:
        raise ReplayError("the log has no readable scan.requested: its params are unknown")
    table = strategies if strategies is not None else default_strategies(settings)
    chosen = table.get(strategy)
    if chosen is None:
        raise ReplayError(f"unknown strategy {strategy!r}; loaded: {', '.join(sorted(table))}")
    recorded = recorded_findings(log, strategy)
    notes = []
    if strategy not in requested.strategies:
        notes.append(f"{strategy} is not part of this scan: every local finding is 'added'")
    if recorded.state != "completed":
        notes.append(
            f"no completed attempt was recorded: comparing with attempt "
            f"{recorded.attempt} ({recorded.state})"
        )
    ctx = LocalContext(
        scan_id=log.scan_id,
        strategy=strategy,
        attempt=attempt or max(1, recorded.attempt),
        params=requested.params,
        market_factory=market_factory or default_market,
    )
    error: ErrorInfo | None = None
    began = time.monotonic()
    timeout = chosen.timeout_s or settings.strategy_timeout_s
    try:
        with anyio.fail_after(timeout):
            await chosen.run(ctx)
    except TimeoutError:
        error = ErrorInfo(type="Timeout", message=f"exceeded its time limit of {timeout:g}s")
    except StrategyStopped as exc:  # pragma: no cover - a local context never stops one
        error = ErrorInfo(type="StrategyStopped", message=str(exc))
    except Exception as exc:  # the strategy's own failure is a result here
        error = ErrorInfo(type=type(exc).__name__, message=str(exc)[:500])
    took = int((time.monotonic() - began) * 1000)
    mine = {o.id: o for o in ctx.found_list}
    return RerunReport(
        scan_id=log.scan_id,
        strategy=strategy,
        recorded=recorded,
        found=ctx.found_list,
        opportunities=compare_opportunities(recorded.opportunities, mine),
        duration_ms=took,
        error=error,
        progress_reports=len(ctx.progress_reports),
        notes=notes,
    )
