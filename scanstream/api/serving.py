"""How the API is served: uvicorn with the limited HTTP protocol and the HTTP settings.

`scanstream api`, `scanstream dev` and the tests' server all take their uvicorn options
from `uvicorn_options`, so what the tests exercise is what production runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from typing import Any, cast

from scanstream.api.protocol import HttpLimits, LimitedHttpProtocol
from scanstream.settings import Settings

log = logging.getLogger("scanstream.api")

# File descriptors a process needs beside its HTTP connections: Redis pools, logs, ...
SPARE_FDS = 1024


def protocol_for(limits: HttpLimits) -> type[asyncio.Protocol]:
    """The protocol class uvicorn instantiates per connection, with `limits` bound. (A
    partial of a module-level class: `--workers N` pickles it into each worker.)"""
    return cast(type[asyncio.Protocol], functools.partial(LimitedHttpProtocol, limits=limits))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The options of `uvicorn.run` / `uvicorn.Config` that harden the HTTP server."""
    return {
        "http": protocol_for(HttpLimits.of(settings)),
        # No WebSocket routes: an Upgrade header is ignored and the request answered as
        # plain HTTP (uvicorn would hand it to a WebSocket library, whose refusal is text).
        "ws": "none",
        "timeout_keep_alive": settings.keepalive_timeout_s,
        "limit_concurrency": None,  # the protocol's connection cap answers in JSON instead
    }


def fit_open_files(settings: Settings) -> None:
    """Raise this process's open-file limit (soft, up to the hard one) so the connection
    cap, not EMFILE, is what refuses connections; say so when it cannot."""
    needed = settings.max_connections + SPARE_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-file limit %d is below SCANSTREAM_MAX_CONNECTIONS (%d) + %d: past it new "
            "connections fail at accept() instead of getting 503 server_busy; raise "
            "`ulimit -n` or lower SCANSTREAM_MAX_CONNECTIONS",
            soft,
            settings.max_connections,
            SPARE_FDS,
        )
