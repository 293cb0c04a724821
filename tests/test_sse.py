"""`GET /v1/scans/{id}/events` over a real uvicorn server and a real Redis: replay, live
follow, resume on another API process, heartbeats, caps, slow subscribers, errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import anyio
import httpx
import pytest

from scanstream import events as ev
from scanstream.api.app import create_app
from scanstream.live.fanout import DROP_GRACE_S, Fanout
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from scanstream.storage.keys import Keys
from tests.support.backends import on_both_backends
from tests.support.cluster import LocalCluster
from tests.support.http import serve
from tests.support.procs import api_proc, running
from tests.support.sockets import local_ports
from tests.support.sse import (
    Stream,
    bearer,
    create_scan,
    metric,
    read_log,
    read_stream,
    run_strategy,
    token,
    wait_for_metric,
    worker_running,
)

pytestmark = pytest.mark.anyio

HEARTBEAT_S = 0.2


@pytest.fixture
def sse_settings(settings: Settings) -> Settings:
    return settings.with_(
        sse_heartbeat_s=HEARTBEAT_S, sse_max_per_user=5, sse_max=50, sse_buffer=16
    )


@pytest.fixture
def server(sse_settings: Settings) -> Iterator[tuple[str, Fanout]]:
    app = create_app(sse_settings)
    with serve(app) as base:
        yield base, app.state.live


@pytest.fixture
async def api(server: tuple[str, Fanout]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server[0], timeout=20.0) as client:
        yield client


def events_url(scan_id: str) -> str:
    return f"/v1/scans/{scan_id}/events"


async def finished_scan(api: httpx.AsyncClient, store: EventStore) -> str:
    scan_id = await create_scan(api, ["finder", "noop"])
    await run_strategy(store, scan_id, "finder", steps=3, finds=2)
    assert await run_strategy(store, scan_id, "noop", steps=2, finds=0) == "scan.completed"
    return scan_id


@on_both_backends
async def test_a_finished_scan_replays_in_full_and_the_stream_ends(
    api: httpx.AsyncClient, store: EventStore
) -> None:
    """A finished scan's stream is its whole log, as /log has it, then the stream ends."""
    scan_id = await finished_scan(api, store)
    stream = await read_stream(api, events_url(scan_id), headers=bearer())
    log = await read_log(api, scan_id)
    assert stream.status == 200 and stream.ended
    assert stream.headers["content-type"] == "text/event-stream"
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-accel-buffering"] == "no"
    assert stream.ids == [e["id"] for e in log]
    assert [m.json for m in stream.messages] == log
    assert [m.event for m in stream.messages] == [e["type"] for e in log]
    assert stream.messages[-1].event == "scan.completed"
    assert all(m.json["scan_id"] == scan_id for m in stream.messages)


async def test_sse_data_is_byte_for_byte_what_log_answers(
    api: httpx.AsyncClient, store: EventStore
) -> None:
    """Each message's data is the exact JSON text /log has for the same entry."""
    scan_id = await finished_scan(api, store)
    stream = await read_stream(api, events_url(scan_id), headers=bearer())
    raw_log = (await api.get(f"/v1/scans/{scan_id}/log", headers=bearer())).text
    assert stream.messages and all(m.data in raw_log for m in stream.messages)


@on_both_backends
async def test_live_events_then_resume_on_a_second_api_process_exactly_once(
    api: httpx.AsyncClient, sse_settings: Settings, tmp_path: Path
) -> None:
    """Resuming on a second API process with Last-Event-ID gives the rest exactly once."""
    second = api_proc(sse_settings, tmp_path, SCANSTREAM_SSE_HEARTBEAT=str(HEARTBEAT_S))
    with running(second):
        async with (
            worker_running(sse_settings),
            httpx.AsyncClient(base_url=second.url, timeout=20.0) as other,
        ):
            scan_id = await create_scan(api, ["slow", "finder"], {"slow_s": 1.5, "finds": 3})
            first = await read_stream(api, events_url(scan_id), headers=bearer(), stop_after=6)
            assert first.ids and not first.ended
            rest = await read_stream(
                other, events_url(scan_id), headers={**bearer(), "Last-Event-ID": first.ids[-1]}
            )
            log = await read_log(api, scan_id)
    assert rest.ended and rest.messages[-1].event == "scan.completed"
    assert first.ids + rest.ids == [e["id"] for e in log]
    assert [m.json for m in first.messages + rest.messages] == log


