"""schemathesis (`--checks all`) against a real server: every request the OpenAPI
document describes, and many it does not, answered as the document says.

A bounded, seeded run (about a minute on 2 cores): a failure it finds is found again on the
next run. `st replay ID`, or the curl line it prints, reproduces one by hand.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from scanstream.api import create_app
from scanstream.settings import Settings
from tests.support.api_events import auth
from tests.support.http import serve

CONFIG = Path(__file__).parent / "schemathesis" / "schemathesis.toml"
SEED = 20_260_110
MAX_EXAMPLES = 40  # per operation and phase: ~40 s on 2 cores
RUN_TIMEOUT_S = 240
TERMINAL = {"completed", "failed", "cancelled"}


@contextmanager
def ending_every_scan(base_url: str, user: str) -> Iterator[None]:
    """Another client of the API cancels each of `user`'s scans as soon as it appears.
    No worker runs here: without this, a long-poll (`?wait=` up to 60 s) or an event
    stream of a queued scan would outlast schemathesis's request timeout."""
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=base_url, headers=auth(user), timeout=10) as client:
            while not stop.wait(0.1):
                try:
                    scans = client.get("/v1/scans", params={"limit": 100}).json()["scans"]
                    for scan in scans:
                        if scan["state"] not in TERMINAL:
                            client.post(f"/v1/scans/{scan['scan_id']}/cancel")
                except httpx.HTTPError:
                    pass  # the server is busy with schemathesis: next round

    thread = threading.Thread(target=run, name="cancel-every-scan", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_schemathesis_finds_no_failure(settings: Settings, tmp_path: Path) -> None:
    """schemathesis's every check (status codes, content types, headers, response and SSE
    schemas, negative and positive data, unsupported methods, auth), all phases, a fixed
    seed: zero failures and zero errors."""
    with serve(create_app(settings), settings=settings) as url, ending_every_scan(url, "alice"):
        t0 = time.monotonic()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(CONFIG),
                "--no-color",
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(SEED),
                "--workers",
                "1",
                "--header",
                f"Authorization: {auth('alice')['Authorization']}",
                "--request-timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            cwd=tmp_path,
            check=False,
        )
        took = time.monotonic() - t0
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20_000:]
    assert "No issues found" in output, output[-5_000:]
    print(f"schemathesis, {took:.0f} s:\n{output[-1_000:]}")
