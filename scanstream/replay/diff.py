"""Compare two scans (live or exported): per strategy, state, attempts, duration, and
opportunities added, removed or changed (matched by id; changed = same id, other fields).

Opportunity ids derive from the strategy, the market fingerprint and the finding, so two
scans on different inputs share no ids: every finding then shows as removed and added,
which says the inputs differed (compare `params`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scanstream import events as ev
from scanstream import projection
from scanstream.events import LogEntry, Opportunity
from scanstream.projection import ScanView
from scanstream.replay.changes import Change, changes, plain
from scanstream.replay.source import Log


@dataclass
class StrategyFacts:
    name: str
    state: str
    attempts: int
    duration_ms: int | None
    opportunities: dict[str, Opportunity]


@dataclass
class OpportunityDiff:
    added: list[Opportunity] = field(default_factory=list)
    removed: list[Opportunity] = field(default_factory=list)
    changed: list[tuple[str, list[Change]]] = field(default_factory=list)
    same: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "added": plain(self.added),
            "removed": plain(self.removed),
            "changed": [
                {"id": oid, "changes": [c.to_json() for c in cs]} for oid, cs in self.changed
            ],
        }


@dataclass
class StrategyDiff:
    name: str
    a: StrategyFacts | None  # None: the strategy is not part of that scan
    b: StrategyFacts | None
    opportunities: OpportunityDiff

    @property
    def empty(self) -> bool:
        if self.a is None or self.b is None:
            return False
        same = (self.a.state, self.a.attempts) == (self.b.state, self.b.attempts)
        return same and self.opportunities.empty

    def to_json(self) -> dict[str, Any]:
        def facts(f: StrategyFacts | None) -> dict[str, Any] | None:
            return (
                None
                if f is None
                else {
                    "state": f.state,
                    "attempts": f.attempts,
                    "duration_ms": f.duration_ms,
                    "opportunities": len(f.opportunities),
                }
            )

        return {
            "name": self.name,
            "a": facts(self.a),
            "b": facts(self.b),
            "opportunities": self.opportunities.to_json(),
        }


@dataclass
class ScanDiff:
    a: str  # scan ids
    b: str
    scan: list[Change]  # state, counts, strategies, params
    strategies: list[StrategyDiff]
    duration_ms: tuple[int | None, int | None] = (None, None)  # shown, never a difference

    @property
    def empty(self) -> bool:
        return not self.scan and all(s.empty for s in self.strategies)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "same": self.empty,
            "duration_ms": {"a": self.duration_ms[0], "b": self.duration_ms[1]},
            "scan": [c.to_json() for c in self.scan],
            "strategies": [s.to_json() for s in self.strategies],
        }


def durations(entries: Sequence[LogEntry]) -> dict[str, int]:
    """Per strategy, how long its last attempt took: `duration_ms` of strategy.completed,
    else from that attempt's start to its last event."""
    started: dict[str, int] = {}
    out: dict[str, int] = {}
    for entry in entries:
        event = entry.event
        if isinstance(event, ev.StrategyStarted):
            started[event.strategy] = ev.ts_ms(event.ts)
            out.pop(event.strategy, None)
        elif isinstance(event, ev.StrategyCompleted):
            out[event.strategy] = event.duration_ms
        elif isinstance(event, ev.StrategyFailed) and event.strategy in started:
            out[event.strategy] = max(0, ev.ts_ms(event.ts) - started[event.strategy])
    return out


def strategy_facts(view: ScanView, entries: Sequence[LogEntry]) -> dict[str, StrategyFacts]:
    took = durations(entries)
    return {
        name: StrategyFacts(
            name=name,
            state=s.state,
            attempts=s.attempts,
            duration_ms=took.get(name),
            opportunities={o.id: o for o in view.opportunities.values() if o.strategy == name},
        )
        for name, s in view.strategies.items()
    }


def compare_opportunities(a: dict[str, Opportunity], b: dict[str, Opportunity]) -> OpportunityDiff:
    out = OpportunityDiff()
    for oid, mine in a.items():
        theirs = b.get(oid)
        if theirs is None:
            out.removed.append(mine)
            continue
        found = changes(plain(mine), plain(theirs))
        if found:
            out.changed.append((oid, found))
        else:
            out.same += 1
    out.added = [o for oid, o in b.items() if oid not in a]
    return out


def _scan_summary(view: ScanView, entries: Sequence[LogEntry]) -> dict[str, Any]:
    ended = next((e.event for e in entries if isinstance(e.event, ev.ScanEnded)), None)
    return {
        "state": view.state,
        "strategies": list(view.strategies),
        "opportunities_found": len(view.opportunities),
        "strategies_completed": view.strategies_completed,
        "strategies_failed": view.strategies_failed,
        "duration_ms": ended.duration_ms if ended else None,
        "params": plain(view.params),
    }


def diff(a: Log, b: Log) -> ScanDiff:
    """What differs from scan `a` to scan `b`."""
    va = projection.fold_all(a.scan_id, a.entries)
    vb = projection.fold_all(b.scan_id, b.entries)
    summary_a, summary_b = _scan_summary(va, a.entries), _scan_summary(vb, b.entries)
    scan = changes(summary_a, summary_b, skip=frozenset({"duration_ms"}))
    fa, fb = strategy_facts(va, a.entries), strategy_facts(vb, b.entries)
    names = list(fa) + [n for n in fb if n not in fa]
    per = []
    for name in names:
        sa, sb = fa.get(name), fb.get(name)
        opps = compare_opportunities(sa.opportunities if sa else {}, sb.opportunities if sb else {})
        per.append(StrategyDiff(name, sa, sb, opps))
    return ScanDiff(
        a.scan_id, b.scan_id, scan, per, (summary_a["duration_ms"], summary_b["duration_ms"])
    )
