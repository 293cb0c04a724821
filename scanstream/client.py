"""A small synchronous client of the HTTP API, for the terminal commands.

Every failure leaves it as a `ClientError` whose message is one sentence for a person: a
bad URL or token is caught before anything is sent (httpx would otherwise raise from deep
inside its HTTP/1.1 layer), an API that cannot be reached is an `ApiUnreachable` (worth
retrying), and an HTTP error is an `ApiError` carrying the API's own code and detail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from scanstream.errors import ScanstreamError
from scanstream.redact import redact

DEFAULT_URL = "http://127.0.0.1:8000"
# RFC 6750's b64token: what an Authorization: Bearer value may hold.
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
HINT = "is `scanstream dev` running? (the URL comes from SCANSTREAM_API_URL or --api)"


class ClientError(ScanstreamError):
    """The API could not be asked, or did not answer as the API does."""


class ApiUnreachable(ClientError):
    """No answer: connection refused or reset, a timeout, a name that does not resolve."""


class ApiError(ClientError):
    """The API answered with an HTTP error."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(" ".join(f"{status} {code}: {detail}".split()))  # one line
        self.status = status
        self.code = code
        self.detail = detail


class ApiClient:
    def __init__(
        self, base_url: str | None = None, token: str | None = None, timeout: float = 70.0
    ) -> None:
        url = (base_url or os.environ.get("SCANSTREAM_API_URL") or DEFAULT_URL).strip()
        self.base_url = _checked_url(url)
        self.shown_url = redact(self.base_url)  # what messages name: never a password
        self.token = _checked_token(
            token if token is not None else os.environ.get("SCANSTREAM_TOKEN", "")
        )
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    @contextmanager
    def _asking(self) -> Iterator[None]:
        """httpx's errors as one-sentence `ClientError`s."""
        try:
            yield
        except httpx.TimeoutException:
            raise ApiUnreachable(f"the API at {self.shown_url} did not answer in time") from None
        except httpx.ConnectError as exc:
            reason = str(exc).rsplit("] ", 1)[-1] or "connection failed"  # "[Errno 111] ..."
            raise ApiUnreachable(
                f"cannot reach the API at {self.shown_url} ({reason}); {HINT}"
            ) from None
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"the connection to the API at {self.shown_url} broke ({type(exc).__name__}: "
                f"{exc or 'no detail'})"
            ) from None
        except httpx.HTTPError as exc:
            raise ClientError(
                f"talking to the API at {self.shown_url}: {redact(str(exc))}"
            ) from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._asking():
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.shown_url} answered {method} {path} with something that is not JSON; "
                "is it the scanstream API?"
            ) from None

    def start(
        self,
        strategies: list[str] | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"params": params or {}}
        if strategies:
            body["strategies"] = strategies
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._call("POST", "/v1/scans", json=body, headers=headers)
        return result

    def list(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/scans")
        return result

    def status(self, scan_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/scans/{scan_id}")
        return result

    def results(self, scan_id: str, wait: float | None = None) -> dict[str, Any]:
        params = {"wait": wait} if wait else None
        result: dict[str, Any] = self._call("GET", f"/v1/scans/{scan_id}/results", params=params)
        return result

    def cancel(self, scan_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/scans/{scan_id}/cancel")
        return result

    def events(self, scan_id: str, after: str | None = None) -> Iterator[tuple[str, str, str]]:
        """Server-Sent Events of a scan as (id, event, data) tuples, until the stream ends."""
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = after
        with (
            self._asking(),
            self.http.stream(
                "GET",
                f"/v1/scans/{scan_id}/events",
                headers=headers,
                timeout=httpx.Timeout(10.0, read=60.0),
            ) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line == "":
                    if "data" in fields:
                        yield fields.get("id", ""), fields.get("event", "message"), fields["data"]
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    fields[name] = fields[name] + "\n" + value if name in fields else value


def _error(response: httpx.Response) -> ApiError:
    """The API's `{"error", "detail"}` body as an `ApiError` (or the start of whatever
    else a server that is not the API answered)."""
    try:
        body = response.json()
        return ApiError(response.status_code, body.get("error", "?"), body.get("detail", ""))
    except (ValueError, AttributeError):
        return ApiError(response.status_code, "error", response.text[:200])


def _checked_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ClientError(f"the API URL {redact(url)!r} is not a URL: {redact(str(exc))}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ClientError(
            f"the API URL {redact(url)!r} must look like http://HOST:PORT "
            "(SCANSTREAM_API_URL or --api)"
        )
    return url.rstrip("/")


def _checked_token(token: str) -> str:
    token = token.strip()  # a pasted token often brings a newline along
    if not token:
        raise ClientError(
            "no token: set SCANSTREAM_TOKEN (export SCANSTREAM_TOKEN=$(scanstream token "
            "USER_ID)) or pass --token"
        )
    if not BEARER_TOKEN.fullmatch(token):
        # Name the bad character, not the token: a token is never printed.
        at = next(i for i, c in enumerate(token) if not BEARER_TOKEN.fullmatch(c))
        raise ClientError(
            f"the token is malformed at character {at + 1} ({token[at]!r}) (SCANSTREAM_TOKEN or "
            "--token); `scanstream token USER_ID` prints a good one"
        )
    return token
