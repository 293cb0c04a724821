"""Bearer tokens: signed JWTs that expire, verified by any listed secret, cached when good
(never past their expiry); stream tokens good for one scan's events only; the tokens of
before expiry still work. The last tests ask a real server, as a client would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import Iterator

import httpx
import jwt
import pytest
from starlette.requests import Request

from scanstream.api import auth, create_app
from scanstream.api.auth import (
    BadToken,
    ExpiredToken,
    authenticate,
    issue,
    make_token,
    read_token,
    verify_token,
)
from scanstream.api.errors import Unauthorized
from scanstream.cli import main
from scanstream.settings import Settings
from tests.support.http import serve

SECRET = "s3cret"
SCAN = "scan_" + "a" * 32
OTHER_SCAN = "scan_" + "b" * 32


def _request(headers: dict[str, str], query: str = "") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": raw,
            "query_string": query.encode(),
        }
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def old_token(secret: str, user: str) -> str:
    """A token as scanstream made them before tokens expired: user.HMAC(secret, v1 + user)."""
    mac = hmac.new(secret.encode(), b"scanstream-token-v1\x00" + user.encode(), hashlib.sha256)
    return f"{_b64(user.encode())}.{_b64(mac.digest())}"


def claims(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    body: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return body


def test_a_token_verifies_to_its_user_until_it_expires() -> None:
    """A token names its user and expires `ttl` seconds (rounded up) after it was made."""
    for user in ("alice", "bob@example.com", "u:1", "A_b.c-d"):
        before = time.time()
        token, expires_at = issue(SECRET, user, 3600)
        grant = read_token(SECRET, token)
        assert grant.user == user and grant.scan_id is None
        assert grant.expires_at == expires_at
        assert before + 3600 <= expires_at <= before + 3601
        assert claims(token) == {"sub": user, "exp": expires_at}


def test_a_token_is_url_safe_text() -> None:
    """A token is url-safe base64 text in three dot-separated parts (a JWT)."""
    token = make_token(SECRET, "alice")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert token.count(".") == 2


def test_past_its_expiry_a_token_is_refused_saying_it_expired() -> None:
    """At its expiry second and after, the token is refused with a message that says so."""
    token, expires_at = issue(SECRET, "alice", 60)
    assert read_token(SECRET, token, now=expires_at - 0.001).user == "alice"
    for now in (expires_at, expires_at + 3600):
        with pytest.raises(ExpiredToken, match=r"expired at .*scanstream token"):
            read_token(SECRET, token, now=now)
    assert verify_token(SECRET, make_token(SECRET, "alice", 1)) == "alice"


def test_another_secret_does_not_verify() -> None:
    """A token signed with another secret is rejected."""
    assert verify_token("other", make_token(SECRET, "alice")) is None


def test_a_changed_payload_with_the_old_signature_is_rejected() -> None:
    """Swapping the user, the expiry or the scope of a token while keeping its signature
    is a forgery."""
    header, _, sig = make_token(SECRET, "alice").split(".")
    exp = int(time.time()) + 60
    for forged in (
        {"sub": "bob", "exp": exp},
        {"sub": "alice", "exp": exp + 10**6},
        {"sub": "alice", "exp": exp, "aud": f"scanstream:events:{SCAN}"},
    ):
        payload = _b64(json.dumps(forged).encode())
        with pytest.raises(BadToken):
            read_token(SECRET, f"{header}.{payload}.{sig}")


def test_the_tokens_header_does_not_choose_the_algorithm() -> None:
    """`alg: none` (no signature) and HS512 are refused: only HS256 with our key verifies."""
    payload = _b64(json.dumps({"sub": "alice", "exp": int(time.time()) + 60}).encode())
    unsigned = _b64(b'{"alg":"none","typ":"JWT"}') + "." + payload + "."
    assert verify_token(SECRET, unsigned) is None
    with warnings.catch_warnings():  # PyJWT finds our 32-byte key short for HS512: it is
        warnings.simplefilter("ignore")
        other_alg = jwt.encode(
            {"sub": "alice", "exp": int(time.time()) + 60}, auth._key(SECRET), algorithm="HS512"
        )
    assert verify_token(SECRET, other_alg) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "alice",
        "a.b.c",
        "!!!.???.!!!",
        "YWxpY2U.",
        ".AAAA",
        "x" * 600,
        make_token(SECRET, "alice") + "A",
        make_token(SECRET, "alice")[:-2],
    ],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    """Malformed, truncated, extended or oversized tokens are rejected without raising."""
    assert verify_token(SECRET, token) is None


def test_bad_user_ids_lifetimes_and_empty_secrets_make_no_token() -> None:
    """make_token refuses user ids outside [A-Za-z0-9_.@:-]{1,64}, an empty secret, a
    lifetime that is not 1 s to 100 years in whole seconds, and a scan that is not an id."""
    for user in ("", "a b", "x" * 65, "ünï", "a/b"):
        with pytest.raises(ValueError):
            make_token(SECRET, user)
    with pytest.raises(ValueError):
        make_token("", "alice")
    for ttl in (0, -5, 1.5, 10**12, True):
        with pytest.raises(ValueError):
            make_token(SECRET, "alice", ttl)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_token(SECRET, "alice", scan_id="scan_nope")
    assert verify_token("", make_token(SECRET, "alice")) is None


def test_rotation_the_first_secret_signs_and_every_listed_one_verifies() -> None:
    """With the list [new, old]: a token of the old secret verifies while the old secret
    is listed and not once it is removed; a new token is signed by the first."""
    old = make_token("old", "alice")
    assert verify_token(("new", "old"), old) == "alice"
    assert verify_token(("new",), old) is None
    fresh = make_token("new", "alice")
    assert verify_token(("new",), fresh) == "alice"
    assert verify_token(("old",), fresh) is None


def test_tokens_from_before_expiry_still_verify_while_their_secret_is_listed() -> None:
    """An old-format token (no expiry) keeps working, as its user, for as long as the
    secret that signed it is listed; its padded spelling or another user's name does not."""
    token = old_token(SECRET, "alice")
    grant = read_token(("new", SECRET), token)
    assert grant.user == "alice" and grant.expires_at is None and grant.scan_id is None
    assert verify_token(("new",), token) is None
    user, mac = token.split(".")
    assert len(user) % 4 and len(mac) % 4  # both parts have a padded spelling
    assert verify_token(SECRET, f"{user}=.{mac}") is None
    assert verify_token(SECRET, f"{user}.{mac}=") is None
    assert verify_token(SECRET, f"{_b64(b'bob')}.{mac}") is None


