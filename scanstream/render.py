"""The public JSON shapes of status and results, rendered from a `ScanView`.

The Structs double as the OpenAPI schemas, so the description cannot drift from the code.
"""

from __future__ import annotations

import msgspec

from scanstream.events import ErrorInfo, Opportunity
from scanstream.projection import ScanView, StrategyView


class StrategyStatus(msgspec.Struct, kw_only=True):
    name: str
    state: str
    attempts: int
    progress: float
    opportunities: int
    error: ErrorInfo | None
    started_at: str | None
    finished_at: str | None


class LogWarning(msgspec.Struct, kw_only=True):
    entry_id: str
    problem: str


class ScanStatus(msgspec.Struct, kw_only=True):
    scan_id: str
    user_id: str
    state: str
    created_at: str | None
    updated_at: str | None
    finished_at: str | None
    strategies_total: int
    strategies_completed: int
    strategies_failed: int
    opportunities_found: int
    progress: float
    last_event_id: str | None
    strategies: list[StrategyStatus]
    end_reason: str | None = None
    warnings_count: int = 0
    warnings: list[LogWarning] = []


class ScanResults(msgspec.Struct, kw_only=True):
    scan_id: str
    state: str
    complete: bool
    opportunities: list[Opportunity]
    last_event_id: str | None


def _strategy(s: StrategyView) -> StrategyStatus:
    return StrategyStatus(
        name=s.name,
        state=s.state,
        attempts=s.attempts,
        progress=round(s.progress, 4),
        opportunities=s.opportunities,
        error=s.error,
        started_at=s.started_at,
        finished_at=s.finished_at,
    )


def status_of(view: ScanView) -> ScanStatus:
    return ScanStatus(
        scan_id=view.scan_id,
        user_id=view.user_id or "",
        state=view.state,
        created_at=view.created_at,
        updated_at=view.updated_at,
        finished_at=view.finished_at,
        strategies_total=len(view.strategies),
        strategies_completed=view.strategies_completed,
        strategies_failed=view.strategies_failed,
        opportunities_found=len(view.opportunities),
        progress=view.progress,
        last_event_id=view.last_event_id,
        strategies=[_strategy(s) for s in view.strategies.values()],
        end_reason=view.end_reason,
        warnings_count=view.warnings_count,
        warnings=[LogWarning(entry_id=w.entry_id, problem=w.problem) for w in view.warnings],
    )


def results_of(view: ScanView) -> ScanResults:
    return ScanResults(
        scan_id=view.scan_id,
        state=view.state,
        complete=view.terminal,
        opportunities=view.ranked_opportunities(),
        last_event_id=view.last_event_id,
    )
