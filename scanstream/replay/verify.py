"""Verify a log: its own invariants, and that the API serves what the log folds to.

Errors (anything a correct system never writes) make `Report.ok` false; warnings
(legal but worth a look, e.g. a re-delivered write) do not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from scanstream import events as ev
from scanstream import projection
from scanstream.errors import ScanNotFound, StoreUnavailable
from scanstream.events import LogEntry
from scanstream.redact import redact
from scanstream.replay.changes import Change, changes, plain
from scanstream.replay.fence import fence_fields
from scanstream.replay.source import Log, ReplayError, is_entry_id
from scanstream.replay.travel import state_after, state_at

Severity = Literal["error", "warning"]
HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    kind: str
    message: str
    entry_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "kind": self.kind,
            "message": self.message,
            "entry_id": self.entry_id,
        }


@dataclass
class Comparison:
    """The refold against one served projection, at the served `last_event_id`."""

    name: str  # "status" or "results"
    at: str | None  # the last entry id both sides folded
    changes: list[Change]


@dataclass
class Report:
    scan_id: str
    entries: int
    findings: list[Finding] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings) and not any(
            c.changes for c in self.comparisons
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "entries": self.entries,
            "ok": self.ok,
            "findings": [f.to_json() for f in self.findings],
            "comparisons": [
                {"name": c.name, "at": c.at, "changes": [ch.to_json() for ch in c.changes]}
                for c in self.comparisons
            ],
        }


def check_log(scan_id: str, entries: Sequence[LogEntry]) -> list[Finding]:
    """The log's own invariants (see docs/replay.md, "Verify")."""
    out: list[Finding] = []

    def error(kind: str, message: str, entry: LogEntry | None = None) -> None:
        out.append(Finding("error", kind, message, entry.id if entry else None))

    requested = [e for e in entries if e.type == "scan.requested"]
    if not entries or entries[0].type != "scan.requested" or entries[0].event is None:
        error(
            "requested_not_first",
            "the first entry is not a readable scan.requested",
            entries[0] if entries else None,
        )
    for extra in requested[1:]:
        error("requested_twice", "a second scan.requested", extra)
    names = (
        set(entries[0].event.strategies)
        if entries and isinstance(entries[0].event, ev.ScanRequested)
        else set()
    )

    terminal: LogEntry | None = None
    seen_ids: set[str] = set()
    started: dict[str, int] = {}
    finished: dict[str, LogEntry] = {}
    found: dict[tuple[str, int], Counter[str]] = {}
    for entry in entries:
        event = entry.event
        if event is None:
            error("unreadable", f"{entry.type or '(no type)'}: {entry.problem}", entry)
            continue
        if event.event_id in seen_ids:
            out.append(
                Finding(
                    "warning",
                    "duplicate_event_id",
                    f"event_id {event.event_id} written again (a re-delivered "
                    "write: it changes no projection)",
                    entry.id,
                )
            )
            continue
        seen_ids.add(event.event_id)
        if terminal is not None:
            error(
                "after_terminal",
                f"{entry.type} after the terminal {terminal.type} ({terminal.id})",
                entry,
            )
            continue
        if entry.type in ev.TERMINAL_TYPES:
            terminal = entry
            continue
        if not isinstance(
            event,
            ev.StrategyStarted
            | ev.StrategyProgress
            | ev.OpportunityFound
            | ev.StrategyCompleted
            | ev.StrategyFailed,
        ):
            continue
        name = event.strategy
        if names and name not in names:
            error("unknown_strategy", f"{entry.type} of {name!r}, not part of this scan", entry)
        if name in finished:
            error(
                "after_strategy_end",
                f"{entry.type} of {name} after its {finished[name].type} ({finished[name].id})",
                entry,
            )
        current = started.get(name, 0)
        if isinstance(event, ev.StrategyStarted):
            if event.attempt != current + 1:
                error(
                    "attempt_order",
                    f"{name} started attempt {event.attempt} after "
                    f"attempt {current} (expected {current + 1})",
                    entry,
                )
            started[name] = max(current, event.attempt)
            continue
        if event.attempt != current:
            what = (
                "before it started"
                if event.attempt > current
                else f"after attempt {current} started (a stale write got through)"
            )
            error("stale_attempt", f"{entry.type} of {name} attempt {event.attempt} {what}", entry)
        if isinstance(event, ev.OpportunityFound):
            found.setdefault((name, event.attempt), Counter())[event.opportunity.id] += 1
        elif isinstance(event, ev.StrategyCompleted) or (
            isinstance(event, ev.StrategyFailed) and event.final
        ):
            finished[name] = entry
    out += _opportunity_findings(found, started)
    out += _terminal_findings(scan_id, entries, terminal)
    return out


