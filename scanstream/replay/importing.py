"""Import an exported log into any Redis: the stream, its fence hash, the owner's listing.

Entry ids are kept as exported, in both modes, so the imported scan's timeline matches
the file's line by line (`--at ENTRY_ID` means the same on both). With `as_new` only the
scan id (the key) changes: no event's data holds the scan id. `user` rewrites `user_id`
in `scan.requested` and `scan.cancel_requested` (those entries are re-encoded; every other
entry stays byte for byte). See docs/replay.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from scanstream import events as ev
from scanstream.ids import is_scan_id, is_user_id, new_scan_id
from scanstream.replay.fence import fence_fields
from scanstream.replay.source import Log, RawEntry, ReplayError
from scanstream.storage.exchange import LogExchange

USER_FIELDS = frozenset({b"scan.requested", b"scan.cancel_requested"})
_object = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class Imported:
    scan_id: str
    user_id: str | None
    entries: int
    fence: dict[str, str]
    ttl_s: int | None  # set when the scan had ended: the retention period, from now
    listed: bool  # added to the owner's scan list


def with_user(raw: Sequence[RawEntry], user: str) -> list[RawEntry]:
    """The entries with `user_id` rewritten in scan.requested / scan.cancel_requested."""
    out = []
    for entry in raw:
        type_, data = entry.get(b"type"), entry.get(b"data")
        if entry.well_formed and type_ in USER_FIELDS and data is not None:
            try:
                body = _object.decode(data)
            except msgspec.DecodeError:
                body = None
            if body is not None and "user_id" in body:
                body["user_id"] = user
                entry = RawEntry(entry.id, ((b"type", type_), (b"data", ev.encode_obj(body))))
        out.append(entry)
    return out


async def import_log(
    exchange: LogExchange,
    log: Log,
    *,
    as_new: bool = False,
    user: str | None = None,
    retention_s: float,
) -> Imported:
    """Write `log` as a scan through `exchange`. `ScanConflict` if that scan id is taken."""
    if not log.raw:
        raise ReplayError("the log is empty: nothing to import")
    if user is not None and not is_user_id(user):
        raise ReplayError(f"not a user id: {user!r}")
    scan_id = new_scan_id() if as_new else log.scan_id
    if not is_scan_id(scan_id):
        raise ReplayError(f"not a scan id: {scan_id!r}")
    raw = with_user(log.raw, user) if user is not None else list(log.raw)
    rewritten = Log(scan_id=scan_id, raw=raw, origin=log.origin, prefix=exchange.prefix)
    fence = fence_fields(rewritten.entries, scan_id)
    ttl = max(1, int(retention_s)) if "terminal" in fence else None
    await exchange.write(scan_id, [(r.id, r.fields) for r in raw], fence, ttl)
    owner = rewritten.user_id
    listed = bool(fence) and owner is not None and is_user_id(owner)
    if listed and owner is not None:
        # Outside the transaction: the listing is in another hash slot (see storage/keys.py).
        await exchange.list_for(owner, scan_id)
    return Imported(scan_id, owner, len(raw), fence, ttl, listed)
