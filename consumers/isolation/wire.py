"""The strategy-process protocol: length-prefixed msgpack arrays over a socket pair.

worker -> process:  ["run", scan_id, strategy, attempt, params, max_findings]
                    ["status", fenced write status]        (the answer to a "write")
process -> worker:  ["ready"]                               (strategies loaded)
                    ["write", [[type, data], ...]]          (progress with its findings)
                    ["done", pending, found_count, error_type, error_message, stopped,
                     findings_dropped]
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgspec

HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024  # a strategy's findings of one attempt, at the very most

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Any])


def frame(message: list[Any]) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def unframe(body: bytes) -> list[Any]:
    return _decoder.decode(body)


def recv_blocking(sock: socket.socket) -> list[Any] | None:
    """One message, or None once the peer has gone."""
    head = _recv_exactly(sock, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    body = _recv_exactly(sock, size)
    return None if body is None else unframe(body)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