def _opportunity_findings(
    found: Mapping[tuple[str, int], Counter[str]], started: Mapping[str, int]
) -> list[Finding]:
    out = []
    for (name, attempt), ids in found.items():
        for oid, n in ids.items():
            if n > 1:
                out.append(
                    Finding(
                        "error",
                        "opportunity_twice",
                        f"{oid} found {n} times by {name} attempt {attempt}",
                    )
                )
    owners: dict[str, str] = {}
    for name, attempt in started.items():  # the accepted (latest) attempt of each strategy
        for oid in found.get((name, attempt), {}):
            if oid in owners:
                out.append(
                    Finding(
                        "error",
                        "opportunity_twice",
                        f"{oid} found by both {owners[oid]} and {name}",
                    )
                )
            owners[oid] = name
    return out


def _terminal_findings(
    scan_id: str, entries: Sequence[LogEntry], terminal: LogEntry | None
) -> list[Finding]:
    fence = fence_fields(entries, scan_id)
    if terminal is None:
        if fence and int(fence["completed"]) + int(fence["failed"]) >= int(fence["total"]):
            return [
                Finding(
                    "error",
                    "no_terminal",
                    "every strategy ended but no terminal scan event was written",
                )
            ]
        return []
    event = terminal.event
    assert isinstance(event, ev.ScanEnded)
    view = projection.fold_all(scan_id, entries)
    recorded = {
        "opportunities": event.opportunities,
        "strategies_completed": event.strategies_completed,
        "strategies_failed": event.strategies_failed,
    }
    folded = {
        "opportunities": len(view.opportunities),
        "strategies_completed": view.strategies_completed,
        "strategies_failed": view.strategies_failed,
    }
    return [
        Finding(
            "error",
            "terminal_counts",
            f"{terminal.type} says {key} = {recorded[key]}, the fold counts {folded[key]}",
            terminal.id,
        )
        for key in recorded
        if recorded[key] != folded[key]
    ]


def compare(log: Log, name: str, served: Any) -> Comparison:
    """Refold the log up to the served `last_event_id` and compare field by field."""
    served = plain(served)
    last = served.get("last_event_id") if isinstance(served, dict) else None
    if isinstance(last, str) and is_entry_id(last):
        snapshot = state_after(log.scan_id, log.entries, last)
    else:
        snapshot = state_at(log.scan_id, log.entries)
    ours = snapshot.status if name == "status" else snapshot.results
    found = changes(served, ours)
    if name == "results" and isinstance(served, dict) and not found:
        order = [o.get("id") for o in served.get("opportunities", []) if isinstance(o, dict)]
        mine = [o["id"] for o in ours["opportunities"]]
        if order != mine:
            found.append(Change("opportunities (order)", order, mine))
    return Comparison(name, snapshot.entry_id, found)


def verify(log: Log, *, status: Any = None, results: Any = None) -> Report:
    """Check the log's invariants and, when given, compare served status / results
    (dicts as the API serves them, or `render` Structs) with the refold.

    In each comparison `before` is what was served and `after` what the log folds to.
    """
    report = Report(log.scan_id, len(log.entries), check_log(log.scan_id, log.entries))
    if status is not None:
        report.comparisons.append(compare(log, "status", status))
    if results is not None:
        report.comparisons.append(compare(log, "results", results))
    return report


async def fetch_served(
    api_url: str, token: str, scan_id: str, http: httpx.AsyncClient | None = None
) -> tuple[Any, Any]:
    """GET the scan's status and results from the API, as a client would."""
    base = api_url.rstrip("/")
    shown = redact(base)  # what messages name: never a password in the URL
    headers = {"Authorization": f"Bearer {token}"}
    own = http is None
    http = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
    try:
        answers = []
        for path in (f"/v1/scans/{scan_id}", f"/v1/scans/{scan_id}/results"):
            try:
                response = await http.get(base + path, headers=headers)
            except httpx.HTTPError as exc:
                raise StoreUnavailable(f"the API at {shown} cannot be reached: {exc}") from exc
            if response.status_code == 404:
                raise ScanNotFound(f"the API at {shown} does not know {scan_id} (for this token)")
            if response.status_code != 200:
                raise ReplayError(f"GET {path}: HTTP {response.status_code}: {response.text[:200]}")
            answers.append(response.json())
        return answers[0], answers[1]
    finally:
        if own:
            await http.aclose()
