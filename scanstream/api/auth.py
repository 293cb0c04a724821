"""Bearer tokens: signed, expiring, and (stream tokens) good for one scan's events only.

A token is a JWT signed HS256 (PyJWT): `{"sub": user_id, "exp": unix seconds}`, and for a
stream token also `"aud": "scanstream:events:<scan_id>"`. The HMAC key is derived from
the secret (HMAC-SHA256(secret, domain)): 32 bytes whatever the secret's length, and
bound to this one use of it.

Secrets are a list (`SCANSTREAM_SECRET=new,old`): the first signs, every one verifies,
so a secret can be rotated without signing anyone out. A token's header names the secret
that signed it (`kid`, a hash of the derived key), so one HMAC checks it.

Tokens made before expiry existed, `base64url(user) "." base64url(HMAC-SHA256(secret,
v1 domain + user))`, still verify while the secret that signed them is listed; they
never expire, so rotating that secret out is how they end.

Verification is on every request's path, so verified tokens are kept in a small LRU
(only successes: a flood of forged tokens cannot evict the good ones' entries by being
cached itself, it only costs a decode and at most one HMAC each). A hit is checked against the clock
every time: the cache never serves an expired token.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from starlette.requests import HTTPConnection

from scanstream.api.errors import Unauthorized
from scanstream.ids import is_scan_id, is_user_id

ALGORITHM = "HS256"
STREAM_AUDIENCE = "scanstream:events:"  # + scan id: the one route a stream token opens
_DOMAIN = b"scanstream-token-v1\x00"  # binds the old tokens' MAC to this use of the secret
_KEY_DOMAIN = b"scanstream-token-v2"  # the JWT key: HMAC-SHA256(secret, this)
MAX_TOKEN_CHARS = 512
CACHE_SIZE = 4096
DEFAULT_TTL_S = 86400  # Settings.token_ttl_s's default
MAX_TTL_S = 100 * 365 * 86400  # beyond it an expiry date stops being a date

NO_TOKEN = "A bearer token is required: send 'Authorization: Bearer TOKEN'."
INVALID = "The bearer token is invalid."


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    user: str
    expires_at: int | None  # unix seconds; None: a token from before expiry existed
    scan_id: str | None = None  # set: a stream token, for this scan's event stream only

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class BadToken(Exception):
    """A token that grants nothing; the message is the 401's detail."""


class ExpiredToken(BadToken):
    def __init__(self, grant: Grant) -> None:
        kind = "stream token" if grant.scan_id else "bearer token"
        fix = (
            f"get another from POST /v1/scans/{grant.scan_id}/stream-token."
            if grant.scan_id
            else "get a new one (`scanstream token USER_ID`)."
        )
        super().__init__(f"The {kind} expired at {rfc3339(grant.expires_at or 0)}; {fix}")
        self.grant = grant


def rfc3339(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, user_id: str) -> bytes:
    return hmac.new(secret.encode(), _DOMAIN + user_id.encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=64)
def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_DOMAIN, hashlib.sha256).digest()


@functools.lru_cache(maxsize=64)
def _kid(secret: str) -> str:
    """The JWS `kid` naming which listed secret signed a token: a hash of its derived key,
    so verifying costs one HMAC however many secrets are listed (and a token naming none
    costs none)."""
    return _b64(hashlib.sha256(_key(secret)).digest()[:9])


def issue(
    secret: str,
    user_id: str,
    ttl_s: int = DEFAULT_TTL_S,
    *,
    scan_id: str | None = None,
    now: float | None = None,
) -> tuple[str, int]:
    """(token, expiry in unix seconds): valid for at least `ttl_s` whole seconds. With
    `scan_id`, a stream token: good only for that scan's event stream."""
    if not secret:
        raise ValueError("a token needs a non-empty secret")
    if not is_user_id(user_id):
        raise ValueError(f"not a valid user id: {user_id!r}")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"a token's lifetime is 1 to {MAX_TTL_S} whole seconds, not {ttl_s!r}")
    if scan_id is not None and not is_scan_id(scan_id):
        raise ValueError(f"not a scan id: {scan_id!r}")
    expires_at = math.ceil((time.time() if now is None else now) + ttl_s)
    claims: dict[str, object] = {"sub": user_id, "exp": expires_at}
    if scan_id is not None:
        claims["aud"] = STREAM_AUDIENCE + scan_id
    token = jwt.encode(claims, _key(secret), algorithm=ALGORITHM, headers={"kid": _kid(secret)})
    return token, expires_at


def make_token(
    secret: str, user_id: str, ttl_s: int = DEFAULT_TTL_S, *, scan_id: str | None = None
) -> str:
    """A bearer token for `user_id` (letters, digits and `_.@:-`, at most 64)."""
    return issue(secret, user_id, ttl_s, scan_id=scan_id)[0]