@on_both_backends
async def test_resume_with_the_after_query_parameter(
    api: httpx.AsyncClient, store: EventStore
) -> None:
    """`?after=` resumes like Last-Event-ID, and the header wins when both are sent."""
    scan_id = await finished_scan(api, store)
    ids = [e["id"] for e in await read_log(api, scan_id)]
    by_query = await read_stream(api, events_url(scan_id) + f"?after={ids[2]}", headers=bearer())
    both = await read_stream(
        api, events_url(scan_id) + f"?after={ids[1]}", headers={**bearer(), "Last-Event-ID": ids[4]}
    )
    from_zero = await read_stream(api, events_url(scan_id) + "?after=0-0", headers=bearer())
    assert by_query.ids == ids[3:]
    assert both.ids == ids[5:]
    assert from_zero.ids == ids


async def test_resuming_after_the_terminal_event_is_204(
    api: httpx.AsyncClient, store: EventStore
) -> None:
    """Resuming after a finished scan's last event is 204: EventSource stops reconnecting."""
    scan_id = await finished_scan(api, store)
    last = (await read_log(api, scan_id))[-1]["id"]
    r = await api.get(events_url(scan_id), headers={**bearer(), "Last-Event-ID": last})
    assert r.status_code == 204 and r.content == b""


async def test_heartbeat_comments_arrive_on_an_idle_stream(api: httpx.AsyncClient) -> None:
    """Given a scan nobody works on, the stream sends a comment at least every heartbeat."""
    scan_id = await create_scan(api, ["noop"])
    stream = await read_stream(api, events_url(scan_id), headers=bearer(), idle_s=1.2)
    assert [m.event for m in stream.messages] == ["scan.requested"]
    assert stream.comments.count("keepalive") >= 3  # ~5 expected; slack for a busy machine


async def test_a_disconnect_releases_the_subscriber_within_a_second(
    api: httpx.AsyncClient,
) -> None:
    """A client that goes away stops counting as a subscriber within a second."""
    scan_id = await create_scan(api, ["noop"])
    async with (
        httpx.AsyncClient(base_url=str(api.base_url), timeout=10.0) as viewer,
        viewer.stream("GET", events_url(scan_id), headers=bearer()) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()  # keep a reference: a collected iterator closes it
        assert await lines.__anext__() == "retry: 1000"
        assert await metric(api, "scanstream_sse_subscribers") == 1
        assert await metric(api, "scanstream_sse_watched_streams") == 1
    took = await wait_for_metric(api, "scanstream_sse_subscribers", 0, timeout_s=1.0)
    assert await metric(api, "scanstream_sse_watched_streams") == 0
    assert took < 1.0


@pytest.mark.parametrize(
    "resume", ["abc", "1-", "-1-0", "1.5-0", "99999999999999999999-0", "0-18446744073709551616", ""]
)
async def test_a_malformed_resume_id_is_400(api: httpx.AsyncClient, resume: str) -> None:
    """A Last-Event-ID or ?after= that is not an entry id (empty included) is a 400
    invalid_request; a malformed ?after= is one even when a good Last-Event-ID wins."""
    scan_id = await create_scan(api, ["noop"])
    by_header = await api.get(events_url(scan_id), headers={**bearer(), "Last-Event-ID": resume})
    by_query = await api.get(events_url(scan_id), params={"after": resume}, headers=bearer())
    both = await api.get(
        events_url(scan_id),
        params={"after": resume},
        headers={**bearer(), "Last-Event-ID": "0-0"},
    )
    for r in (by_header, by_query, both):
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_request" and r.json()["detail"]


async def test_a_resume_id_that_is_not_an_entry_of_this_scan_is_400(
    api: httpx.AsyncClient, store: EventStore
) -> None:
    """A resume id from another scan, or past this stream's end, is a 400, not a restart."""
    mine = await create_scan(api, ["noop"])
    other = await finished_scan(api, store)
    other_ids = [e["id"] for e in await read_log(api, other)]
    mine_ids = {e["id"] for e in await read_log(api, mine)}
    foreign = next(i for i in other_ids[1:] if i not in mine_ids)
    ms, _, _ = other_ids[-1].partition("-")
    for resume in (foreign, f"{int(ms) + 60_000}-0", "1-0"):
        r = await api.get(events_url(mine), headers={**bearer(), "Last-Event-ID": resume})
        assert r.status_code == 400, (resume, r.text)
        assert r.json()["error"] == "invalid_request"
        assert "not an event of this scan" in r.json()["detail"]


async def test_an_unknown_or_foreign_scan_is_a_json_404_before_any_stream(
    api: httpx.AsyncClient,
) -> None:
    """Unknown, malformed and another user's scans answer the same JSON 404."""
    bobs = await create_scan(api, ["noop"], user="bob")
    for scan_id in ("scan_" + "0" * 32, "nope", bobs):
        r = await api.get(events_url(scan_id), headers=bearer("alice"))
        assert r.status_code == 404, scan_id
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {"error": "not_found", "detail": "No such scan."}


async def mint(api: httpx.AsyncClient, scan_id: str, user: str = "alice") -> dict[str, str]:
    r = await api.post(f"/v1/scans/{scan_id}/stream-token", headers=bearer(user))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, str] = r.json()
    return body


