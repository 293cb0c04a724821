"""The scan projection: a pure fold of log entries into what status and results show.

`fold(view, entries)` never mutates its input and never touches I/O, so the API, the
SSE stream, the replay tool and the tests all share it, and hypothesis can drive it
with any duplication or split of a log.

Idempotence rules:
- an `event_id` seen before changes nothing (re-delivered writes);
- an opportunity id seen before is not counted again (re-runs after a crash);
- an event from an attempt older than the strategy's latest changes nothing;
- a terminal strategy stays terminal; nothing after the scan's terminal event counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from scanstream.events import (
    ErrorInfo,
    LogEntry,
    Opportunity,
    OpportunityFound,
    ScanCancelled,
    ScanCancelRequested,
    ScanCompleted,
    ScanEnded,
    ScanFailed,
    ScanRequested,
    StrategyCompleted,
    StrategyFailed,
    StrategyProgress,
    StrategyStarted,
)

ScanState = Literal["queued", "running", "completed", "failed", "cancelled"]
StrategyState = Literal["pending", "running", "completed", "failed", "cancelled"]
TERMINAL_SCAN_STATES = frozenset({"completed", "failed", "cancelled"})
TERMINAL_STRATEGY_STATES = frozenset({"completed", "failed", "cancelled"})
MAX_WARNINGS_KEPT = 20
StrategyEvent = (
    StrategyStarted | StrategyProgress | OpportunityFound | StrategyCompleted | StrategyFailed
)


@dataclass
class StrategyView:
    name: str
    state: StrategyState = "pending"
    attempts: int = 0
    progress: float = 0.0
    opportunities: int = 0
    error: ErrorInfo | None = None
    started_at: str | None = None
    finished_at: str | None = None
    message: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STRATEGY_STATES


@dataclass
class Warning:
    entry_id: str
    problem: str


@dataclass
class ScanView:
    scan_id: str
    user_id: str | None = None
    state: ScanState = "queued"
    created_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    params: dict[str, object] = field(default_factory=dict)
    strategies: dict[str, StrategyView] = field(default_factory=dict)
    opportunities: dict[str, Opportunity] = field(default_factory=dict)
    cancel_requested: bool = False
    end_reason: str | None = None
    last_event_id: str | None = None
    events_folded: int = 0
    log_bytes: int = 0  # the event data folded in: what the view's size grows with
    seen_event_ids: set[str] = field(default_factory=set)
    warnings: list[Warning] = field(default_factory=list)
    warnings_count: int = 0

    @property
    def exists(self) -> bool:
        """A log without a readable `scan.requested` is no scan anyone can see."""
        return self.user_id is not None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_SCAN_STATES

    @property
    def strategies_completed(self) -> int:
        return sum(1 for s in self.strategies.values() if s.state == "completed")

    @property
    def strategies_failed(self) -> int:
        return sum(1 for s in self.strategies.values() if s.state == "failed")

    @property
    def progress(self) -> float:
        if self.terminal:
            return 1.0
        if not self.strategies:
            return 0.0
        done = sum(1.0 if s.terminal else s.progress for s in self.strategies.values())
        return round(done / len(self.strategies), 4)

    def ranked_opportunities(self) -> list[Opportunity]:
        """Best score first; ties broken by id so every worker answers the same order."""
        return sorted(self.opportunities.values(), key=lambda o: (-o.score, o.id))


def empty(scan_id: str) -> ScanView:
    return ScanView(scan_id=scan_id)


def fold(view: ScanView, entries: Iterable[LogEntry]) -> ScanView:
    """A new view with `entries` applied in order; `view` is left untouched."""
    out = _copy(view)
    for entry in entries:
        _apply(out, entry)
    return out


def _copy(view: ScanView) -> ScanView:
    # Cheaper than deepcopy: opportunities and errors are frozen and can be shared.
    return dataclasses.replace(
        view,
        params=dict(view.params),
        strategies={k: dataclasses.replace(s) for k, s in view.strategies.items()},
        opportunities=dict(view.opportunities),
        seen_event_ids=set(view.seen_event_ids),
        warnings=list(view.warnings),
    )


def fold_all(scan_id: str, entries: Iterable[LogEntry]) -> ScanView:
    return fold(empty(scan_id), entries)


def _warn(view: ScanView, entry: LogEntry, problem: str) -> None:
    view.warnings_count += 1
    if len(view.warnings) < MAX_WARNINGS_KEPT:
        view.warnings.append(Warning(entry.id, problem))


def _apply(view: ScanView, entry: LogEntry) -> None:
    view.last_event_id = entry.id
    view.log_bytes += len(entry.data)
    event = entry.event
    if event is None:
        _warn(view, entry, entry.problem or "unreadable entry")
        return
    seen = view.seen_event_ids
    if event.event_id in seen:
        return
    seen.add(event.event_id)
    if view.state in TERMINAL_SCAN_STATES:
        _warn(view, entry, f"{entry.type} after the scan ended")
        return
    apply = _APPLY.get(type(event))
    if apply is not _requested and view.user_id is None:
        _warn(view, entry, f"{entry.type} before scan.requested")
        return
    view.events_folded += 1
    if apply is not None:
        apply(view, entry, event)
    view.updated_at = event.ts


# One function per event type, found by the event's class: the fold's hot path is a dict
# lookup, not a chain of isinstance checks (the fold is a third of a status rebuild).


def _requested(view: ScanView, entry: LogEntry, event: ScanRequested) -> None:
    if view.exists:
        _warn(view, entry, "a second scan.requested")
        return
    view.user_id = event.user_id
    view.params = dict(event.params)
    view.created_at = event.ts
    view.strategies = {name: StrategyView(name) for name in event.strategies}


def _cancel_requested(view: ScanView, entry: LogEntry, event: ScanCancelRequested) -> None:
    view.cancel_requested = True


def _strategy_of(view: ScanView, entry: LogEntry, event: StrategyEvent) -> StrategyView | None:
    """The strategy an event is about, or None when the event must not change it."""
    strategy = view.strategies.get(event.strategy)
    if strategy is None:
        _warn(view, entry, f"strategy {event.strategy!r} is not part of this scan")
        return None
    if strategy.terminal or event.attempt < strategy.attempts:
        return None  # late or repeated: never regresses a strategy
    return strategy


def _started(view: ScanView, entry: LogEntry, event: StrategyStarted) -> None:
    strategy = _strategy_of(view, entry, event)
    if strategy is None or (event.attempt == strategy.attempts and strategy.state == "running"):
        return
    strategy.attempts = event.attempt
    strategy.state = "running"
    strategy.progress = 0.0
    strategy.started_at = strategy.started_at or event.ts
    if view.state == "queued":
        view.state = "running"


def _progress(view: ScanView, entry: LogEntry, event: StrategyProgress) -> None:
    strategy = _strategy_of(view, entry, event)
    if strategy is not None and event.attempt == strategy.attempts:
        strategy.progress = event.progress
        strategy.message = event.message


def _found(view: ScanView, entry: LogEntry, event: OpportunityFound) -> None:
    strategy = _strategy_of(view, entry, event)
    opportunity = event.opportunity
    if strategy is not None and opportunity.id not in view.opportunities:
        view.opportunities[opportunity.id] = opportunity
        strategy.opportunities += 1


def _completed(view: ScanView, entry: LogEntry, event: StrategyCompleted) -> None:
    strategy = _strategy_of(view, entry, event)
    if strategy is None:
        return
    strategy.attempts = event.attempt
    strategy.state = "completed"
    strategy.error = None  # an earlier attempt's failure no longer describes it
    strategy.progress = 1.0
    strategy.finished_at = event.ts


def _failed(view: ScanView, entry: LogEntry, event: StrategyFailed) -> None:
    strategy = _strategy_of(view, entry, event)
    if strategy is None:
        return
    strategy.attempts = event.attempt
    strategy.error = event.error
    if event.final:
        strategy.state = "failed"
        strategy.finished_at = event.ts
    else:
        strategy.state = "pending"  # a retry follows


def _end(view: ScanView, entry: LogEntry, event: ScanEnded) -> None:
    match event:
        case ScanCompleted():
            view.state = "completed"
        case ScanFailed():
            view.state = "failed"
        case _:
            view.state = "cancelled"
    view.finished_at = event.ts
    view.end_reason = event.reason
    for strategy in view.strategies.values():
        if not strategy.terminal:
            strategy.state = "cancelled"
            strategy.finished_at = event.ts


_APPLY: dict[type, Callable[[ScanView, LogEntry, Any], None]] = {
    ScanRequested: _requested,
    StrategyStarted: _started,
    StrategyProgress: _progress,
    OpportunityFound: _found,
    StrategyCompleted: _completed,
    StrategyFailed: _failed,
    ScanCancelRequested: _cancel_requested,
    ScanCompleted: _end,
    ScanFailed: _end,
    ScanCancelled: _end,
}
