"""Bearer tokens: HMAC-SHA256 over the user id, verified in constant time, cached when good."""

from __future__ import annotations

import base64

import pytest
from starlette.requests import Request

from scanstream.api import auth
from scanstream.api.auth import authenticate, make_token, verify_token
from scanstream.api.errors import Unauthorized

SECRET = "s3cret"


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


def test_a_token_verifies_to_its_user() -> None:
    """make_token then verify_token gives back the user id."""
    for user in ("alice", "bob@example.com", "u:1", "A_b.c-d"):
        assert verify_token(SECRET, make_token(SECRET, user)) == user


def test_a_token_is_url_safe_and_deterministic() -> None:
    """A token is url-safe base64 text, the same each time for the same user and secret."""
    token = make_token(SECRET, "alice")
    assert token == make_token(SECRET, "alice")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_another_secret_does_not_verify() -> None:
    """A token signed with another secret is rejected."""
    assert verify_token("other", make_token(SECRET, "alice")) is None


def test_a_changed_user_with_the_old_signature_is_rejected() -> None:
    """Swapping the user part of a token while keeping its MAC is a forgery."""
    _, mac = make_token(SECRET, "alice").split(".")
    bob = base64.urlsafe_b64encode(b"bob").rstrip(b"=").decode()
    assert verify_token(SECRET, f"{bob}.{mac}") is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "alice",
        "a.b.c",
        "!!!.???",
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


def test_padded_spelling_of_a_good_token_is_rejected() -> None:
    """Only the canonical spelling verifies: the same bytes with base64 padding do not."""
    user, mac = make_token(SECRET, "alice").split(".")
    assert len(user) % 4 and len(mac) % 4  # both parts have a padded spelling
    assert verify_token(SECRET, f"{user}=.{mac}") is None
    assert verify_token(SECRET, f"{user}.{mac}=") is None


def test_bad_user_ids_and_empty_secrets_make_no_token() -> None:
    """make_token refuses user ids outside [A-Za-z0-9_.@:-]{1,64} and an empty secret."""
    for user in ("", "a b", "x" * 65, "ünï", "a/b"):
        with pytest.raises(ValueError):
            make_token(SECRET, user)
    with pytest.raises(ValueError):
        make_token("", "alice")
    assert verify_token("", make_token(SECRET, "alice")) is None


def test_verified_tokens_are_cached_in_a_bounded_lru(monkeypatch: pytest.MonkeyPatch) -> None:
    """A good token is cached (no second HMAC); the cache never grows past its size."""
    cache = auth._VerifiedTokens(3)
    monkeypatch.setattr(auth, "_verified", cache)
    tokens = [make_token(SECRET, f"user{i}") for i in range(5)]
    for token in tokens:
        verify_token(SECRET, token)
    assert len(cache._items) == 3
    calls = 0
    real_mac = auth._mac

    def counting_mac(secret: str, user: str) -> bytes:
        nonlocal calls
        calls += 1
        return real_mac(secret, user)

    monkeypatch.setattr(auth, "_mac", counting_mac)
    assert verify_token(SECRET, tokens[-1]) == "user4"
    assert calls == 0
    assert verify_token(SECRET, tokens[0]) == "user0"  # evicted: verified again
    assert calls == 1
    verify_token(SECRET, "bad.token")
    assert all(user.startswith("user") for user in cache._items.values())


def test_authenticate_reads_the_bearer_header() -> None:
    """authenticate returns the user of a good Authorization: Bearer header."""
    request = _request({"Authorization": f"Bearer {make_token(SECRET, 'alice')}"})
    assert authenticate(request, SECRET) == "alice"
    lower = _request({"Authorization": f"bearer {make_token(SECRET, 'alice')}"})
    assert authenticate(lower, SECRET) == "alice"


def test_authenticate_takes_the_query_token_only_when_allowed() -> None:
    """?access_token= works only with allow_query (the SSE route), never by default."""
    request = _request({}, f"access_token={make_token(SECRET, 'alice')}")
    with pytest.raises(Unauthorized):
        authenticate(request, SECRET)
    assert authenticate(request, SECRET, allow_query=True) == "alice"


def test_authenticate_refusals_carry_www_authenticate() -> None:
    """A missing or bad token raises Unauthorized with WWW-Authenticate: Bearer."""
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        with pytest.raises(Unauthorized) as caught:
            authenticate(_request(headers), SECRET)
        assert caught.value.status == 401
        assert caught.value.headers == {"WWW-Authenticate": "Bearer"}
