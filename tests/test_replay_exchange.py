"""Replay: export to JSON Lines and import into another Redis, byte for byte, fence included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis

from scanstream import events as ev
from scanstream import projection
from scanstream.embedded import RedisProcess
from scanstream.errors import ScanConflict
from scanstream.ids import scan_created_ms
from scanstream.replay import (
    ReplayError,
    export_log,
    fence_fields,
    fetch_log,
    import_log,
    parse_export,
    read_export,
    state_at,
)
from scanstream.replay.cli import main
from scanstream.replay.exchange import export_lines
from scanstream.settings import Settings
from scanstream.storage.connection import client
from scanstream.storage.events import EventStore
from scanstream.storage.exchange import LogExchange
from scanstream.storage.keys import Keys
from tests.support.cluster import LocalCluster
from tests.support.replay_scans import shared_scan

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def mixed(redis_server: RedisProcess) -> tuple[Settings, str]:
    return shared_scan(redis_server.url)


@pytest.fixture(scope="module")
def unfinished(redis_server: RedisProcess) -> tuple[Settings, str]:
    return shared_scan(redis_server.url, "unfinished")


@pytest.fixture(scope="module")
def second_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A second, empty redis-server: the laptop a production scan is imported into."""
    server = RedisProcess(data_dir=tmp_path_factory.mktemp("second-redis")).start()
    yield server
    server.stop()


@pytest.fixture
async def second(second_server: RedisProcess) -> AsyncIterator[Redis]:
    r = client(second_server.url)
    yield r
    await r.aclose()


@pytest.fixture
async def original(mixed: tuple[Settings, str]) -> AsyncIterator[Redis]:
    r = client(mixed[0].redis_url or "")
    yield r
    await r.aclose()


def projections(scan_id: str, entries: list[ev.LogEntry]) -> tuple[dict[str, Any], dict[str, Any]]:
    snap = state_at(scan_id, entries)
    return snap.status, snap.results


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def raw_stream(redis: Redis, key: str) -> list[Any]:
    return list(await redis.xrange(key, "-", "+") or [])


async def test_export_then_import_into_a_second_redis_gives_the_same_scan(
    mixed: tuple[Settings, str], original: Redis, second: Redis, tmp_path: Path, prefix: str
) -> None:
    """Given a real finished scan, when exported and imported into a second redis-server,
    then the imported stream is byte-identical, folds to equal status and results, its fence
    hash equals the original's, and it is listed for its owner and expires like it."""
    settings, scan_id = mixed
    keys = Keys(settings.prefix)
    export_log(await fetch_log(LogExchange(original, keys), scan_id), tmp_path / "scan.jsonl")

    imported = await import_log(
        LogExchange(second, Keys(prefix)), read_export(tmp_path / "scan.jsonl"), retention_s=600
    )

    assert imported.scan_id == scan_id
    there = Keys(prefix).scan(scan_id)
    assert await raw_stream(second, there.events) == await raw_stream(
        original, keys.events(scan_id)
    )
    again = await fetch_log(LogExchange(second, Keys(prefix)), scan_id)
    log = await fetch_log(LogExchange(original, keys), scan_id)
    assert projections(scan_id, again.entries) == projections(scan_id, log.entries)
    assert await second.hgetall(there.fence) == await original.hgetall(keys.scan(scan_id).fence)
    assert 0 < await second.ttl(there.events) <= 600 and 0 < await second.ttl(there.fence) <= 600
    assert await second.zscore(Keys(prefix).user_scans("alice"), scan_id) == scan_created_ms(
        scan_id
    )


async def test_late_fenced_writes_are_refused_on_the_import_as_on_the_original(
    mixed: tuple[Settings, str], original: Redis, second: Redis, prefix: str
) -> None:
    """Given a finished scan imported into a second Redis, when a late finish_strategy and a
    new attempt arrive, then both scans refuse them alike: the scan has ended."""
    settings, scan_id = mixed
    log = await fetch_log(LogExchange(original, Keys(settings.prefix)), scan_id)
    await import_log(LogExchange(second, Keys(prefix)), log, retention_s=600)
    late = [
        ev.stamp(ev.StrategyCompleted, strategy="slow", attempt=1, opportunities=0, duration_ms=1)
    ]
    for redis, store_prefix in ((original, settings.prefix), (second, prefix)):
        store = EventStore(redis, Keys(store_prefix), retention_s=600)
        assert (await store.finish_strategy(scan_id, "slow", 1, late)).status == "ended"
        assert (await store.start_strategy(scan_id, "poison", "late-worker")).status == "ended"
        assert (await store.end_scan(scan_id, "scan.cancelled"))[0] == "ended"
    assert len((await fetch_log(LogExchange(second, Keys(prefix)), scan_id)).raw) == len(log.raw)