class _VerifiedTokens:
    """A bounded LRU of (secrets, token) -> Grant, for tokens that verified."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[tuple[str, ...], str], Grant] = OrderedDict()
        self._lock = threading.Lock()  # uvicorn runs one loop, but a test may use threads

    def get(self, key: tuple[tuple[str, ...], str]) -> Grant | None:
        with self._lock:
            grant = self._items.get(key)
            if grant is not None:
                self._items.move_to_end(key)
            return grant

    def put(self, key: tuple[tuple[str, ...], str], grant: Grant) -> None:
        with self._lock:
            self._items[key] = grant
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, key: tuple[tuple[str, ...], str]) -> None:
        with self._lock:
            self._items.pop(key, None)


_verified = _VerifiedTokens(CACHE_SIZE)


def _secrets(secrets: str | Sequence[str]) -> tuple[str, ...]:
    return (secrets,) if isinstance(secrets, str) else tuple(secrets)


def read_token(secrets: str | Sequence[str], token: str, *, now: float | None = None) -> Grant:
    """What `token` grants. Raises `ExpiredToken` for a good token past its expiry and
    `BadToken` for anything else that is not a good token."""
    keys = tuple(s for s in _secrets(secrets) if s)
    if not keys or not token or len(token) > MAX_TOKEN_CHARS:
        raise BadToken(INVALID)
    cache_key = (keys, token)  # the secrets too: a secret taken off the list ends its tokens
    grant = _verified.get(cache_key)
    if grant is None:
        grant = _legacy(keys, token) if token.count(".") == 1 else _decode(keys, token)
        _verified.put(cache_key, grant)
    if grant.expired(time.time() if now is None else now):
        _verified.drop(cache_key)
        raise ExpiredToken(grant)
    return grant


def verify_token(secrets: str | Sequence[str], token: str) -> str | None:
    """The user of a good, unexpired bearer token (not a stream token), else None."""
    try:
        grant = read_token(secrets, token)
    except BadToken:
        return None
    return grant.user if grant.scan_id is None else None


def _decode(keys: tuple[str, ...], token: str) -> Grant:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        secret = next((s for s in keys if _kid(s) == kid), None)  # the one to check with
        if secret is None:
            raise BadToken(INVALID)
        claims = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],  # pinned: the token's header never chooses
            # exp is checked by read_token on the one clock a cached token is checked on
            options={"require": ["sub", "exp"], "verify_exp": False, "verify_aud": False},
        )
    except jwt.InvalidTokenError:
        raise BadToken(INVALID) from None
    return _grant(claims)


def _grant(claims: dict[str, object]) -> Grant:
    """Claims of a correctly signed token; anything but the shapes we sign is refused."""
    user, exp, aud = claims.get("sub"), claims.get("exp"), claims.get("aud")
    if not isinstance(user, str) or not is_user_id(user):
        raise BadToken(INVALID)
    if isinstance(exp, bool) or not isinstance(exp, int):
        raise BadToken(INVALID)
    if aud is None:
        return Grant(user, exp)
    if isinstance(aud, str) and aud.startswith(STREAM_AUDIENCE):
        scan_id = aud[len(STREAM_AUDIENCE) :]
        if is_scan_id(scan_id):
            return Grant(user, exp, scan_id)
    raise BadToken(INVALID)


def _legacy(keys: tuple[str, ...], token: str) -> Grant:
    """A token from before expiry: `base64url(user).base64url(mac)`."""
    user_part, _, mac_part = token.partition(".")
    try:
        user_id = _unb64(user_part).decode("utf-8")
        mac = _unb64(mac_part)
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise BadToken(INVALID) from None
    if not is_user_id(user_id):
        raise BadToken(INVALID)
    if _b64(user_id.encode()) != user_part or _b64(mac) != mac_part:
        raise BadToken(INVALID)  # one token per user: no alternative spellings of the same bytes
    if any(hmac.compare_digest(mac, _mac(secret, user_id)) for secret in keys):
        return Grant(user_id, None)
    raise BadToken(INVALID)


def bearer_of(conn: HTTPConnection, *, allow_query: bool = False) -> tuple[str | None, bool]:
    """(token, whether it came from the URL's `?access_token=`)."""
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return (value.strip() if scheme.lower() == "bearer" else None), False
    if allow_query:
        return conn.query_params.get("access_token"), True
    return None, False


def authenticate(
    conn: HTTPConnection, secrets: str | Sequence[str], *, stream_of: str | None = None
) -> str:
    """The caller's user id; raises `Unauthorized` (401 + WWW-Authenticate) otherwise.

    Every route takes a bearer token in the Authorization header. The event stream of one
    scan (`stream_of`) also takes that scan's stream token, in the header or in
    `?access_token=` (a browser's EventSource cannot set headers); a URL carries nothing
    else, so a long-lived token never sits in a URL (and in logs along the way).
    """
    token, in_url = bearer_of(conn, allow_query=stream_of is not None)
    if token is None:
        raise Unauthorized(NO_TOKEN)
    try:
        grant = read_token(secrets, token)
    except BadToken as exc:
        raise Unauthorized(str(exc)) from None
    if grant.scan_id is None and in_url:
        raise Unauthorized(
            "?access_token= takes only a stream token (POST /v1/scans/{id}/stream-token "
            "makes one); send your own token in the Authorization header instead."
        )
    if grant.scan_id is not None and grant.scan_id != stream_of:
        where = "another scan" if stream_of else "one scan's event stream only"
        raise Unauthorized(f"This is a stream token for {where}; it is refused here.")
    return grant.user
