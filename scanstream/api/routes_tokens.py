"""`POST /v1/scans/{id}/stream-token`: a short-lived token for one scan's event stream.

A browser's EventSource cannot send headers, so its token goes in the URL, and a URL ends
up in proxy logs, browser history and referrers. What goes there is this token: it opens
`GET /v1/scans/{id}/events` of this one scan, for `SCANSTREAM_STREAM_TOKEN_TTL` seconds,
and nothing else. Only the caller's own token makes one (a stream token does not), and
only for a scan the caller may see (else the usual 404).
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scanstream.api.auth import authenticate, issue, rfc3339
from scanstream.api.bodies import StreamToken
from scanstream.api.context import context
from scanstream.api.inputs import json_response

_encode = msgspec.json.Encoder().encode


async def stream_token(request: Request) -> Response:
    ctx = context(request)
    user = authenticate(request, ctx.secrets)
    scan_id = request.path_params["scan_id"]
    await ctx.service.get_view(user, scan_id)  # 404 for a scan the caller may not see
    token, expires_at = issue(
        ctx.secrets[0], user, ctx.settings.stream_token_ttl_s, scan_id=scan_id
    )
    return json_response(_encode(StreamToken(token=token, expires_at=rfc3339(expires_at))))


ROUTES: list[BaseRoute] = [
    Route("/v1/scans/{scan_id}/stream-token", stream_token, methods=["POST"]),
]