async def test_an_unfinished_import_continues_exactly_like_the_original(
    unfinished: tuple[Settings, str], second: Redis, prefix: str
) -> None:
    """Given a running scan (noop never started) imported into a second Redis, kept and as
    new, when the same fenced writes follow on all three, then each answers the same: the
    same attempt number, `done` for a finished strategy, and the same terminal event counts."""
    settings, scan_id = unfinished
    first = client(settings.redis_url or "")
    try:
        log = await fetch_log(LogExchange(first, Keys(settings.prefix)), scan_id)
        kept = await import_log(LogExchange(second, Keys(prefix)), log, retention_s=600)
        renewed = await import_log(
            LogExchange(second, Keys(prefix)), log, as_new=True, retention_s=600
        )
        assert kept.ttl_s is None and renewed.scan_id != scan_id
        targets = [
            (first, settings.prefix, scan_id),
            (second, prefix, kept.scan_id),
            (second, prefix, renewed.scan_id),
        ]
        answers = []
        for redis, p, sid in targets:
            store = EventStore(redis, Keys(p), retention_s=600)
            stale = await store.finish_strategy(
                sid,
                "finder",
                1,
                [
                    ev.stamp(
                        ev.StrategyCompleted,
                        strategy="finder",
                        attempt=1,
                        opportunities=0,
                        duration_ms=1,
                    )
                ],
            )
            started = await store.start_strategy(sid, "noop", "test")
            done = await store.finish_strategy(
                sid,
                "noop",
                started.attempt,
                [
                    ev.stamp(
                        ev.StrategyCompleted,
                        strategy="noop",
                        attempt=started.attempt,
                        opportunities=0,
                        duration_ms=1,
                    )
                ],
            )
            terminal = await store.last_entry(sid)
            assert terminal is not None and isinstance(terminal.event, ev.ScanCompleted)
            body = terminal.event
            answers.append(
                (
                    stale.status,
                    started.status,
                    started.attempt,
                    done.terminal,
                    body.opportunities,
                    body.strategies_completed,
                    body.strategies_failed,
                )
            )
        assert (
            answers[0] == answers[1] == answers[2] == ("done", "ok", 1, "scan.completed", 4, 3, 0)
        )
    finally:
        await first.aclose()


async def test_the_pure_fence_matches_what_the_scripts_wrote(
    mixed: tuple[Settings, str], unfinished: tuple[Settings, str]
) -> None:
    """Given real scans (finished after retries and a final failure; still running), when
    their fence is rebuilt from the log alone, then it equals the hash the Lua scripts hold."""
    for settings, scan_id in (mixed, unfinished):
        redis = client(settings.redis_url or "")
        try:
            keys = Keys(settings.prefix)
            log = await fetch_log(LogExchange(redis, keys), scan_id)
            stored = await redis.hgetall(keys.scan(scan_id).fence)
        finally:
            await redis.aclose()
        assert fence_fields(log.entries, scan_id) == {_text(k): _text(v) for k, v in stored.items()}


def test_a_fence_ignores_what_the_scripts_would_have_refused() -> None:
    """Given a log with a stale attempt's finding, a write after done, a strategy the scan
    does not have and events after the end, when its fence is rebuilt, then none of those
    count; no scan.requested: no fence."""

    def entry(n: int, event: ev.Event) -> ev.LogEntry:
        return ev.decode(f"{n}-0", ev.type_of(event), ev.encode(event))

    def opp(oid: str) -> ev.Opportunity:
        return ev.Opportunity(
            id=oid, strategy="a", symbol="X", side="long", score=0.5, expected_return=0.0
        )

    scan_id = "scan_0190a0b0c0d07000800000000000abcd"
    log = [
        entry(1, ev.stamp(ev.ScanRequested, user_id="u", strategies=["a", "b"])),
        entry(2, ev.stamp(ev.StrategyStarted, strategy="a", attempt=1, worker="w")),
        entry(3, ev.stamp(ev.StrategyStarted, strategy="a", attempt=2, worker="w")),
        entry(4, ev.stamp(ev.OpportunityFound, strategy="a", attempt=1, opportunity=opp("o1"))),
        entry(5, ev.stamp(ev.OpportunityFound, strategy="a", attempt=2, opportunity=opp("o2"))),
        entry(
            6,
            ev.stamp(ev.StrategyCompleted, strategy="a", attempt=2, opportunities=1, duration_ms=1),
        ),
        entry(7, ev.stamp(ev.OpportunityFound, strategy="a", attempt=2, opportunity=opp("o3"))),
        entry(
            8,
            ev.stamp(
                ev.ScanCancelled,
                opportunities=1,
                strategies_completed=1,
                strategies_failed=0,
                duration_ms=5,
            ),
        ),
        entry(9, ev.stamp(ev.StrategyStarted, strategy="b", attempt=1, worker="w")),
    ]
    stranger = entry(7, ev.stamp(ev.StrategyStarted, strategy="c", attempt=1, worker="w"))
    assert fence_fields([*log[:6], stranger, *log[6:]], scan_id) == {
        "total": "2",
        "created_ms": str(scan_created_ms(scan_id)),
        "completed": "1",
        "failed": "0",
        "opportunities": "1",
        "names": "1",
        "in:a": "1",
        "in:b": "1",
        "attempt:a": "2",
        "opp:o2": "1",
        "done:a": "completed",
        "terminal": "scan.cancelled",
    }
    assert fence_fields(log[1:], scan_id) == {}


