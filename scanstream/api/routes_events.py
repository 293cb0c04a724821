"""`GET /v1/scans/{id}/events`: the scan's log as Server-Sent Events, replayed then followed.

Everything that can go wrong is answered before the stream starts, as a plain JSON error:
401 (no, bad or expired token; this scan's stream token works here, and is the only token
`?access_token=` takes), 404 (unknown, malformed, expired or another user's scan), 400 (a
resume id that is malformed or not an entry of this scan's stream), 429 (too many streams
for the user or the process), 503 (Redis unreachable). A token is checked when the stream
opens: one that expires while the stream is open does not cut it.

The resume point is the `Last-Event-ID` header, else `?after=`. `0-0` means "from the
start"; any other id must be an entry of this scan's stream (checked for free: the first
replay page is read from that id inclusively), so a foreign or invented id is a 400,
never a silent restart and never another scan's data. Resuming after the terminal event
answers `204 No Content`: nothing more will ever come, and a browser's EventSource stops
reconnecting on a 204.

Every Redis read here is bounded by the request deadline: the set-up as a whole (the wait
for a replay slot included) before the stream starts, then each replay page. A Redis that
does not answer in time is a 503 before the stream, or a comment and the end of the
stream after it (the client resumes with `Last-Event-ID`).
"""

from __future__ import annotations

import time

import anyio
from anyio import CancelScope
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from scanstream.api.auth import authenticate
from scanstream.api.context import context
from scanstream.api.errors import BadRequest, RateLimited
from scanstream.api.inputs import entry_id
from scanstream.errors import StoreUnavailable
from scanstream.events import LogEntry
from scanstream.ids import stream_id_key
from scanstream.live import sse
from scanstream.live.admission import Full
from scanstream.live.fanout import RETRY_AFTER_S, Fanout
from scanstream.live.subscriber import CLOSE, HEARTBEAT, Subscriber

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer this response
]


def fanout_of(request: Request) -> Fanout:
    live: Fanout = request.app.state.live
    return live


def resume_point(request: Request) -> str | None:
    """The id to resume after: `Last-Event-ID` (what EventSource sends when it reconnects)
    wins over `?after=`. Either one malformed (even the one that loses) is a 400."""
    after = entry_id(request.query_params.get("after"), "after")
    header = entry_id(request.headers.get("last-event-id"), "Last-Event-ID")
    return header if header is not None else after


async def events(request: Request) -> Response | EventStream:
    ctx = context(request)
    scan_id = request.path_params["scan_id"]
    user = authenticate(request, ctx.secrets, stream_of=scan_id)
    after = resume_point(request)
    fanout = fanout_of(request)
    try:
        sub = fanout.admit(user, scan_id)
    except Full as exc:
        raise RateLimited(exc.detail, RETRY_AFTER_S) from None
    try:
        with fanout.deadline():
            async with fanout.read_slots:
                view = await ctx.service.get_view(user, scan_id)  # 404 before any stream
                if not view.terminal:
                    await fanout.follow(sub)  # before the first read: no gap at the handoff
                first = await fanout.read_page(scan_id, after, inclusive=True)
        if after is not None and after != "0-0":
            if not first or first[0].id != after:
                raise BadRequest(
                    f"Last-Event-ID / after: {after} is not an event of this "
                    "scan; resume with an id this stream sent, or 0-0 to start "
                    "from the beginning."
                )
            first = first[1:]
    except BaseException:
        fanout.close(sub)
        raise
    if view.terminal and not first:
        fanout.close(sub)
        return Response(status_code=204, headers={"Cache-Control": "no-cache"})
    return EventStream(fanout, sub, first, after)


class EventStream:
    """The ASGI response: replay pages, then the subscriber's queue, until the terminal
    event. A client that goes away cancels it at once (and `finally` releases everything);
    a dropped subscriber that cannot send its last bytes in time is cut off."""

    def __init__(
        self, fanout: Fanout, sub: Subscriber, first: list[LogEntry], after: str | None
    ) -> None:
        self.fanout = fanout
        self.sub = sub
        self.first = first
        self.last = stream_id_key(after) if after else (0, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope.get("method") == "HEAD":
                await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
                await send({"type": "http.response.body", "body": b""})
                return
            async with anyio.create_task_group() as tg:
                self.sub.abort = tg.cancel_scope.cancel
                tg.start_soon(_until_disconnect, receive, tg.cancel_scope)
                await self._stream(send)
                tg.cancel_scope.cancel()
        finally:
            self.sub.abort = None
            self.fanout.close(self.sub)

    async def _write(self, send: Send, body: bytes, *, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": more})
        self.sub.last_write = time.monotonic()

    async def _stream(self, send: Send) -> None:
        sub = self.sub
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        try:
            if await self._replay(send):
                return
        except StoreUnavailable:
            await self._write(
                send,
                sse.comment("the store is unreachable; reconnect with Last-Event-ID"),
                more=False,
            )
            return
        if sub.following is None:  # the scan had ended: the replay was all of it
            await self._write(send, b"", more=False)
            return
        while True:
            items = await sub.next_batch()
            if sub.dropped is not None:  # its backlog is not sent: it resumes from its last id
                note = f"closed: {sub.dropped}; reconnect with Last-Event-ID"
                await self._write(send, sse.comment(note), more=False)
                return
            out: list[bytes] = []
            beat = terminal = False
            for item in items:
                if item is HEARTBEAT:
                    beat = True
                elif item is not CLOSE and item.key > self.last:
                    out.append(item.data)
                    self.last = item.key
                    if item.terminal:
                        terminal = True
                        break
            if terminal:
                await self._write(send, b"".join(out), more=False)
                return
            if out or beat:
                await self._write(send, b"".join(out) or sse.KEEPALIVE)

    async def _replay(self, send: Send) -> bool:
        """Send the log after the resume point; True when the stream is over."""
        sub, page, chunk = self.sub, self.first, [sse.START]
        while True:
            for entry in page:
                chunk.append(sse.message(sub.scan_id, entry))
                self.last = stream_id_key(entry.id)
                if sse.ends_stream(entry):
                    await self._write(send, b"".join(chunk), more=False)
                    return True
            await self._write(send, b"".join(chunk))
            chunk = []
            if sub.dropped is not None:
                await self._write(send, sse.comment(f"closed: {sub.dropped}"), more=False)
                return True
            if len(page) < self.fanout.page_size:
                return False
            with self.fanout.deadline():
                async with self.fanout.read_slots:
                    page = await self.fanout.read_page(sub.scan_id, sse.id_str(self.last))


async def _until_disconnect(receive: Receive, scope: CancelScope) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


ROUTES: list[BaseRoute] = [
    Route("/v1/scans/{scan_id}/events", events, methods=["GET"]),
]