async def test_access_token_takes_a_stream_token_and_a_bad_one_is_401(
    api: httpx.AsyncClient, store: EventStore
) -> None:
    """`?access_token=` with a stream token of the scan opens its stream (EventSource); a
    missing or forged one, or the user's own long-lived token, is 401."""
    scan_id = await finished_scan(api, store)
    minted = await mint(api, scan_id)
    assert set(minted) == {"token", "expires_at"}
    ok = await read_stream(api, events_url(scan_id) + f"?access_token={minted['token']}")
    assert ok.status == 200 and ok.ended
    for query in ("?access_token=forged.token", "", f"?access_token={token()}"):
        r = await api.get(events_url(scan_id) + query)
        assert r.status_code == 401, query
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"] == "unauthorized"
    own = await api.get(events_url(scan_id) + f"?access_token={token()}")
    assert "stream-token" in own.json()["detail"]  # says what to do instead


async def test_a_stream_token_opens_only_its_own_scans_events(
    api: httpx.AsyncClient, store: EventStore
) -> None:
    """A stream token is refused on another scan (even the same user's), on every other
    route, and for minting more; only the owner of a scan can mint one for it."""
    scan_id = await finished_scan(api, store)
    other = await finished_scan(api, store)
    scoped = (await mint(api, scan_id))["token"]
    as_header = {"Authorization": f"Bearer {scoped}"}

    assert (await read_stream(api, events_url(scan_id), headers=as_header)).status == 200
    for method, path, headers in (
        ("GET", events_url(other) + f"?access_token={scoped}", {}),
        ("GET", events_url(other), as_header),
        ("GET", f"/v1/scans/{scan_id}", as_header),
        ("GET", f"/v1/scans/{scan_id}/results", as_header),
        ("GET", f"/v1/scans/{scan_id}/log", as_header),
        ("GET", "/v1/scans", as_header),
        ("GET", "/v1/strategies", as_header),
        ("POST", f"/v1/scans/{scan_id}/cancel", as_header),
        ("POST", f"/v1/scans/{scan_id}/stream-token", as_header),
        ("GET", f"/v1/scans/{scan_id}?access_token={scoped}", {}),
    ):
        r = await api.request(method, path, headers=headers)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"] == "unauthorized"
    bobs = await create_scan(api, ["noop"], user="bob")
    for scan in (bobs, "scan_" + "0" * 32, "nope"):
        r = await api.post(f"/v1/scans/{scan}/stream-token", headers=bearer("alice"))
        assert r.status_code == 404 and r.json()["error"] == "not_found", scan
    assert (await api.post(f"/v1/scans/{scan_id}/stream-token")).status_code == 401


async def test_a_stream_token_is_refused_after_it_expires(
    sse_settings: Settings, store: EventStore
) -> None:
    """With SCANSTREAM_STREAM_TOKEN_TTL=1, a stream token opens the stream at once and is
    a 401 saying it expired once `expires_at` has passed."""
    with serve(create_app(sse_settings.with_(stream_token_ttl_s=1))) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20.0) as api:
            scan_id = await finished_scan(api, store)
            minted = await mint(api, scan_id)
            url = events_url(scan_id) + f"?access_token={minted['token']}"
            assert (await read_stream(api, url)).status == 200
            expires_at = datetime.fromisoformat(minted["expires_at"]).timestamp()
            assert 1 <= expires_at - time.time() <= 2
            await anyio.sleep(expires_at - time.time() + 0.05)
            r = await api.get(url)
            assert r.status_code == 401
            assert "expired" in r.json()["detail"]


