"""The fence hash a log implies: what `create_scan.lua`, `strategy_write.lua` and
`end_scan.lua` would hold after writing exactly this log.

Pure, so an import can rebuild the hash of a scan from its exported log and every later
fenced write (a late finish, a new attempt, the scan's end) behaves as on the original.
Fields: `total`, `created_ms`, `completed`, `failed`, `opportunities`, `names` and
`in:<s>` (the scan's strategies), `attempt:<s>`, `done:<s>`, `opp:<id>` and, once the scan
ended, `terminal`.
"""

from __future__ import annotations

from collections.abc import Sequence

from scanstream import events as ev
from scanstream.events import LogEntry
from scanstream.ids import scan_created_ms

_STRATEGY_EVENTS = (
    ev.StrategyProgress,
    ev.OpportunityFound,
    ev.StrategyCompleted,
    ev.StrategyFailed,
)


def fence_fields(entries: Sequence[LogEntry], scan_id: str) -> dict[str, str]:
    """The fence hash (field -> value, as Redis stores them) after writing `entries`.

    Empty when the log has no readable `scan.requested`: the scripts then answer `missing`,
    as for a scan that never existed. Writes the scripts would have refused (a stale
    attempt, a strategy already done, anything after the end) change nothing, as there.
    """
    start = next((i for i, e in enumerate(entries) if isinstance(e.event, ev.ScanRequested)), None)
    if start is None:
        return {}
    requested = entries[start].event
    assert isinstance(requested, ev.ScanRequested)
    fence: dict[str, str] = {
        "total": str(len(requested.strategies)),
        "created_ms": str(scan_created_ms(scan_id)),
        "completed": "0",
        "failed": "0",
        "opportunities": "0",
        "names": "1",
    }
    for name in requested.strategies:
        fence[f"in:{name}"] = "1"
    attempts: dict[str, int] = {}
    for entry in entries[start + 1 :]:
        event = entry.event
        if entry.type in ev.TERMINAL_TYPES and event is not None:
            fence["terminal"] = entry.type
            break
        if isinstance(event, ev.StrategyStarted):
            if _writable(fence, event.strategy):
                attempts[event.strategy] = max(attempts.get(event.strategy, 0), event.attempt)
                fence[f"attempt:{event.strategy}"] = str(attempts[event.strategy])
        elif isinstance(event, _STRATEGY_EVENTS):
            _accepted_write(fence, attempts, event)
    return fence


def _writable(fence: dict[str, str], strategy: str) -> bool:
    """Not done, and one of the scan's strategies (else strategy_write.lua refuses)."""
    return f"done:{strategy}" not in fence and f"in:{strategy}" in fence


def _accepted_write(
    fence: dict[str, str],
    attempts: dict[str, int],
    event: ev.StrategyProgress | ev.OpportunityFound | ev.StrategyCompleted | ev.StrategyFailed,
) -> None:
    name = event.strategy
    if not _writable(fence, name) or event.attempt != attempts.get(name, 0):
        return  # the script answers done / missing / stale and writes nothing
    finished: str | None = None
    match event:
        case ev.OpportunityFound():
            key = f"opp:{event.opportunity.id}"
            if key not in fence:
                fence[key] = "1"
                fence["opportunities"] = str(int(fence["opportunities"]) + 1)
        case ev.StrategyCompleted():
            finished = "completed"
        case ev.StrategyFailed() if event.final:
            finished = "failed"
    if finished is not None:
        fence[f"done:{name}"] = finished
        fence[finished] = str(int(fence[finished]) + 1)
