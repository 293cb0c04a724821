"""The API's HTTP/1.1 connections: uvicorn's httptools protocol with limits, so that one
API process outlasts oversized, stalled and malformed requests, and every answer the
server makes on its own is the contract's JSON error.

- The request line and headers of one request take at most `max_header_bytes`: past it,
  `431 request_header_too_large`, without reading (or keeping) the rest. httptools has no
  such limit of its own and buffers a header whole.
- Its headers must be complete `header_timeout_s` after the connection opened, or after
  a kept-alive connection's next request began; its body `body_timeout_s` after the
  headers. Past either: `408 request_timeout` (unless the app already answered, or nothing
  of a request came at all), and the connection is closed.
- Past `max_connections` open connections on the process, a new one is answered
  `503 server_busy` with `Retry-After` at once, and never reaches the app.
- Bytes that are not HTTP/1.1 are `400 invalid_request` (uvicorn's own answer is text).

Each of these answers closes the connection *lingering*: the answer is written, the
sending side shut, and what the client still sends is read and dropped for up to
`LINGER_S` before the socket closes. Closing with unread input would reset the
connection, and a reset can destroy the answer before the client reads it.

uvicorn serves with this class through `scanstream.api.serving`. It overrides
data_received, connection_made/lost and three per-request callbacks of uvicorn's
`HttpToolsProtocol`, and reads its state (cycle, scope, pipeline, flow):
tests/test_http_hardening.py checks each behaviour over a real socket, so an uvicorn
release that changes them fails there, not in production.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from scanstream.api.errors import RETRY_AFTER_S, error_body
from scanstream.settings import Settings

# Seconds a refused connection keeps draining the client's input before it closes.
LINGER_S = 2.0


@dataclass(frozen=True)
class HttpLimits:
    """The per-process HTTP limits (defaults: `Settings`'); see the module docstring."""

    max_header_bytes: int = Settings.max_header_bytes
    header_timeout_s: float = Settings.header_timeout_s
    body_timeout_s: float = Settings.body_timeout_s
    max_connections: int = Settings.max_connections

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=settings.max_connections,
        )


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools then stops and raises from feed_data."""


def error_answer(
    status: int, code: str, detail: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A whole HTTP/1.1 error answer (the connection closes after it)."""
    body = error_body(code, detail)
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"cache-control: no-store",
        b"connection: close",
    ]
    if status in (429, 503):
        lines.append(b"retry-after: " + str(RETRY_AFTER_S).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with `HttpLimits` (uvicorn passes the first three
    arguments; `serving.protocol_for` binds `limits`)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._max_head = limits.max_header_bytes
        self._in_head = True  # no request, or one whose headers have not all come
        self._head_room = self._max_head  # bytes the current head may still take
        # A head that began inside a read (after a pipelined request that ended in it) was
        # not counted in data_received: on_headers_complete measures it instead.
        self._uncounted = False
        # uvicorn makes a new scope at each request's first byte: the scope of the last
        # request whose headers ended tells whether another has begun since.
        self._scope_done: Any = None
        self._heads = 0  # requests whose headers ended
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered by the protocol itself: input is dropped
        self._deferred: bytes | None = None  # that answer, once the one being sent is out

    # -- connections -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                503,
                "server_busy",
                "This server has too many open connections; retry shortly.",
            )
            return
        self._arm(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # -- reading -----------------------------------------------------------------------
    # The hot path: one call per read, one per request in on_headers_complete,
    # on_message_complete and on_response_complete; no timer for a request that comes
    # whole in one read. (Overriding the per-header callbacks cost more than the rest.)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after our answer: drop what still comes
        scope, rest, heads = self.scope, b"", self._heads
        if self._in_head:
            if scope is self._scope_done:
                self._uncounted = False  # a head starts with this read: counted from here
            room = self._head_room
            if len(data) > room:
                # Feed only what the head may still take: if it has not ended there, it
                # is refused, and the rest (maybe megabytes) is never buffered.
                data, rest = data[:room], data[room:]
            else:
                self._head_room = room - len(data)
        try:
            self.parser.feed_data(data)
            if rest:
                if self._heads == heads:
                    self._too_large()
                    return
                self.parser.feed_data(rest)
        except httptools.HttpParserUpgrade:
            # No WebSocket or h2c here: the request is answered as plain HTTP/1.1, and the
            # connection closes after it (the parser reads nothing past an upgrade).
            if self.cycle is not None:
                self.cycle.keep_alive = False
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._too_large()
            else:
                detail = f"The request is not valid HTTP/1.1 ({exc or 'malformed'})."
                self._refuse(400, "invalid_request", detail)
            return
        if self.scope is scope and self._in_head and scope is self._scope_done:
            return  # no request begun: blank lines between requests; keep-alive still runs
        self._unset_keepalive_if_required()
        if self._timer is None:  # timers only for requests that do not come in one read
            if not self._in_head:
                self._watch_body()
            elif self.scope is not self._scope_done:
                self._arm(self.limits.header_timeout_s, self._header_timeout)

    def _watch_body(self) -> None:
        """Time the body of the request being served, while it has not all come. (A
        pipelined request waits, unread, for the one before it: its turn comes in
        on_response_complete.)"""
        cycle = self.cycle
        if (
            self._timer is None
            and not self._in_head
            and not self.pipeline
            and cycle is not None
            and cycle.more_body
            and not cycle.response_complete
        ):
            self._arm(self.limits.body_timeout_s, self._body_timeout)

    # -- parser callbacks --------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if self._uncounted:
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self._max_head:
                raise _HeadTooLarge  # httptools stops and raises it from feed_data
        self._in_head = False
        self._scope_done = self.scope
        self._heads += 1
        if self._timer is not None:
            self._disarm()
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        if self._timer is not None:
            self._disarm()
        self._in_head = self._uncounted = True  # the rest of this read is not counted
        self._head_room = self._max_head  # the next request's

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)  # starts a pipelined request, if any
        if self._deferred is not None:
            if self.cycle.response_complete and not self.pipeline:
                answer, self._deferred = self._deferred, None
                self._answer_and_close(answer)
        elif not self._in_head and not self._refused:
            self._watch_body()  # a pipelined request now being served

    # -- timeouts ----------------------------------------------------------------------

    def _arm(self, delay_s: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay_s, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        if self.scope is self._scope_done:
            self.transport.close()  # not a byte of a request: nobody to answer
        else:
            self._refuse(
                408,
                "request_timeout",
                f"The request's headers did not arrive within {self.limits.header_timeout_s:g} s.",
            )

    def _body_timeout(self) -> None:
        self._timer = None
        if self.cycle is None or self.cycle.response_started:
            self.transport.close()  # the app has answered: the rest of the body is moot
            return
        self._refuse(
            408,
            "request_timeout",
            f"The request's body did not arrive within {self.limits.body_timeout_s:g} s.",
        )

    # -- the protocol's own answers ----------------------------------------------------

    def _too_large(self) -> None:
        self._refuse(
            431,
            "request_header_too_large",
            f"The request line and headers are over the limit of "
            f"{self.limits.max_header_bytes} bytes.",
        )

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer and close (lingering). Behind an answer still being sent, after it:
        HTTP/1.1 answers go out in the order of the requests."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._disarm()
        answer = error_answer(status, code, detail, self.server_state.default_headers)
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete and not cycle.disconnected
        if busy and cycle.more_body:
            # It is this request's body that failed: the app reading it gets a disconnect,
            # and whatever it answers after that is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started or self.pipeline:
                self.transport.close()  # no room for an answer of ours in between
                return
            busy = False
        if busy:
            self._deferred = answer  # a pipelined request's: after the answer being sent
        else:
            self._answer_and_close(answer)

    def _answer_and_close(self, answer: bytes) -> None:
        """Write, shut the sending side, drain the input for LINGER_S, close."""
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.transport.write(answer)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)
