"""Where a scan's log comes from: a live Redis stream, or an exported file.

A `Log` keeps each entry exactly as stored (`RawEntry`: its id and its fields, as bytes)
beside the decoded `LogEntry`s that every fold reads, so export is byte-faithful and
replay uses the very same decoder as the API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio

from scanstream import events as ev
from scanstream.errors import ConfigError, ScanNotFound, ScanstreamError
from scanstream.events import LogEntry, ScanRequested
from scanstream.ids import is_scan_id, is_stream_id, stream_id_key
from scanstream.settings import Settings
from scanstream.storage.connection import Storage
from scanstream.storage.exchange import LogExchange


class ReplayError(ScanstreamError):
    """A replay input cannot be used: a malformed file, an unknown entry, a bad option."""


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One stream entry as stored: its id and its fields, in order, as bytes."""

    id: str
    fields: tuple[tuple[bytes, bytes], ...]

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None

    @property
    def well_formed(self) -> bool:
        """Exactly the two fields `type` then `data`, as every writer stores them."""
        return [k for k, _ in self.fields] == [b"type", b"data"]

    def decode(self) -> LogEntry:
        return ev.decode_entry(self.id, dict(self.fields))


@dataclass
class Log:
    """A scan's whole log. `origin` says where it was read from (for messages)."""

    scan_id: str
    raw: Sequence[RawEntry]
    origin: str
    prefix: str | None = None
    header: Mapping[str, Any] = field(default_factory=dict)  # an exported file's header line
    entries: list[LogEntry] = field(init=False)

    def __post_init__(self) -> None:
        self.entries = [r.decode() for r in self.raw]

    @property
    def requested(self) -> ScanRequested | None:
        for entry in self.entries:
            if isinstance(entry.event, ScanRequested):
                return entry.event
        return None

    @property
    def user_id(self) -> str | None:
        requested = self.requested
        if requested is not None:
            return requested.user_id
        value = self.header.get("user_id")
        return value if isinstance(value, str) else None


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream id as (ms, seq), which is how Redis orders them."""
    try:
        return stream_id_key(entry_id)
    except ValueError as exc:
        raise ReplayError(str(exc)) from None


def is_entry_id(value: str) -> bool:
    return is_stream_id(value)


def entry_ms(entry_id: str) -> int:
    """The Redis clock time (ms since the epoch) at which the entry was appended."""
    return entry_key(entry_id)[0]


def entry_time(entry_id: str) -> str:
    """`entry_ms` as RFC 3339 UTC with milliseconds."""
    moment = datetime.fromtimestamp(entry_ms(entry_id) / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def fetch_log(exchange: LogExchange, scan_id: str) -> Log:
    """Read a scan's whole stream from Redis. `ScanNotFound` if it has none."""
    if not is_scan_id(scan_id):
        raise ScanNotFound(f"not a scan id: {scan_id[:80]!r}")
    raw = [RawEntry(entry_id, fields) for entry_id, fields in await exchange.read_all(scan_id)]
    prefix = exchange.prefix
    if not raw:
        raise ScanNotFound(f"no log for {scan_id} under prefix {prefix!r} (unknown or expired)")
    return Log(scan_id=scan_id, raw=raw, origin=f"redis, prefix {prefix}", prefix=prefix)


def redis_url_of(settings: Settings) -> str:
    if not settings.redis_url:
        raise ConfigError(
            "SCANSTREAM_REDIS_URL is not set: point it at the Redis that holds the scan "
            "(`scanstream dev` prints its URL), or replay an exported file with --file"
        )
    return settings.redis_url


async def fetch_with_settings(settings: Settings, scan_id: str) -> Log:
    storage = Storage.connect(settings, url=redis_url_of(settings), max_connections=2)
    try:
        return await fetch_log(storage.exchange, scan_id)
    finally:
        await storage.aclose()


def load_log(target: str, *, settings: Settings | None = None) -> Log:
    """A scan's log from Redis (`target` is a scan id) or from an exported file (a path).

    Synchronous, for scripts and the CLI; async code calls `fetch_log` instead.
    """
    if is_scan_id(target):
        resolved = settings or Settings.from_env()
        return anyio.run(fetch_with_settings, resolved, target)
    from scanstream.replay.exchange import read_export

    return read_export(target)