async def test_import_refuses_an_existing_scan_and_as_new_renames_it(
    mixed: tuple[Settings, str], original: Redis, second: Redis, prefix: str
) -> None:
    """Given a scan already imported, when imported again under its id, then ScanConflict;
    with as_new, then a new id whose stream folds to the same projections but for the id."""
    settings, scan_id = mixed
    log = await fetch_log(LogExchange(original, Keys(settings.prefix)), scan_id)
    await import_log(LogExchange(second, Keys(prefix)), log, retention_s=600)
    with pytest.raises(ScanConflict):
        await import_log(LogExchange(second, Keys(prefix)), log, retention_s=600)

    renewed = await import_log(LogExchange(second, Keys(prefix)), log, as_new=True, retention_s=600)

    copy = await fetch_log(LogExchange(second, Keys(prefix)), renewed.scan_id)
    assert [e.id for e in copy.entries] == [e.id for e in log.entries]  # ids kept: same timeline
    (status, results), (status2, results2) = (
        projections(scan_id, log.entries),
        projections(renewed.scan_id, copy.entries),
    )
    assert {**status2, "scan_id": scan_id} == status
    assert {**results2, "scan_id": scan_id} == results
    assert (
        await second.hget(Keys(prefix).scan(renewed.scan_id).fence, "created_ms")
        == str(scan_created_ms(renewed.scan_id)).encode()
    )


async def test_import_as_another_user_rewrites_only_the_owner(
    mixed: tuple[Settings, str], original: Redis, second: Redis, prefix: str
) -> None:
    """Given a scan of alice, when imported as new for bob, then bob owns and lists it,
    only scan.requested changed bytes, and everything else folds the same."""
    settings, scan_id = mixed
    log = await fetch_log(LogExchange(original, Keys(settings.prefix)), scan_id)

    imported = await import_log(
        LogExchange(second, Keys(prefix)), log, as_new=True, user="bob", retention_s=600
    )

    copy = await fetch_log(LogExchange(second, Keys(prefix)), imported.scan_id)
    changed = [a.id for a, b in zip(log.raw, copy.raw, strict=True) if a != b]
    assert changed == [log.raw[0].id]
    status = projections(imported.scan_id, copy.entries)[0]
    assert status["user_id"] == "bob"
    assert {**status, "user_id": "alice", "scan_id": scan_id} == projections(scan_id, log.entries)[
        0
    ]
    assert await second.zscore(Keys(prefix).user_scans("bob"), imported.scan_id) is not None
    with pytest.raises(ReplayError):
        await import_log(
            LogExchange(second, Keys(prefix)), log, as_new=True, user="no spaces", retention_s=1
        )