def test_verified_tokens_are_cached_in_a_bounded_lru(monkeypatch: pytest.MonkeyPatch) -> None:
    """A good token is cached (decoded once); the cache never grows past its size, and a
    cached token is refused once it expires, then dropped."""
    cache = auth._VerifiedTokens(3)
    monkeypatch.setattr(auth, "_verified", cache)
    tokens = [issue(SECRET, f"user{i}", 60) for i in range(5)]
    for token, _ in tokens:
        verify_token(SECRET, token)
    assert len(cache._items) == 3
    calls = 0
    real_decode = auth._decode

    def counting_decode(keys: tuple[str, ...], token: str) -> auth.Grant:
        nonlocal calls
        calls += 1
        return real_decode(keys, token)

    monkeypatch.setattr(auth, "_decode", counting_decode)
    last, last_expiry = tokens[-1]
    assert read_token(SECRET, last).user == "user4"
    assert calls == 0
    assert verify_token(SECRET, tokens[0][0]) == "user0"  # evicted: verified again
    assert calls == 1
    verify_token(SECRET, "bad.token.here")
    assert all(grant.user.startswith("user") for grant in cache._items.values())

    calls = 0
    with pytest.raises(ExpiredToken):  # from the cache: no decode, and not served
        read_token(SECRET, last, now=last_expiry)
    assert calls == 0
    assert ((SECRET,), last) not in cache._items


def test_authenticate_reads_the_bearer_header() -> None:
    """authenticate returns the user of a good Authorization: Bearer header."""
    request = _request({"Authorization": f"Bearer {make_token(SECRET, 'alice')}"})
    assert authenticate(request, SECRET) == "alice"
    lower = _request({"Authorization": f"bearer {make_token(SECRET, 'alice')}"})
    assert authenticate(lower, SECRET) == "alice"


def test_a_url_carries_only_a_stream_token_of_that_very_scan() -> None:
    """?access_token= is read only for a scan's event stream, and there only a stream token
    of that scan is taken: never the caller's own token, never another scan's."""
    own = make_token(SECRET, "alice")
    stream = make_token(SECRET, "alice", 60, scan_id=SCAN)
    with pytest.raises(Unauthorized):
        authenticate(_request({}, f"access_token={stream}"), SECRET)  # not an events route
    assert authenticate(_request({}, f"access_token={stream}"), SECRET, stream_of=SCAN) == "alice"
    with pytest.raises(Unauthorized, match="only a stream token"):
        authenticate(_request({}, f"access_token={own}"), SECRET, stream_of=SCAN)
    with pytest.raises(Unauthorized, match="another scan"):
        authenticate(_request({}, f"access_token={stream}"), SECRET, stream_of=OTHER_SCAN)
    # In the header, the events route takes either; every other route only the user's own.
    for token in (own, stream):
        header = _request({"Authorization": f"Bearer {token}"})
        assert authenticate(header, SECRET, stream_of=SCAN) == "alice"
    with pytest.raises(Unauthorized, match="one scan's event stream only"):
        authenticate(_request({"Authorization": f"Bearer {stream}"}), SECRET)


