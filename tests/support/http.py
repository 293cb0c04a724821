"""A real uvicorn server for an ASGI app, on a free port, in a background thread.

    with serve(create_app(settings)) as base_url:
        httpx.get(base_url + "/healthz")

Tests talk to it over a real socket, served as `scanstream api` serves (the limited
HTTP protocol and its settings, scanstream.api.serving), so the body and header limits,
timeouts, chunked uploads and the lifespan behave exactly as in production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from scanstream.api.serving import uvicorn_options
from scanstream.embedded import free_port
from scanstream.settings import Settings

START_TIMEOUT_S = 10.0


@contextmanager
def serve(
    app: ASGIApp, *, host: str = "127.0.0.1", settings: Settings | None = None
) -> Iterator[str]:
    """Run `app` under uvicorn until the block exits; yields its base URL. The HTTP
    limits are `settings`' (default: the defaults)."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings or Settings()),
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # reported to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if failure or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start: {failure or 'the thread exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"uvicorn did not start within {START_TIMEOUT_S}s")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
