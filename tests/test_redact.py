"""Passwords and tokens never reach what scanstream prints or logs (`scanstream.redact`),
and the logging settings."""

from __future__ import annotations

import json
import logging

import pytest

from scanstream.api.auth import make_token
from scanstream.errors import ConfigError
from scanstream.logs import JsonFormatter, TextFormatter
from scanstream.redact import redact
from scanstream.settings import Settings

TOKEN = make_token("s3cret", "alice")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://app:hunter2@db:6379/0", "redis://app:***@db:6379/0"),
        ("rediss://:hunter2@db:6380", "rediss://:***@db:6380"),
        ("redis://:pass/with/slash@db:6379/0", "redis://:***@db:6379/0"),
        (
            "unix://app@/run/redis.sock?db=0&password=hunter2",
            "unix://app@/run/redis.sock?db=0&password=***",
        ),
        ("http://u:hunter2@api:8000", "http://u:***@api:8000"),
        (
            f"/v1/scans/x/events?after=1-0&access_token={TOKEN}",
            "/v1/scans/x/events?after=1-0&access_token=***",
        ),
        (f"http://127.0.0.1:8000/#token={TOKEN}", "http://127.0.0.1:8000/#token=***"),
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer ***"),
        (f"refused {TOKEN} twice", "refused *** twice"),
        ("redis://127.0.0.1:6379/0 and redis://db", "redis://127.0.0.1:6379/0 and redis://db"),
    ],
)
def test_passwords_and_tokens_are_masked(text: str, shown: str) -> None:
    """A URL's password (userinfo or ?password=), a token in a query, fragment, header or
    plain text is `***`; text with no secret is left as it is."""
    assert redact(text) == shown


def test_both_log_formats_mask_what_a_message_quotes() -> None:
    """A log line (text or JSON, the exception included) quoting a Redis URL with its
    password, or a bearer token, shows neither."""
    try:
        raise ConnectionError("cannot reach redis://app:hunter2@db:6379/0")
    except ConnectionError as exc:
        record = logging.LogRecord(
            "scanstream.test", logging.WARNING, __file__, 1, "%s (token %s)", (exc, TOKEN), None
        )
        record.exc_info = (type(exc), exc, exc.__traceback__)
    text = TextFormatter("%(message)s").format(record)
    body = json.loads(JsonFormatter().format(record))
    for shown in (text, body["message"], body["exception"]):
        assert "hunter2" not in shown and TOKEN not in shown
        assert "redis://app:***@db:6379/0" in shown


def test_the_log_level_setting_takes_a_level_name_and_refuses_others() -> None:
    """SCANSTREAM_LOG_LEVEL is info unless set, takes any case, and refuses an unknown
    name at start-up instead of logging nothing."""
    assert Settings.from_env({}).log_level == "info"
    assert Settings.from_env({"SCANSTREAM_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    with pytest.raises(ConfigError, match="SCANSTREAM_LOG_LEVEL"):
        Settings.from_env({"SCANSTREAM_LOG_LEVEL": "loud"})
