"""Scan ids: `scan_` + 32 lowercase hex of a UUIDv7, so ids sort by creation time."""

from __future__ import annotations

import os
import re
import time

# The patterns the API enforces on what clients send; /openapi.json states these very ones.
SCAN_ID_PATTERN = r"scan_[0-9a-f]{32}"
# An entry id sent back to resume (`after`, `Last-Event-ID`): whole numbers of at most 19
# digits, without leading zeros, so every one that passes fits Redis's 64-bit parts.
ENTRY_ID_PATTERN = r"(?:0|[1-9][0-9]{0,18})-(?:0|[1-9][0-9]{0,18})"

SCAN_ID_RE = re.compile(SCAN_ID_PATTERN)
USER_ID_RE = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
ENTRY_ID_RE = re.compile(ENTRY_ID_PATTERN)
STREAM_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")  # any Redis stream entry id


def uuid7_hex(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: 48-bit ms timestamp, version, variant, randomness."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return f"{value:032x}"


def new_scan_id() -> str:
    return "scan_" + uuid7_hex()


def is_scan_id(value: str) -> bool:
    return SCAN_ID_RE.fullmatch(value) is not None


def scan_created_ms(scan_id: str) -> int:
    """The creation time embedded in a UUIDv7 scan id."""
    return int(scan_id[5:17], 16)


def is_user_id(value: str) -> bool:
    return USER_ID_RE.fullmatch(value) is not None


def is_stream_id(value: str) -> bool:
    return STREAM_ID_RE.fullmatch(value) is not None


def is_entry_id(value: str) -> bool:
    """An id a client may resume after (see ENTRY_ID_PATTERN)."""
    return ENTRY_ID_RE.fullmatch(value) is not None


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as (ms, seq), which orders ids as Redis does. ValueError if malformed."""
    match = STREAM_ID_RE.fullmatch(entry_id)
    if match is None:
        raise ValueError(f"not a stream entry id: {entry_id!r}")
    return int(match[1]), int(match[2])
