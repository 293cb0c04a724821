"""Server-Sent Events framing, with no I/O.

A message is `id: <entry id>`, `event: <type>` and `data: <JSON>`: the JSON is exactly
what `GET /v1/scans/{id}/log` answers for the same entry (`service.log_event`, encoded
by msgspec), so the log and the stream agree byte for byte. msgspec never writes a raw
CR or LF inside JSON, so the data always fits on one `data:` line.
"""

from __future__ import annotations

import re

import msgspec

from scanstream.events import TERMINAL_TYPES, LogEntry
from scanstream.service import log_event

# An event name that cannot break the framing; a hostile entry's type that is not one is
# sent as `event: invalid` (its real type is still in the data, JSON-escaped).
SAFE_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
INVALID_EVENT = "invalid"
RETRY_MS = 1000  # how long EventSource waits before it reconnects by itself
KEEPALIVE = b": keepalive\n\n"
START = b"retry: %d\n\n" % RETRY_MS

_encode = msgspec.json.Encoder().encode


def message(scan_id: str, entry: LogEntry) -> bytes:
    """One SSE message for one stream entry (a hostile entry is sent with its problem)."""
    name = entry.type if SAFE_EVENT_NAME.fullmatch(entry.type) else INVALID_EVENT
    data = _encode(log_event(scan_id, entry))
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (entry.id.encode(), name.encode(), data)


def comment(text: str) -> bytes:
    """A comment line (ignored by clients); `text` must not hold a line break."""
    return b": " + text.replace("\r", " ").replace("\n", " ").encode() + b"\n\n"


def ends_stream(entry: LogEntry) -> bool:
    """The terminal scan event: the last message a stream sends."""
    return entry.event is not None and entry.type in TERMINAL_TYPES


def id_str(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"
