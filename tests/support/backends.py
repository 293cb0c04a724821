"""Running a test on a single Redis and on a Redis Cluster alike.

    @on_both_backends
    async def test_x(settings: Settings) -> None: ...

runs the test twice: its `settings` (and the `redis` and `storage` fixtures, and every
process started from those settings) point at the session's redis-server, then at the
session's local cluster (3 masters, 3 replicas; the cluster run is marked `cluster`).
"""

from __future__ import annotations

import pytest

on_both_backends = pytest.mark.parametrize(
    "backend", ["single", pytest.param("cluster", marks=pytest.mark.cluster)], indirect=True
)
