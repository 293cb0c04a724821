"""The timeline: one readable row per log entry, with filters.

Times come from the entry id (the Redis clock when the entry was appended): they are
strictly ordered, unlike the writers' clocks in `ts`, so `offset` never goes backwards
and `--until` always selects a prefix. `ts` (the writer's time) is kept beside it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scanstream import events as ev
from scanstream.events import LogEntry
from scanstream.replay.source import entry_ms, entry_time

SUMMARY_MAX = 160


@dataclass(frozen=True, slots=True)
class Row:
    n: int  # 1-based position in the log: what `--at N` takes
    entry_id: str
    time: str  # from the entry id (Redis clock)
    offset_ms: int  # since the first entry
    type: str
    strategy: str | None
    attempt: int | None
    summary: str
    ts: str | None  # the event's own `ts` (the writer's clock)
    problem: str | None  # why the entry could not be read

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _short(text: str, limit: int = SUMMARY_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


PLURAL = {"opportunity": "opportunities", "strategy": "strategies"}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun if count == 1 else PLURAL[noun]}"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def summary(entry: LogEntry) -> str:
    """One line saying what the entry says."""
    event = entry.event
    if event is None:
        return _short(f"unreadable: {entry.problem}")
    match event:
        case ev.ScanRequested():
            params = ev.encode_obj(event.params).decode() if event.params else "{}"
            return _short(
                f"user {event.user_id}, {plural(len(event.strategies), 'strategy')} "
                f"({', '.join(event.strategies)}), params {params}"
            )
        case ev.StrategyStarted():
            return f"attempt {event.attempt} on {event.worker}"
        case ev.StrategyProgress():
            return _short(f"{_pct(event.progress)} {event.message}".strip())
        case ev.OpportunityFound():
            o = event.opportunity
            return (
                f"{o.symbol} {o.side} score {o.score:.3f} "
                f"return {o.expected_return * 100:+.2f}% {o.id}"
            )
        case ev.StrategyCompleted():
            return f"{plural(event.opportunities, 'opportunity')} in {event.duration_ms} ms"
        case ev.StrategyFailed():
            then = "final" if event.final else "will retry"
            return _short(f"{event.error.type}: {event.error.message} ({then})")
        case ev.ScanCancelRequested():
            return f"by {event.user_id}"
        case ev.ScanEnded():
            reason = f", reason {event.reason}" if event.reason else ""
            return (
                f"{plural(event.opportunities, 'opportunity')}, {event.strategies_completed} "
                f"completed, {event.strategies_failed} failed, in {event.duration_ms} ms"
                f"{reason}"
            )
    return ""  # pragma: no cover - every event type is matched above


def timeline(entries: Sequence[LogEntry]) -> list[Row]:
    """Every entry of the log as a `Row`, in stream order."""
    if not entries:
        return []
    start = entry_ms(entries[0].id)
    rows = []
    for n, entry in enumerate(entries, start=1):
        event = entry.event
        rows.append(
            Row(
                n=n,
                entry_id=entry.id,
                time=entry_time(entry.id),
                offset_ms=entry_ms(entry.id) - start,
                type=entry.type,
                strategy=getattr(event, "strategy", None),
                attempt=getattr(event, "attempt", None),
                summary=summary(entry),
                ts=event.ts if event is not None else None,
                problem=entry.problem,
            )
        )
    return rows


def select(
    rows: Iterable[Row], *, strategies: Sequence[str] = (), types: Sequence[str] = ()
) -> list[Row]:
    """Rows of any of `strategies` (scan-level rows have none and are dropped) and of any
    of `types` (exact names or globs such as `strategy.*`). Empty means no filter."""
    out = []
    for row in rows:
        if strategies and row.strategy not in strategies:
            continue
        if types and not any(fnmatch.fnmatchcase(row.type, t) for t in types):
            continue
        out.append(row)
    return out
