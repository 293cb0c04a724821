"""Bearer tokens: `base64url(user_id) "." base64url(HMAC-SHA256(secret, user_id))`.

No expiry: a token is a capability for one user, revoked by rotating `SCANSTREAM_SECRET`.
Verification is on every request's path, so verified tokens are kept in a small LRU
(only successes: a flood of forged tokens cannot evict the good ones' entries by
being cached itself, it only costs one HMAC each).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
from collections import OrderedDict

from starlette.requests import HTTPConnection

from scanstream.api.errors import Unauthorized
from scanstream.ids import is_user_id

_DOMAIN = b"scanstream-token-v1\x00"  # binds the MAC to this use of the secret
MAX_TOKEN_CHARS = 512
CACHE_SIZE = 4096


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, user_id: str) -> bytes:
    return hmac.new(secret.encode(), _DOMAIN + user_id.encode(), hashlib.sha256).digest()


def make_token(secret: str, user_id: str) -> str:
    """A bearer token for `user_id` (letters, digits and `_.@:-`, at most 64)."""
    if not secret:
        raise ValueError("a token needs a non-empty secret")
    if not is_user_id(user_id):
        raise ValueError(f"not a valid user id: {user_id!r}")
    return f"{_b64(user_id.encode())}.{_b64(_mac(secret, user_id))}"


class _VerifiedTokens:
    """A bounded LRU of (secret, token) -> user id, for tokens that verified."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()  # uvicorn runs one loop, but a test may use threads

    def get(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            user = self._items.get(key)
            if user is not None:
                self._items.move_to_end(key)
            return user

    def put(self, key: tuple[str, str], user: str) -> None:
        with self._lock:
            self._items[key] = user
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_verified = _VerifiedTokens(CACHE_SIZE)


def verify_token(secret: str, token: str) -> str | None:
    """The user id a token was made for, or None when it is malformed or forged."""
    if not secret or not token or len(token) > MAX_TOKEN_CHARS:
        return None
    key = (secret, token)
    cached = _verified.get(key)
    if cached is not None:
        return cached
    user_part, dot, mac_part = token.partition(".")
    if not dot:
        return None
    try:
        user_id = _unb64(user_part).decode("utf-8")
        mac = _unb64(mac_part)
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if not is_user_id(user_id) or not hmac.compare_digest(mac, _mac(secret, user_id)):
        return None
    if _b64(user_id.encode()) != user_part or _b64(mac) != mac_part:
        return None  # one token per user: no alternative spellings of the same bytes
    _verified.put(key, user_id)
    return user_id


def bearer_of(conn: HTTPConnection, *, allow_query: bool = False) -> str | None:
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    if allow_query:
        return conn.query_params.get("access_token")
    return None


def authenticate(conn: HTTPConnection, secret: str, *, allow_query: bool = False) -> str:
    """The caller's user id; raises `Unauthorized` (401 + WWW-Authenticate) otherwise.

    `allow_query` also accepts `?access_token=` (only for the SSE route: a browser's
    EventSource cannot set headers).
    """
    token = bearer_of(conn, allow_query=allow_query)
    if token is None:
        raise Unauthorized("A bearer token is required: send 'Authorization: Bearer TOKEN'.")
    user = verify_token(secret, token)
    if user is None:
        raise Unauthorized("The bearer token is invalid.")
    return user