async def test_export_is_byte_faithful_for_broken_entries(
    mixed: tuple[Settings, str],
    original: Redis,
    second: Redis,
    store: EventStore,
    prefix: str,
    tmp_path: Path,
) -> None:
    """Given a scan whose stream also holds non-UTF-8 data, non-JSON data, a non-UTF-8 type
    and entries with missing or extra fields, when exported, read back and imported, then
    every entry's fields come back byte for byte, in order."""
    settings, scan_id = mixed
    src = await fetch_log(LogExchange(original, Keys(settings.prefix)), scan_id)
    keys = Keys(store.keys.prefix)
    await import_log(LogExchange(store.redis, keys), src, retention_s=600)  # a copy we may corrupt
    key = keys.events(scan_id)
    odd = [
        {b"type": b"strategy.progress", b"data": b"\xff\xfe{not utf-8"},
        {b"type": b"opportunity.found", b"data": b'{"half": '},
        {b"type": b"\xc3\x28", b"data": b"{}"},
        {b"data": b'{"v":1}'},
        {b"type": b"x", b"data": b"{}", b"extra": b"\x00\x01"},
        {b"data": b"{}", b"type": b"scan.completed"},
    ]
    for fields in odd:
        await store.redis.xadd(key, fields)  # type: ignore[arg-type]
    log = await fetch_log(LogExchange(store.redis, keys), scan_id)
    export_log(log, tmp_path / "odd.jsonl")
    lines = (tmp_path / "odd.jsonl").read_bytes().splitlines()
    assert orjson.loads(lines[-6])["data"] == {"b64": "//57bm90IHV0Zi04"}
    assert "fields" in orjson.loads(lines[-1]) and "fields" in orjson.loads(lines[-3])

    back = read_export(tmp_path / "odd.jsonl")
    assert list(back.raw) == list(log.raw)
    await import_log(LogExchange(second, Keys(prefix)), back, retention_s=600)
    assert await raw_stream(second, Keys(prefix).events(scan_id)) == await raw_stream(
        store.redis, key
    )
    assert sum(1 for e in back.entries if e.problem) == len(odd)


@pytest.mark.cluster
async def test_a_scan_exported_from_a_cluster_imports_into_another_prefix_of_it(
    mixed: tuple[Settings, str],
    original: Redis,
    redis_cluster: LocalCluster,
    tmp_path: Path,
    prefix: str,
) -> None:
    """Given a real scan on a Redis Cluster (imported there), when exported and imported
    into another prefix of the same cluster, then the raw streams and fences are equal,
    it expires and is listed like the original, and importing it again is refused."""
    settings, scan_id = mixed
    rc = client(redis_cluster.seed_url, cluster=True)
    first, second = Keys(prefix + "a"), Keys(prefix + "b")
    try:
        log = await fetch_log(LogExchange(original, Keys(settings.prefix)), scan_id)
        await import_log(LogExchange(rc, first), log, retention_s=600)
        export_log(await fetch_log(LogExchange(rc, first), scan_id), tmp_path / "scan.jsonl")
        back = read_export(tmp_path / "scan.jsonl")

        await import_log(LogExchange(rc, second), back, retention_s=600)

        copied = await raw_stream(rc, second.events(scan_id))
        assert copied == await raw_stream(rc, first.events(scan_id))
        assert copied == await raw_stream(original, Keys(settings.prefix).events(scan_id))
        fence = second.scan(scan_id).fence
        assert await rc.hgetall(fence) == await rc.hgetall(first.scan(scan_id).fence)
        assert 0 < await rc.ttl(second.events(scan_id)) <= 600 and 0 < await rc.ttl(fence) <= 600
        assert await rc.zscore(second.user_scans("alice"), scan_id) == scan_created_ms(scan_id)
        with pytest.raises(ScanConflict):
            await import_log(LogExchange(rc, second), back, retention_s=600)
        assert await raw_stream(rc, second.events(scan_id)) == copied
    finally:
        await rc.aclose()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lines: lines[:-1], "truncated"),
        (lambda lines: [b'{"format": "other"}', *lines[1:]], "not a scanstream log export"),
        (
            lambda lines: [
                lines[0].replace(b'"format_version":1', b'"format_version":9'),
                *lines[1:],
            ],
            "newer",
        ),
        (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], "does not follow"),
        (
            lambda lines: [
                *lines[:2],
                b'{"id": "1-0", "type": "x", "data": {"b64": "!!"}}',
                *lines[3:],
            ],
            "invalid base64",
        ),
        (lambda lines: [*lines[:2], b"[1, 2]", *lines[3:]], "not a JSON object"),
    ],
)
def test_a_damaged_export_is_refused_with_its_line(
    mixed: tuple[Settings, str], mutate: Any, message: str
) -> None:
    """Given an export, when it is truncated, foreign, too new, reordered or malformed, then
    reading it fails with a sentence naming the problem."""
    settings, scan_id = mixed
    from scanstream.replay import load_log

    lines = b"".join(export_lines(load_log(scan_id, settings=settings))).splitlines()
    with pytest.raises(ReplayError, match=message):
        parse_export(iter(mutate(lines)), "test.jsonl")


