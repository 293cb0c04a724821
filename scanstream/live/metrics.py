"""The fan-out's figures in /metrics (registered in the API's own registry)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from scanstream.live.fanout import Fanout


class FanoutCollector(Collector):
    """The fan-out's figures in /metrics."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        f = self.fanout
        yield GaugeMetricFamily(
            "scanstream_sse_subscribers",
            "Open SSE connections on this process.",
            value=f.subscribers,
        )
        yield GaugeMetricFamily(
            "scanstream_sse_following",
            "SSE connections following a running scan live.",
            value=f.following(),
        )
        yield GaugeMetricFamily(
            "scanstream_sse_watched_streams",
            "Scan streams the tail reader follows.",
            value=f.watched,
        )
        yield CounterMetricFamily(
            "scanstream_sse_dropped_slow",
            "SSE connections dropped because their buffer overflowed.",
            value=f.dropped_slow,
        )
        yield CounterMetricFamily(
            "scanstream_sse_dropped_other",
            "SSE connections closed early by the server for another reason (operator hook).",
            value=f.dropped_other,
        )
        yield CounterMetricFamily(
            "scanstream_sse_rejected", "SSE connections refused by a cap (429).", value=f.rejected
        )
        yield GaugeMetricFamily(
            "scanstream_results_waiting",
            "results?wait= long-polls waiting on this process (on the tail reader).",
            value=f.waiters,
        )
        yield CounterMetricFamily(
            "scanstream_results_wait_rejected",
            "results?wait= long-polls refused by a cap (429).",
            value=f.waits.rejected,
        )
        yield CounterMetricFamily(
            "scanstream_sse_tail_reads", "XREAD calls of the tail reader.", value=f.reads
        )
        yield CounterMetricFamily(
            "scanstream_sse_tail_read_errors",
            "Tail reads that failed (Redis unreachable).",
            value=f.read_errors,
        )
        yield CounterMetricFamily(
            "scanstream_sse_messages_queued",
            "Live messages handed to followers (SSE subscribers and waiting long-polls).",
            value=f.delivered,
        )
