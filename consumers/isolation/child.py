"""A strategy process (`process` isolation): runs one attempt at a time for its worker.

Started by consumers/isolation/processes.py as `python -m consumers.isolation.child FD
MAX_MB MARKETS`, with the worker's strategy modules in SCANSTREAM_STRATEGIES; MARKETS is
the folder where the worker's strategy processes share their market builds. It dies with
its worker (PR_SET_PDEATHSIG) and ignores the terminal's Ctrl-C (the worker decides when
it stops).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consumers.context import Pairs
from consumers.isolation import wire
from consumers.isolation.attempt import AttemptSpec, context_for, run_attempt

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the worker died before prctl took effect
            os._exit(1)


def _limit_memory(max_mb: int) -> None:
    if max_mb > 0:
        limit = max_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str]) -> int:
    fd, max_mb, markets = int(argv[0]), int(argv[1]), Path(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    sock = socket.socket(fileno=fd)

    from scanstream.market import MarketShare, load_market, share_builds
    from scanstream.settings import Settings
    from scanstream.strategies.registry import load_strategies

    share_builds(MarketShare(markets))
    settings = Settings.from_env()
    strategies = load_strategies(settings.strategy_modules)

    def market_factory(params: Mapping[str, Any]) -> Any:
        return load_market(params, settings.csv)

    _limit_memory(max_mb)  # after the imports: the limit is for the strategies' data
    loop = asyncio.new_event_loop()
    sock.sendall(wire.frame(["ready"]))

    async def write(pairs: Pairs) -> str:
        # One attempt per process: blocking here blocks nothing else.
        sock.sendall(wire.frame(["write", [list(p) for p in pairs]]))
        reply = wire.recv_blocking(sock)
        if reply is None:
            raise SystemExit(0)  # the worker has gone
        return str(reply[1])

    while True:
        message = wire.recv_blocking(sock)
        if message is None:
            return 0
        _, scan_id, name, attempt, params, max_findings = message
        spec = AttemptSpec(scan_id, name, attempt, params, max_findings)
        context = context_for(spec, write, market_factory)
        strategy = strategies.get(name)
        if strategy is None:
            sock.sendall(
                wire.frame(["done", [], 0, "UnknownStrategy", f"{name}: not loaded here", None, 0])
            )
            continue
        result = loop.run_until_complete(run_attempt(strategy, context))
        error = result.error
        sock.sendall(
            wire.frame(
                [
                    "done",
                    [list(p) for p in result.pending],
                    result.found_count,
                    error.type if error else None,
                    error.message if error else None,
                    result.stopped,
                    result.findings_dropped,
                ]
            )
        )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
