"""Time travel: the status and results projections at any point of the log.

Uses the API's own fold (`projection.fold`) and renderers (`render.status_of` /
`results_of`), so what replay shows at entry N is what the API served after entry N.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scanstream import projection, render
from scanstream.events import LogEntry
from scanstream.projection import ScanView
from scanstream.replay.changes import Change, changes, plain
from scanstream.replay.source import ReplayError, entry_key, entry_ms, is_entry_id

STEP_SKIP = frozenset({"last_event_id"})  # always the step's own entry id


@dataclass(frozen=True, slots=True)
class Snapshot:
    count: int  # entries folded (a prefix of the log)
    entry_id: str | None  # the last entry folded
    view: ScanView

    @property
    def status(self) -> dict[str, Any]:
        return plain(render.status_of(self.view))

    @property
    def results(self) -> dict[str, Any]:
        return plain(render.results_of(self.view))


@dataclass(frozen=True, slots=True)
class Step:
    n: int
    entry: LogEntry
    changes: list[Change]


def parse_time(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 time or of a bare integer (ms)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"not a time: {text!r} (RFC 3339, e.g. 2025-01-31T12:00:00Z, "
            "or milliseconds since the epoch)"
        ) from None
    if moment.tzinfo is None:
        raise ReplayError(f"{text!r} has no time zone: add Z for UTC")
    return int(moment.timestamp() * 1000)


def prefix_length(
    entries: Sequence[LogEntry], *, at: str | int | None = None, until: str | int | None = None
) -> int:
    """How many entries `--at` / `--until` select (the whole log when neither is given).

    `at`: an entry id (that entry included), or N, the Nth entry (1-based; negative
    counts from the end, -1 being the last). `until`: every entry appended at or before
    that time (RFC 3339 or ms since the epoch), by the Redis clock of the entry ids.
    """
    if at is not None and until is not None:
        raise ReplayError("give --at or --until, not both")
    if at is not None:
        if isinstance(at, str) and is_entry_id(at):
            for n, entry in enumerate(entries, start=1):
                if entry.id == at:
                    return n
            raise ReplayError(f"no entry {at} in this log")
        try:
            n = int(at)
        except ValueError:
            raise ReplayError(f"--at takes an entry id or a number, not {at!r}") from None
        if n < 0:
            n = len(entries) + 1 + n
        if not 1 <= n <= len(entries):
            raise ReplayError(f"--at {at}: the log has {len(entries)} entries")
        return n
    if until is not None:
        limit = until if isinstance(until, int) else parse_time(until)
        return sum(1 for e in entries if entry_ms(e.id) <= limit)
    return len(entries)


def state_at(
    scan_id: str,
    entries: Sequence[LogEntry],
    *,
    at: str | int | None = None,
    until: str | int | None = None,
) -> Snapshot:
    """The projections after the selected prefix of the log."""
    count = prefix_length(entries, at=at, until=until)
    view = projection.fold_all(scan_id, entries[:count])
    return Snapshot(count, entries[count - 1].id if count else None, view)


def state_after(scan_id: str, entries: Sequence[LogEntry], entry_id: str) -> Snapshot:
    """The projections after the last entry at or before `entry_id` (how the API stood)."""
    key = entry_key(entry_id)
    count = sum(1 for e in entries if entry_key(e.id) <= key)
    view = projection.fold_all(scan_id, entries[:count])
    return Snapshot(count, entries[count - 1].id if count else None, view)


def _shown(view: ScanView) -> dict[str, Any]:
    results = render.results_of(view)
    return {**plain(render.status_of(view)), "opportunities": plain(results.opportunities)}


def steps(scan_id: str, entries: Sequence[LogEntry], *, count: int | None = None) -> Iterator[Step]:
    """Event by event, what each one changed in status (field by field) and in the
    opportunity list (one change per opportunity added)."""
    view = projection.empty(scan_id)
    before = _shown(view)
    for n, entry in enumerate(entries[:count] if count is not None else entries, start=1):
        view = projection.fold(view, [entry])
        after = _shown(view)
        yield Step(n, entry, changes(before, after, skip=STEP_SKIP))
        before = after
