"""Prometheus metrics of one API process, in a registry of its own.

Requests are labelled by route template (`/v1/scans/{scan_id}`), never by raw path, so
the label set stays small however many scans exist. With `--workers N` each process
exposes its own numbers; scrape each, or aggregate by instance.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scanstream.projection_cache import ProjectionCache

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text/plain; version=0.0.4; charset=utf-8
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _CacheCollector(Collector):
    def __init__(self, metrics: ApiMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cache = self.metrics.cache
        if cache is None:
            return
        stats = cache.stats
        yield CounterMetricFamily(
            "scanstream_projection_cache_hits",
            "Status reads that folded only new entries.",
            value=stats.hits,
        )
        yield CounterMetricFamily(
            "scanstream_projection_cache_misses",
            "Status reads that folded the whole log.",
            value=stats.misses,
        )
        yield CounterMetricFamily(
            "scanstream_projection_cache_dropped",
            "Cached views dropped: their stream was gone.",
            value=stats.dropped,
        )
        yield CounterMetricFamily(
            "scanstream_log_entries_unreadable",
            "Log entries skipped by the fold as unreadable (each time this process folds them).",
            value=stats.unreadable,
        )
        yield GaugeMetricFamily(
            "scanstream_projection_cache_size",
            "Scans held in the projection cache.",
            value=len(cache),
        )


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.cache: ProjectionCache | None = None  # set once the lifespan has built it
        self.requests = Counter(
            "scanstream_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "scanstream_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scans_created = Counter(
            "scanstream_scans_created", "Scans created.", registry=self.registry
        )
        self.store_errors = Counter(
            "scanstream_store_errors",
            "Requests answered 503 because Redis was unreachable.",
            registry=self.registry,
        )
        self.registry.register(_CacheCollector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._cache: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            counter, timer = self._children(method, template, status)
            counter.inc()
            timer.observe(time.perf_counter() - start)

    def _children(self, method: str, template: str, status: int) -> tuple[Any, Any]:
        # `labels()` validates and locks on every call; the label sets are few and fixed
        # (route templates, not paths), so resolve each once. It is on the hot path.
        key = (method, template, status)
        children = self._cache.get(key)
        if children is None:
            children = self._cache[key] = (
                self.metrics.requests.labels(method, template, str(status)),
                self.metrics.latency.labels(method, template),
            )
        return children
