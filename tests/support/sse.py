"""Helpers for the live-progress tests: an SSE reader over httpx, scans driven through the
API and the store, the fan-out's figures from /metrics, and in-process workers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from scanstream import events as ev
from scanstream.api.auth import make_token
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from scanstream.strategies.registry import load_strategies
from tests.conftest import SECRET
from tests.support.api_events import auth as bearer
from tests.support.api_events import opportunity
from tests.support.scans import workers_running


def token(user: str = "alice") -> str:
    return make_token(SECRET, user)


@dataclass
class Message:
    id: str
    event: str
    data: str

    @property
    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.data)
        return body


@dataclass
class Stream:
    """What one SSE response delivered: messages, comment lines, and whether it ended."""

    status: int
    headers: Mapping[str, str]
    messages: list[Message] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: bool = False

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.messages]


async def read_stream(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    stop_after: int | None = None,
    timeout_s: float = 20.0,
    idle_s: float | None = None,
) -> Stream:
    """Read an SSE response until it ends, `stop_after` messages arrived, or `idle_s`
    seconds passed (then the connection is closed by us)."""
    out: Stream
    deadline = time.monotonic() + (idle_s if idle_s is not None else timeout_s)
    async with client.stream("GET", url, headers=dict(headers or {})) as response:
        out = Stream(response.status_code, response.headers)
        if response.status_code != 200:
            await response.aread()
            return out
        fields: dict[str, str] = {}
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            async for line in response.aiter_lines():
                if line == "":
                    if "data" in fields:
                        out.messages.append(
                            Message(
                                fields.get("id", ""), fields.get("event", "message"), fields["data"]
                            )
                        )
                        if stop_after is not None and len(out.messages) >= stop_after:
                            return out
                    fields = {}
                elif line.startswith(":"):
                    out.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
            out.ended = True
        if not out.ended and idle_s is None:
            raise AssertionError(f"the stream did not end within {timeout_s}s: {out.ids[-3:]}")
    return out


async def read_log(
    client: httpx.AsyncClient, scan_id: str, user: str = "alice"
) -> list[dict[str, Any]]:
    """The whole `/log`, every page."""
    events: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": "1000", **({"after": after} if after else {})}
        r = await client.get(f"/v1/scans/{scan_id}/log", params=params, headers=bearer(user))
        assert r.status_code == 200, r.text
        body = r.json()
        events += body["events"]
        after = body["next"]
        if after is None:
            return events


async def create_scan(
    client: httpx.AsyncClient,
    strategies: Sequence[str],
    params: dict[str, Any] | None = None,
    user: str = "alice",
) -> str:
    r = await client.post(
        "/v1/scans",
        json={"strategies": list(strategies), "params": params or {}},
        headers=bearer(user),
    )
    assert r.status_code == 202, r.text
    scan_id: str = r.json()["scan_id"]
    return scan_id


async def metric(client: httpx.AsyncClient, name: str) -> float:
    """One unlabelled sample of /metrics."""
    text = (await client.get("/metrics")).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} is not in /metrics"
    return float(found.group(1))


async def wait_for_metric(
    client: httpx.AsyncClient, name: str, value: float, timeout_s: float = 5.0
) -> float:
    """Poll /metrics until `name` equals `value`; returns the seconds it took."""
    start = time.monotonic()
    while True:
        if await metric(client, name) == value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{name} is {await metric(client, name)}, not {value}")
        await anyio.sleep(0.02)


async def run_strategy(
    store: EventStore, scan_id: str, strategy: str, steps: int = 3, finds: int = 1, blob: str = ""
) -> str | None:
    """One whole attempt written through the store (as a worker would): started, `steps`
    progress events, `finds` opportunities, completed. Returns the terminal type if it
    ended the scan."""
    started = await store.start_strategy(scan_id, strategy, "test-worker")
    assert started.ok, started
    attempt = started.attempt
    for i in range(steps):
        batch: list[ev.Event] = [
            ev.stamp(
                ev.StrategyProgress,
                strategy=strategy,
                attempt=attempt,
                progress=(i + 1) / steps,
                message=f"step {i + 1}",
            )
        ]
        if i < finds:
            batch.insert(
                0,
                ev.stamp(
                    ev.OpportunityFound,
                    strategy=strategy,
                    attempt=attempt,
                    opportunity=opportunity(strategy, f"S{i}", 0.5 + i / 100, blob),
                ),
            )
        wrote = await store.append_strategy_events(scan_id, strategy, attempt, batch)
        assert wrote.ok, wrote
    done = await store.finish_strategy(
        scan_id,
        strategy,
        attempt,
        [
            ev.stamp(
                ev.StrategyCompleted,
                strategy=strategy,
                attempt=attempt,
                opportunities=min(finds, steps),
                duration_ms=1,
            )
        ],
    )
    assert done.ok, done
    return done.terminal


@asynccontextmanager
async def worker_running(
    settings: Settings, strategy_names: Sequence[str] | None = None, concurrency: int = 8
) -> AsyncIterator[None]:
    """A real strategy worker in this event loop, running the built-in and test strategies
    (or only `strategy_names`)."""
    strategies = load_strategies(settings.strategy_modules)
    if strategy_names is not None:
        strategies = {n: strategies[n] for n in strategy_names}
    async with workers_running(settings, strategies, concurrency=concurrency):
        yield
