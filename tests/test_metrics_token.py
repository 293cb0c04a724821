"""`GET /metrics` behind its own bearer token (SCANSTREAM_METRICS_TOKEN), over a real socket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from scanstream.api import create_app
from scanstream.errors import ConfigError
from scanstream.settings import Settings
from tests.support.api_events import auth
from tests.support.http import serve

TOKEN = "metrics-7c0f2b1e9d"


@pytest.fixture
def guarded(settings: Settings) -> Iterator[str]:
    with serve(create_app(settings.with_(metrics_token=TOKEN))) as url:
        yield url


def test_without_the_setting_metrics_are_open(settings: Settings) -> None:
    """Given no metrics token, when /metrics is fetched with no credentials, then it answers
    Prometheus text, as before."""
    with serve(create_app(settings)) as url:
        response = httpx.get(url + "/metrics")
    assert response.status_code == 200
    assert "scanstream_" in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        auth("alice"),  # a user's API token is not the metrics token
    ],
    ids=["none", "wrong", "longer", "basic", "empty", "user-token"],
)
def test_with_the_setting_metrics_need_that_token(guarded: str, headers: dict[str, str]) -> None:
    """Given a metrics token, when /metrics is fetched without it, then the answer is the
    contract's 401: JSON {error, detail}, WWW-Authenticate: Bearer, and no metrics."""
    response = httpx.get(guarded + "/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == "unauthorized"
    assert "scanstream_" not in response.text and TOKEN not in response.text


def test_with_the_setting_the_token_opens_metrics(guarded: str) -> None:
    """Given a metrics token, when /metrics is fetched with it, then it answers the metrics;
    other routes are unchanged (health stays open)."""
    response = httpx.get(guarded + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and "scanstream_" in response.text
    assert httpx.get(guarded + "/healthz").status_code == 200


def test_the_token_is_read_from_the_environment() -> None:
    """Given SCANSTREAM_METRICS_TOKEN, when settings are read, then it is the token (unset:
    none); a token a header cannot carry is refused at start-up."""
    assert Settings.from_env({"SCANSTREAM_METRICS_TOKEN": TOKEN}).metrics_token == TOKEN
    assert Settings.from_env({}).metrics_token is None
    with pytest.raises(ConfigError, match="SCANSTREAM_METRICS_TOKEN"):
        Settings.from_env({"SCANSTREAM_METRICS_TOKEN": "two words"})
    assert TOKEN not in repr(Settings.from_env({"SCANSTREAM_METRICS_TOKEN": TOKEN}))
