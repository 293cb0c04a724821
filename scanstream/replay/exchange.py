"""Export a log to JSON Lines and read it back, byte for byte (see docs/replay.md).

    {"format": "scanstream-log", "format_version": 1, "scan_id": ..., "entries": N, ...}
    {"id": "1718000000000-0", "type": "scan.requested", "data": "{\"event_id\":...}"}
    ...

`data` (and `type`) is a JSON string holding the stored bytes when they are UTF-8, else
`{"b64": "..."}`. An entry whose fields are not exactly `type` then `data` is written as
`{"id": ..., "fields": [[name, value], ...]}`, every field in stored order, each encoded the
same way. So an export of a corrupted stream reproduces the corruption exactly.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from scanstream import events as ev
from scanstream import projection
from scanstream.replay.source import Log, RawEntry, ReplayError, entry_key, is_entry_id

FORMAT = "scanstream-log"
FORMAT_VERSION = 1
Value = str | dict[str, str]


def encode_bytes(raw: bytes) -> Value:
    """The stored bytes as JSON: a string when they are UTF-8, else `{"b64": ...}`."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode("ascii")}


def decode_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error as exc:
            raise ReplayError(f"{where}: invalid base64: {exc}") from None
    raise ReplayError(f'{where}: expected a string or {{"b64": ...}}, got {value!r:.80}')


def header_of(log: Log, exported_at: str | None = None) -> dict[str, Any]:
    view = projection.fold_all(log.scan_id, log.entries)
    versions = sorted({e.event.v for e in log.entries if e.event is not None})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scan_id": log.scan_id,
        "user_id": log.user_id,
        "prefix": log.prefix,
        "exported_at": exported_at or ev.now_rfc3339(),
        "entries": len(log.raw),
        "first_entry_id": log.raw[0].id if log.raw else None,
        "last_entry_id": log.raw[-1].id if log.raw else None,
        "state": view.state,
        "schema_versions": versions,
        "unreadable_entries": sum(1 for e in log.entries if e.event is None),
    }


def entry_line(raw: RawEntry) -> dict[str, Any]:
    if raw.well_formed:
        type_, data = raw.fields[0][1], raw.fields[1][1]
        return {"id": raw.id, "type": encode_bytes(type_), "data": encode_bytes(data)}
    return {"id": raw.id, "fields": [[encode_bytes(k), encode_bytes(v)] for k, v in raw.fields]}


def export_lines(log: Log, *, exported_at: str | None = None) -> Iterator[bytes]:
    """The export, one JSON document per line (each ending in a newline)."""
    yield orjson.dumps(header_of(log, exported_at)) + b"\n"
    for raw in log.raw:
        yield orjson.dumps(entry_line(raw)) + b"\n"


def export_log(log: Log, target: str | os.PathLike[str] | IO[bytes]) -> int:
    """Write the export to a path or a binary file; returns the number of entries."""
    if isinstance(target, str | os.PathLike):
        path = Path(target)
        tmp = path.with_name(path.name + ".part")
        with tmp.open("wb") as out:
            out.writelines(export_lines(log))
        tmp.replace(path)  # never leave a half-written export under the real name
    else:
        target.writelines(export_lines(log))
    return len(log.raw)


def _raw_entry(line: dict[str, Any], where: str) -> RawEntry:
    entry_id = line.get("id")
    if not isinstance(entry_id, str) or not is_entry_id(entry_id) or entry_id == "0-0":
        raise ReplayError(f"{where}: missing or invalid entry id")
    if "fields" in line:
        pairs = line["fields"]
        if (
            not isinstance(pairs, list)
            or not pairs
            or not all(isinstance(p, list) and len(p) == 2 for p in pairs)
        ):
            raise ReplayError(f"{where}: fields must be a non-empty list of [name, value] pairs")
        fields = tuple((decode_bytes(k, where), decode_bytes(v, where)) for k, v in pairs)
    else:
        if "type" not in line or "data" not in line:
            raise ReplayError(f"{where}: an entry needs type and data (or fields)")
        fields = (
            (b"type", decode_bytes(line["type"], where)),
            (b"data", decode_bytes(line["data"], where)),
        )
    return RawEntry(entry_id, fields)


def parse_export(lines: Iterable[bytes], origin: str) -> Log:
    """Read an export. Checks the header, the entry count and that ids strictly increase."""
    it = iter(lines)
    first = next(it, b"")
    try:
        header = orjson.loads(first)
    except orjson.JSONDecodeError:
        raise ReplayError(f"{origin}: the first line is not a JSON header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ReplayError(f"{origin}: not a scanstream log export (format != {FORMAT!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ReplayError(
            f"{origin}: format_version {version!r} is newer than this tool reads ({FORMAT_VERSION})"
        )
    scan_id = header.get("scan_id")
    if not isinstance(scan_id, str):
        raise ReplayError(f"{origin}: the header has no scan_id")
    raw: list[RawEntry] = []
    for number, text in enumerate(it, start=2):
        if not text.strip():
            continue
        where = f"{origin}:{number}"
        try:
            line = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ReplayError(f"{where}: not JSON: {exc}") from None
        if not isinstance(line, dict):
            raise ReplayError(f"{where}: not a JSON object")
        entry = _raw_entry(line, where)
        if raw and entry_key(entry.id) <= entry_key(raw[-1].id):
            raise ReplayError(f"{where}: entry id {entry.id} does not follow {raw[-1].id}")
        raw.append(entry)
    if header.get("entries") != len(raw):
        raise ReplayError(
            f"{origin}: the header says {header.get('entries')} entries, "
            f"the file holds {len(raw)} (truncated?)"
        )
    prefix = header.get("prefix")
    return Log(
        scan_id=scan_id,
        raw=raw,
        origin=origin,
        prefix=prefix if isinstance(prefix, str) else None,
        header=header,
    )


def read_export(path: str | os.PathLike[str]) -> Log:
    try:
        with Path(path).open("rb") as f:
            return parse_export(f, str(path))
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}") from None
