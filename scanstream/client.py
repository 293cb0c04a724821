"""A small synchronous client of the HTTP API, for the terminal commands."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class ApiClient:
    def __init__(
        self, base_url: str | None = None, token: str | None = None, timeout: float = 70.0
    ) -> None:
        self.base_url = (base_url or os.environ.get("SCANSTREAM_API_URL") or DEFAULT_URL).rstrip(
            "/"
        )
        self.token = token or os.environ.get("SCANSTREAM_TOKEN") or ""
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                raise ApiError(response.status_code, body.get("error", "?"), body.get("detail", ""))
            except ValueError:
                raise ApiError(response.status_code, "error", response.text[:200]) from None
        return response.json()

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
        with self.http.stream(
            "GET",
            f"/v1/scans/{scan_id}/events",
            headers=headers,
            timeout=httpx.Timeout(10.0, read=60.0),
        ) as response:
            if response.status_code >= 400:
                response.read()
                body = response.json()
                raise ApiError(response.status_code, body.get("error", "?"), body.get("detail", ""))
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
