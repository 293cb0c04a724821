"""The dashboard: `GET /` and its static files under `/static/`, with no auth (the page asks
for a token, or takes it from `/#token=...` (asking first if it holds another user's), and
sends it in the Authorization header; its event streams get stream tokens of their own).

The files ship inside the package (`scanstream/web/`), are read once, and are served with
an ETag so a reload costs a 304. No CDN, no build step: the page works offline.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY = {
    # Everything the page loads comes from here; the API is same-origin.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token can sit in the URL's fragment
}


@cache
def _asset(name: str) -> tuple[bytes, str, str] | None:
    """(body, content type, etag) of a file of `scanstream/web/`, or None."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in TYPES or "/" in name or name.startswith("."):
        return None
    path = resources.files("scanstream").joinpath("web", name)
    if not path.is_file():
        return None
    body = path.read_bytes()
    return body, TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _serve(request: Request, name: str) -> Response:
    found = _asset(name)
    if found is None:
        raise HTTPException(404)
    body, media_type, etag = found
    headers = {**SECURITY, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


async def index(request: Request) -> Response:
    return _serve(request, "index.html")


async def static(request: Request) -> Response:
    return _serve(request, request.path_params["name"])


ROUTES: list[BaseRoute] = [
    Route("/", index, methods=["GET"]),
    Route("/static/{name}", static, methods=["GET"]),
]