def test_the_cli_imports_as_new_for_a_user(
    mixed: tuple[Settings, str],
    second_server: RedisProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given an exported file, when `replay import FILE --as-new --user carol` runs against a
    second Redis, then it prints the new scan, which replays with the same timeline; a second
    plain import of the same file is refused."""
    settings, scan_id = mixed
    monkeypatch.setenv("SCANSTREAM_REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("SCANSTREAM_PREFIX", settings.prefix)
    path = tmp_path / "scan.jsonl"
    assert main([scan_id, "--export", str(path)]) == 0
    monkeypatch.setenv("SCANSTREAM_REDIS_URL", second_server.url)
    monkeypatch.setenv("SCANSTREAM_PREFIX", "cli" + tmp_path.name[-8:].replace("_", ""))
    capsys.readouterr()

    assert main(["import", str(path), "--as-new", "--user", "carol", "--json"]) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert body["user_id"] == "carol" and body["listed"] and body["scan_id"] != scan_id

    assert main([body["scan_id"], "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)["rows"]
    assert main(["--file", str(path), "--json"]) == 0
    filed = orjson.loads(capsys.readouterr().out)["rows"]
    assert rows[1:] == filed[1:]
    assert rows[0]["summary"] == filed[0]["summary"].replace("user alice", "user carol")
    assert main(["import", str(path)]) == 0
    assert "imported" in capsys.readouterr().out
    assert main(["import", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_projections_of_an_empty_prefix_are_the_empty_view() -> None:
    """Given no entries, when folded, then the view is the empty projection (sanity)."""
    assert projection.fold_all("scan_x", []).state == "queued"


_field_bytes = st.binary(max_size=40) | st.text(max_size=40).map(str.encode)
_raw_entries = st.lists(
    st.tuples(
        st.lists(st.tuples(_field_bytes, _field_bytes), min_size=1, max_size=4), st.booleans()
    ),
    max_size=8,
)


@hsettings(max_examples=150, deadline=None)
@given(_raw_entries)
def test_any_entries_survive_export_and_reading_back(entries: list[Any]) -> None:
    """Given any entries (any bytes, any field lists, well formed or not), when exported and
    read back, then every entry's id and fields are byte-identical, in order."""
    from scanstream.replay import Log, RawEntry

    raw = []
    for n, (fields, well_formed) in enumerate(entries, start=1):
        if well_formed:
            fields = [(b"type", fields[0][0]), (b"data", fields[0][1])]
        raw.append(RawEntry(f"{1000 + n}-{n}", tuple(fields)))
    log = Log(scan_id="scan_" + "a" * 32, raw=raw, origin="test")

    back = parse_export(iter(b"".join(export_lines(log)).splitlines(keepends=True)), "x")

    assert list(back.raw) == raw


def test_replay_never_prints_the_redis_password(
    mixed: tuple[Settings, str],
    second_server: RedisProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given a Redis user with a password in SCANSTREAM_REDIS_URL, when `replay import`
    succeeds, then it names the Redis it wrote to with `***` where the password was; when
    the password is wrong, the one-line error does not print it either."""
    import redis as sync_redis

    password = "pw-" + tmp_path.name[-12:].replace("_", "")
    admin = sync_redis.Redis.from_url(second_server.url)
    admin.acl_setuser(
        "importer", enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"]
    )
    try:
        settings, scan_id = mixed
        monkeypatch.setenv("SCANSTREAM_REDIS_URL", settings.redis_url or "")
        monkeypatch.setenv("SCANSTREAM_PREFIX", settings.prefix)
        path = tmp_path / "scan.jsonl"
        assert main([scan_id, "--export", str(path)]) == 0
        host = second_server.url.split("://", 1)[1]
        monkeypatch.setenv("SCANSTREAM_REDIS_URL", f"redis://importer:{password}@{host}")
        monkeypatch.setenv("SCANSTREAM_PREFIX", "pw" + tmp_path.name[-8:].replace("_", ""))
        capsys.readouterr()

        assert main(["import", str(path), "--as-new"]) == 0
        out = capsys.readouterr()
        assert "imported" in out.out and f"redis://importer:***@{host}" in out.out
        wrong = password[::-1]
        monkeypatch.setenv("SCANSTREAM_REDIS_URL", f"redis://importer:{wrong}@{host}")
        assert main(["import", str(path), "--as-new"]) == 2
        out2 = capsys.readouterr()
        assert out2.err.startswith("scanstream replay:")
        printed = out.out + out.err + out2.out + out2.err
        assert password not in printed and wrong not in printed
    finally:
        admin.acl_deluser("importer")
        admin.close()