async def test_the_per_user_cap_answers_429_with_retry_after(api: httpx.AsyncClient) -> None:
    """A stream over the per-user cap is 429 with Retry-After; other users go on."""
    scan_id = await create_scan(api, ["noop"])
    bobs = await create_scan(api, ["noop"], user="bob")
    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=10.0) as viewer:
        held = [viewer.stream("GET", events_url(scan_id), headers=bearer()) for _ in range(5)]
        responses = [await h.__aenter__() for h in held]
        assert [r.status_code for r in responses] == [200] * 5
        refused = await api.get(events_url(scan_id), headers=bearer())
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        bob = await read_stream(api, events_url(bobs), headers=bearer("bob"), stop_after=1)
        assert bob.status == 200
        await held[0].__aexit__(None, None, None)
        await wait_for_metric(api, "scanstream_sse_subscribers", 4)
        again = await read_stream(api, events_url(scan_id), headers=bearer(), stop_after=1)
        assert again.status == 200
        for h in held[1:]:
            await h.__aexit__(None, None, None)
    assert await metric(api, "scanstream_sse_rejected_total") == 1


async def test_a_slow_subscriber_is_dropped_while_a_fast_one_gets_everything(
    sse_settings: Settings, store: EventStore
) -> None:
    """A client that reads nothing is dropped (resumably); a fast one gets every event."""
    with serve(create_app(sse_settings.with_(sse_buffer=64))) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30.0) as api:
            await _slow_and_fast(api, store)


async def _slow_and_fast(api: httpx.AsyncClient, store: EventStore) -> None:
    scan_id = await create_scan(api, ["finder"])
    async with (
        httpx.AsyncClient(base_url=str(api.base_url), timeout=30.0) as slow_client,
        slow_client.stream("GET", events_url(scan_id), headers=bearer()) as slow,
    ):
        assert slow.status_code == 200
        fast: list[Stream] = []

        async def read_fast() -> None:
            fast.append(await read_stream(api, events_url(scan_id), headers=bearer(), timeout_s=60))

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_fast)
            await wait_for_metric(api, "scanstream_sse_subscribers", 2)
            # 250 events of ~100 KB: far more than socket buffers and a 64-event backlog hold
            await run_strategy(store, scan_id, "finder", steps=250, finds=250, blob="x" * 100_000)
        await wait_for_metric(api, "scanstream_sse_dropped_slow_total", 1, timeout_s=10)
        await anyio.sleep(DROP_GRACE_S + 0.5)  # frozen past the grace: its socket is cut
        text = ""
        try:
            async for chunk in slow.aiter_text():
                text += chunk
        except httpx.RemoteProtocolError:
            pass  # cut off mid-chunk: what a frozen client sees
    got = [line[4:] for line in text.split("\n") if line.startswith("id: ")]
    if not text.endswith("\n\n"):
        got = got[:-1]  # the last message was cut short: a client drops it, as we do here
    log_ids = [e["id"] for e in await read_log(api, scan_id)]
    (fast_stream,) = fast
    assert fast_stream.ids == log_ids
    assert 0 < len(got) < len(log_ids) and got == log_ids[: len(got)]
    rest = await read_stream(
        api, events_url(scan_id), headers={**bearer(), "Last-Event-ID": got[-1]}, timeout_s=60
    )
    assert got + rest.ids == log_ids


async def test_hostile_entries_are_sent_with_their_problem(
    api: httpx.AsyncClient, store: EventStore, settings: Settings
) -> None:
    """Unreadable entries are sent as /log shows them; a framing-breaking type is `invalid`."""
    scan_id = await create_scan(api, ["noop"])
    key = Keys(settings.prefix).events(scan_id)
    await store.redis.xadd(key, {"type": "strategy.progress", "data": b"{not json"})
    await store.redis.xadd(key, {"type": "evil\ndata: {}\n\nid: 1-1", "data": b"{}"})
    await store.redis.xadd(key, {"junk": "no type"})
    await run_strategy(store, scan_id, "noop", steps=1, finds=0)
    stream = await read_stream(api, events_url(scan_id), headers=bearer())
    log = await read_log(api, scan_id)
    assert stream.ended and [m.json for m in stream.messages] == log
    assert [m.event for m in stream.messages[1:4]] == ["strategy.progress", "invalid", "invalid"]
    assert all("problem" in m.json for m in stream.messages[1:4])


