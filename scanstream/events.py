"""Every event type of a scan's log, and the one codec that reads and writes them.

A stream entry has two fields: `type` (the event type) and `data` (a JSON object).
The Structs below are `data`; the type lives beside it, so `TYPE_OF` / `CLASS_OF` map the
two. Decoding never raises: an entry that cannot be read becomes a `LogEntry` with a
`problem`, which every fold skips and counts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

SCHEMA_VERSION = 1
MAX_DATA_BYTES = 256 * 1024  # a larger entry is hostile or broken; folds skip it

Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Side = Literal["long", "short", "neutral"]


class Opportunity(msgspec.Struct, frozen=True, kw_only=True):
    id: Name
    strategy: Name
    symbol: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    side: Side
    score: Fraction
    expected_return: float
    details: dict[str, Any] = {}


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    message: str


class Event(msgspec.Struct, frozen=True, kw_only=True):
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    ts: str
    v: int = SCHEMA_VERSION


class ScanRequested(Event, frozen=True, kw_only=True):
    user_id: str
    strategies: list[str]
    params: dict[str, Any] = {}


class StrategyStarted(Event, frozen=True, kw_only=True):
    strategy: Name
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    worker: str


class StrategyProgress(Event, frozen=True, kw_only=True):
    strategy: Name
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    progress: Fraction
    message: str = ""


class OpportunityFound(Event, frozen=True, kw_only=True):
    strategy: Name
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    opportunity: Opportunity


class StrategyCompleted(Event, frozen=True, kw_only=True):
    strategy: Name
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    opportunities: Annotated[int, msgspec.Meta(ge=0)]
    duration_ms: Annotated[int, msgspec.Meta(ge=0)]
    # Findings past SCANSTREAM_MAX_FINDINGS_PER_STRATEGY: counted, not written.
    findings_dropped: Annotated[int, msgspec.Meta(ge=0)] = 0


class StrategyFailed(Event, frozen=True, kw_only=True):
    strategy: Name
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    error: ErrorInfo
    final: bool


class ScanCancelRequested(Event, frozen=True, kw_only=True):
    user_id: str


class ScanEnded(Event, frozen=True, kw_only=True):
    opportunities: int
    strategies_completed: int
    strategies_failed: int
    duration_ms: int
    reason: str | None = None  # e.g. "deadline"; absent in the common case


class ScanCompleted(ScanEnded, frozen=True, kw_only=True):
    pass


class ScanFailed(ScanEnded, frozen=True, kw_only=True):
    pass


class ScanCancelled(ScanEnded, frozen=True, kw_only=True):
    pass


AnyEvent = (
    ScanRequested
    | StrategyStarted
    | StrategyProgress
    | OpportunityFound
    | StrategyCompleted
    | StrategyFailed
    | ScanCancelRequested
    | ScanCompleted
    | ScanFailed
    | ScanCancelled
)

TYPE_OF: dict[type[Event], str] = {
    ScanRequested: "scan.requested",
    StrategyStarted: "strategy.started",
    StrategyProgress: "strategy.progress",
    OpportunityFound: "opportunity.found",
    StrategyCompleted: "strategy.completed",
    StrategyFailed: "strategy.failed",
    ScanCancelRequested: "scan.cancel_requested",
    ScanCompleted: "scan.completed",
    ScanFailed: "scan.failed",
    ScanCancelled: "scan.cancelled",
}
CLASS_OF: dict[str, type[Event]] = {name: cls for cls, name in TYPE_OF.items()}
TERMINAL_TYPES = frozenset({"scan.completed", "scan.failed", "scan.cancelled"})

_encoder = msgspec.json.Encoder()
_decoders = {name: msgspec.json.Decoder(cls) for name, cls in CLASS_OF.items()}
_dict_decoder = msgspec.json.Decoder(dict[str, Any])

# Upcasters turn the data of version N into version N+1, keyed by (type, N).
# Version 1 is the first, so none exist yet; the mechanism is exercised by the tests.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class LogEntry(msgspec.Struct, frozen=True):
    """One stream entry as read: its id, its type, and the event or why it could not be read."""

    id: str
    type: str
    data: bytes
    event: AnyEvent | None = None
    problem: str | None = None


_last_second: tuple[int, str] = (-1, "")  # (unix second, its "YYYY-MM-DDTHH:MM:SS")


def now_rfc3339() -> str:
    """The time now, UTC, to the millisecond: "2026-12-08T01:45:11.123Z". Every event is
    stamped with it (several per job): the seconds part is formatted once per second."""
    global _last_second
    second, milli = divmod(time.time_ns() // 1_000_000, 1000)
    cached = _last_second  # one read: strategy threads stamp events too
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _last_second = cached
    return f"{cached[1]}.{milli:03d}Z"


def new_event_id() -> str:
    # 128 random bits, like a UUID4's hex but without building a UUID object (hot path).
    return os.urandom(16).hex()


def type_of(event: Event) -> str:
    return TYPE_OF[type(event)]


def encode(event: Event) -> bytes:
    """The `data` field of an entry."""
    return _encoder.encode(event)


def pairs(events: Sequence[Event]) -> list[tuple[str, bytes]]:
    """Events as the (type, data) field pairs of their stream entries."""
    return [(TYPE_OF[type(e)], _encoder.encode(e)) for e in events]


def decode(entry_id: str, type_: str, data: bytes) -> LogEntry:
    """Read one entry; never raises."""
    decoder = _decoders.get(type_)
    if decoder is None:
        return LogEntry(entry_id, type_, data, problem=f"unknown event type {type_[:80]!r}")
    if len(data) > MAX_DATA_BYTES:
        return LogEntry(entry_id, type_, data, problem=f"data is {len(data)} bytes, over the limit")
    try:
        event = decoder.decode(data)
    except msgspec.ValidationError as exc:
        return _decode_other_version(entry_id, type_, data, str(exc))
    except msgspec.DecodeError as exc:
        return LogEntry(entry_id, type_, data, problem=f"data is not valid JSON: {exc}")
    if event.v != SCHEMA_VERSION:
        return _decode_other_version(entry_id, type_, data, None)
    return LogEntry(entry_id, type_, data, event=event)  # type: ignore[arg-type]


def _decode_other_version(entry_id: str, type_: str, data: bytes, error: str | None) -> LogEntry:
    try:
        raw = _dict_decoder.decode(data)
    except msgspec.DecodeError as exc:
        return LogEntry(entry_id, type_, data, problem=f"data is not valid JSON: {exc}")
    v = raw.get("v")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        return LogEntry(entry_id, type_, data, problem=error or "missing or invalid schema version")
    if v > SCHEMA_VERSION:
        return LogEntry(
            entry_id, type_, data, problem=f"schema version {v} is newer than {SCHEMA_VERSION}"
        )
    if v == SCHEMA_VERSION:
        return LogEntry(entry_id, type_, data, problem=error or "invalid event data")
    try:
        raw = upcast(type_, raw)
        event = msgspec.convert(raw, CLASS_OF[type_])
    except (msgspec.ValidationError, KeyError) as exc:
        return LogEntry(entry_id, type_, data, problem=f"cannot upcast v{v}: {exc}")
    return LogEntry(entry_id, type_, data, event=event)  # type: ignore[arg-type]


def upcast(type_: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Apply upcasters until `raw` is at SCHEMA_VERSION; a version with no upcaster is unchanged."""
    while raw["v"] < SCHEMA_VERSION:
        step = UPCASTERS.get((type_, raw["v"]))
        upgraded = dict(step(raw)) if step else dict(raw)
        upgraded["v"] = raw["v"] + 1
        raw = upgraded
    return raw


def decode_entry(entry_id: bytes | str, fields: Mapping[bytes, bytes] | None) -> LogEntry:
    """Read one raw redis-py stream entry (bytes); a pending id whose body was deleted has None."""
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if not fields:
        return LogEntry(eid, "", b"", problem="entry has no fields")
    type_b = fields.get(b"type")
    data = fields.get(b"data")
    if type_b is None or data is None:
        return LogEntry(eid, "", b"", problem="entry lacks the type or data field")
    try:
        type_ = type_b.decode()
    except UnicodeDecodeError:
        return LogEntry(eid, "", data, problem="type is not UTF-8")
    return decode(eid, type_, data)


def stamp(cls: type[Event], event_id: str | None = None, **fields: Any) -> Any:
    """Build an event with a fresh (or given) event_id and the current time."""
    return cls(event_id=event_id or new_event_id(), ts=now_rfc3339(), **fields)


def ts_ms(ts: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 timestamp (0 when unreadable)."""
    try:
        return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def wall_ms() -> int:
    return int(time.time() * 1000)


def encode_obj(obj: Mapping[str, Any]) -> bytes:
    """Encode a plain mapping with the same encoder (for data assembled outside a Struct)."""
    return _encoder.encode(obj)
