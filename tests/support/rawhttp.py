"""HTTP/1.1 over a bare socket, for requests no HTTP client library would send: oversized,
malformed, half-sent, stalled."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    closed: bool  # the server closed the connection after it

    def json(self) -> Any:
        return json.loads(self.body)


def address(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").split(":")
    return host, int(port)


def connect(base_url: str, timeout_s: float = 10.0) -> socket.socket:
    return socket.create_connection(address(base_url), timeout=timeout_s)


def read_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it
    does not within `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"still open after {timeout_s}s; got {b''.join(chunks)[:200]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def parse(raw: bytes, closed: bool = True) -> RawAnswer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(status, headers, body, closed)


def exchange(base_url: str, request: bytes, timeout_s: float = 10.0) -> RawAnswer:
    """Send `request` whole, then read the answer up to the server's close."""
    with connect(base_url, timeout_s) as sock:
        sock.sendall(request)
        return parse(read_until_closed(sock, timeout_s))