async def test_followers_share_one_tail_reader_and_all_see_live_events(
    api: httpx.AsyncClient, store: EventStore, server: tuple[str, Fanout]
) -> None:
    """Ten followers of two scans share one tail connection; each gets its scan's events."""
    _, live = server
    scans = [await create_scan(api, ["noop"], user=f"u{i}") for i in range(2)]
    results: list[Stream] = []

    async def follow(i: int) -> None:
        results.append(
            await read_stream(api, events_url(scans[i % 2]), headers=bearer(f"u{i % 2}"))
        )

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(follow, i)
        await wait_for_metric(api, "scanstream_sse_following", 10)
        assert await metric(api, "scanstream_sse_watched_streams") == 2
        for scan_id in scans:
            await run_strategy(store, scan_id, "noop", steps=2, finds=0)
    assert live.tail is not None
    assert live.tail.pool_size == 1
    logs = {
        scan_id: [e["id"] for e in await read_log(api, scan_id, f"u{i}")]
        for i, scan_id in enumerate(scans)
    }
    assert len(results) == 10
    assert all(r.ended and r.ids == logs[r.messages[0].json["scan_id"]] for r in results)
    assert await metric(api, "scanstream_sse_subscribers") == 0


async def test_the_replay_to_live_handoff_has_no_gap_and_no_duplicate_under_load(
    sse_settings: Settings, store: EventStore
) -> None:
    """Clients joining a busy scan at any moment get exactly the log after their start."""
    with serve(create_app(sse_settings.with_(sse_max_per_user=100))) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20.0) as api:
            await _handoff_under_load(api, store)


async def _handoff_under_load(api: httpx.AsyncClient, store: EventStore) -> None:
    scan_id = await create_scan(api, ["finder"])
    seen: list[tuple[str | None, Stream]] = []

    async def client(delay: float, resume_index: int | None) -> None:
        await anyio.sleep(delay)
        headers = bearer()
        resume = None
        if resume_index is not None:
            ids = [e["id"] for e in await read_log(api, scan_id)]
            resume = ids[min(resume_index, len(ids) - 1)]
            headers["Last-Event-ID"] = resume
        seen.append((resume, await read_stream(api, events_url(scan_id), headers=headers)))

    async def write() -> None:
        started = await store.start_strategy(scan_id, "finder", "w")
        for i in range(100):
            batch: list[ev.Event] = [
                ev.stamp(
                    ev.StrategyProgress,
                    strategy="finder",
                    attempt=started.attempt,
                    progress=i / 100,
                )
            ]
            for _ in range(1 + i % 2):  # one or two entries per write
                await store.append_strategy_events(scan_id, "finder", started.attempt, batch)
            await anyio.sleep(0.005)
        await store.finish_strategy(
            scan_id,
            "finder",
            started.attempt,
            [
                ev.stamp(
                    ev.StrategyCompleted,
                    strategy="finder",
                    attempt=started.attempt,
                    opportunities=0,
                    duration_ms=1,
                )
            ],
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        for i in range(24):
            tg.start_soon(client, i * 0.04, (i * 7) % 40 if i % 3 == 0 else None)
    log = [e["id"] for e in await read_log(api, scan_id)]
    assert len(seen) == 24
    for resume, stream in seen:
        assert stream.status == 200
        start = 0 if resume is None else log.index(resume) + 1
        assert stream.ids == log[start:], resume


async def test_the_process_cap_answers_429(sse_settings: Settings) -> None:
    """A process holding `sse_max` streams refuses one more with 429, whoever asks."""
    app = create_app(sse_settings.with_(sse_max=2))
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
            scans = [await create_scan(client, ["noop"], user=u) for u in ("a", "b", "c")]
            held = [
                client.stream("GET", events_url(s), headers=bearer(u))
                for s, u in zip(scans[:2], "ab", strict=True)
            ]
            for h in held:
                assert (await h.__aenter__()).status_code == 200
            refused = await client.get(events_url(scans[2]), headers=bearer("c"))
            for h in held:
                await h.__aexit__(None, None, None)
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert "retry-after" in refused.headers


async def test_the_server_can_close_every_stream_and_clients_resume(
    api: httpx.AsyncClient, store: EventStore, server: tuple[str, Fanout]
) -> None:
    """`drop_all` ends every stream with a comment; resuming gives the rest exactly once."""
    _, live = server
    scan_id = await create_scan(api, ["noop"])
    async with anyio.create_task_group() as tg:
        first: list[Stream] = []

        async def read() -> None:
            first.append(await read_stream(api, events_url(scan_id), headers=bearer()))

        tg.start_soon(read)
        await wait_for_metric(api, "scanstream_sse_following", 1)
        assert live.loop is not None
        live.loop.call_soon_threadsafe(live.drop_all)
    (dropped,) = first
    assert dropped.ended and dropped.ids == [e["id"] for e in await read_log(api, scan_id)]
    assert any(c.startswith("closed:") for c in dropped.comments)
    assert await metric(api, "scanstream_sse_dropped_other_total") == 1
    await run_strategy(store, scan_id, "noop", steps=1, finds=0)
    rest = await read_stream(
        api, events_url(scan_id), headers={**bearer(), "Last-Event-ID": dropped.ids[-1]}
    )
    assert dropped.ids + rest.ids == [e["id"] for e in await read_log(api, scan_id)]


async def test_a_stream_key_turned_into_another_type_does_not_stop_the_others(
    api: httpx.AsyncClient, store: EventStore, settings: Settings
) -> None:
    """A watched key that stops being a stream drops only its own followers."""
    broken, fine = [await create_scan(api, ["noop"]) for _ in range(2)]
    streams: dict[str, Stream] = {}

    async def follow(scan_id: str) -> None:
        streams[scan_id] = await read_stream(api, events_url(scan_id), headers=bearer())

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow, broken)
        tg.start_soon(follow, fine)
        await wait_for_metric(api, "scanstream_sse_watched_streams", 2)
        key = Keys(settings.prefix).events(broken)
        await store.redis.delete(key)
        await store.redis.set(key, "not a stream")
        await run_strategy(store, fine, "noop", steps=2, finds=0)
    assert streams[fine].ended and streams[fine].messages[-1].event == "scan.completed"
    assert streams[broken].ended and any("cannot be read" in c for c in streams[broken].comments)