def test_authenticate_refusals_carry_www_authenticate() -> None:
    """A missing or bad token raises Unauthorized with WWW-Authenticate: Bearer."""
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        with pytest.raises(Unauthorized) as caught:
            authenticate(_request(headers), SECRET)
        assert caught.value.status == 401
        assert caught.value.headers == {"WWW-Authenticate": "Bearer"}


# -- a real server, asked as a client would ---------------------------------------------


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    with serve(create_app(settings)) as base:
        yield base


def _list_scans(base: str, token: str) -> httpx.Response:
    return httpx.get(f"{base}/v1/scans", headers={"Authorization": f"Bearer {token}"})


def _wait_past(expires_at: int) -> None:
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)


def test_a_one_second_token_works_then_is_401_saying_it_expired(
    server: str, settings: Settings
) -> None:
    """A token made with a 1 s lifetime is accepted at once, then refused with a
    401 `unauthorized` whose detail says it expired (and it stays refused)."""
    token, expires_at = issue(settings.secret or "", "alice", 1)
    assert _list_scans(server, token).status_code == 200
    _wait_past(expires_at)
    for _ in range(2):  # the second answer comes from the cache: still refused
        refused = _list_scans(server, token)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        body = refused.json()
        assert body["error"] == "unauthorized" and "expired" in body["detail"]


def test_rotating_the_secret_keeps_old_tokens_while_listed(settings: Settings) -> None:
    """A server listing [new, old] takes tokens of both secrets; once `old` leaves the
    list, its tokens are 401 and the new secret's still work."""
    old, new = "old-secret-xxxxxxxxxxxxxxxxxxxx", "new-secret-xxxxxxxxxxxxxxxxxxxx"
    by_old, by_new = make_token(old, "alice"), make_token(new, "alice")
    legacy = old_token(old, "alice")
    with serve(create_app(settings.with_(secret=new, other_secrets=(old,)))) as base:
        assert [_list_scans(base, t).status_code for t in (by_old, by_new, legacy)] == [200] * 3
    with serve(create_app(settings.with_(secret=new, other_secrets=()))) as base:
        assert [_list_scans(base, t).status_code for t in (by_old, by_new, legacy)] == [
            401,
            200,
            401,
        ]


def test_scanstream_token_signs_with_the_first_secret_for_ttl_seconds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scanstream token USER --ttl S` with SCANSTREAM_SECRET=new,old: the token is signed
    by `new`, good for S seconds; without --ttl, for SCANSTREAM_TOKEN_TTL (default a day);
    a --ttl that is not a whole number of seconds from 1 is exit 2."""
    monkeypatch.setenv("SCANSTREAM_SECRET", "new, old")
    monkeypatch.delenv("SCANSTREAM_TOKEN_TTL", raising=False)
    before = time.time()
    assert main(["token", "alice", "--ttl", "120"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert "good until" in out.err
    grant = read_token(("new",), token)
    assert grant.user == "alice" and before + 120 <= (grant.expires_at or 0) <= time.time() + 121
    assert verify_token(("old",), token) is None

    assert main(["token", "alice"]) == 0
    day = read_token(("new",), capsys.readouterr().out.strip()).expires_at or 0
    assert before + 86400 <= day <= time.time() + 86401
    monkeypatch.setenv("SCANSTREAM_TOKEN_TTL", "600")
    assert main(["token", "alice"]) == 0
    ten_min = read_token(("new",), capsys.readouterr().out.strip()).expires_at or 0
    assert before + 600 <= ten_min <= time.time() + 601

    for bad in ("0", "-1", "1.5", "soon"):
        assert main(["token", "alice", "--ttl", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("scanstream: --ttl") and len(err.strip().splitlines()) == 1


def test_token_settings_read_the_secret_list_and_whole_positive_lifetimes() -> None:
    """SCANSTREAM_SECRET "a, b ,,c": `a` signs, all three verify; the two lifetimes default
    to a day and a minute and must be whole seconds, at least 1."""
    from scanstream.errors import ConfigError

    settings = Settings.from_env({"SCANSTREAM_SECRET": "a, b ,,c"})
    assert settings.secret == "a" and settings.secrets == ("a", "b", "c")
    assert (settings.token_ttl_s, settings.stream_token_ttl_s) == (86400, 60)
    assert Settings.from_env({"SCANSTREAM_SECRET": " , "}).secrets == ()
    for name in ("SCANSTREAM_TOKEN_TTL", "SCANSTREAM_STREAM_TOKEN_TTL"):
        assert getattr(Settings.from_env({name: "5"}), name[11:].lower() + "_s") == 5
        for bad in ("0", "-1", "1.5", "soon"):
            with pytest.raises(ConfigError, match=name):
                Settings.from_env({name: bad})
