"""Reading redis-py replies: the clients here return bytes (`decode_responses=False`)."""

from __future__ import annotations

from typing import Any

from scanstream import events as ev
from scanstream.events import LogEntry


def text(value: Any) -> str:
    """A reply item as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def entries(raw: Any) -> list[LogEntry]:
    """Decode a raw XRANGE reply: a list of (id, fields) in bytes."""
    return [ev.decode_entry(entry_id, fields) for entry_id, fields in raw or ()]
