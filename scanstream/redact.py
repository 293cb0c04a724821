"""Secrets out of whatever scanstream prints or logs: a URL's password, a token in a
URL's query, a bearer token in a header or a message.

    redact("redis://app:hunter2@db:6379/0")  ->  "redis://app:***@db:6379/0"

It errs on the side of hiding: anything between `://user:` and the next `@` is masked,
whether or not it is a password.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:PASSWORD@ (redis-py also takes a password with a `/` in it, unescaped)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s]*:)[^@\s]*@")
# ?password= (redis-py's unix:// form), ?access_token= (SSE), ?token=, #token= (dashboard)
_QUERY = re.compile(r"(?i)(?P<head>[?&#;](?:password|access_token|token)=)[^&#\s\"']*")
_BEARER = re.compile(r"(?i)(?P<head>\bbearer\s+)[A-Za-z0-9\-._~+/]+=*")
# a JWT anywhere (the shape scanstream's tokens have)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")


# What every pattern above needs somewhere in the text: one scan of a log line decides
# whether the four substitutions run at all (most lines hold none of it).
_MAYBE = re.compile(r"(?i)://|=|bearer|eyJ")


def redact(text: str) -> str:
    """`text` with every password and token it holds masked."""
    if _MAYBE.search(text) is None:
        return text
    text = _USERINFO.sub(rf"\g<head>{MASK}@", text)
    text = _QUERY.sub(rf"\g<head>{MASK}", text)
    text = _BEARER.sub(rf"\g<head>{MASK}", text)
    return _JWT.sub(MASK, text)


redact_url = redact  # a URL is text too; the name says what the caller holds