@pytest.mark.cluster
async def test_on_a_cluster_one_api_process_follows_scans_on_every_master_with_few_connections(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Six scans whose streams live on at least two masters, one SSE subscriber each, all on
    one API process at once: every subscriber gets its scan's whole log in order, and the
    process holds at most a few Redis connections per master, however many scans."""
    cluster: LocalCluster = request.getfixturevalue("redis_cluster")
    settings: Settings = request.getfixturevalue("settings").with_(
        redis_url=cluster.seed_url, redis_cluster=True
    )
    keys = Keys(settings.prefix, settings.job_partitions)
    api = api_proc(settings, tmp_path)
    with running(api):
        async with (
            httpx.AsyncClient(base_url=api.url, timeout=30.0) as client,
            worker_running(settings),
        ):
            scans: list[str] = []
            while (
                len(scans) < 6
                or len({cluster.master_for_key(keys.events(s)).port for s in scans}) < 2
            ):
                scans.append(await create_scan(client, ["slow", "finder"], {"slow_s": 1.5}))
                scans = scans[-6:]
            masters = {cluster.master_for_key(keys.events(s)).port for s in scans}
            streams: dict[str, Stream] = {}
            connections: dict[int, int] = {}

            async def follow(scan_id: str) -> None:
                streams[scan_id] = await read_stream(client, events_url(scan_id), headers=bearer())

            async with anyio.create_task_group() as tg:
                for i, scan_id in enumerate(scans, 1):  # one by one: the hot pool needs one
                    tg.start_soon(follow, scan_id)
                    await wait_for_metric(client, "scanstream_sse_following", i)
                assert api.process is not None
                ports = local_ports(api.process.pid)
                for master in cluster.masters():
                    addrs = [c["addr"] for c in master.admin.client_list()]
                    connections[master.port] = sum(
                        1 for a in addrs if int(a.rsplit(":", 1)[1]) in ports
                    )
            logs = {s: [e["id"] for e in await read_log(client, s)] for s in scans}
    assert len(masters) >= 2
    for scan_id in scans:
        assert streams[scan_id].ended and streams[scan_id].ids == logs[scan_id]
        assert streams[scan_id].messages[-1].event == "scan.completed"
    # Per master: the tail reader's one and the hot pool's (as many as requests ran at
    # once: one here); on the seed node also each of the two clients' slot-map connection.
    # Not one per scan.
    seed = int(cluster.seed_url.rsplit(":", 1)[1].split("/")[0])
    assert all(n <= (4 if port == seed else 2) for port, n in connections.items()), connections
