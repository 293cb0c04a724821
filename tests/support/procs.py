"""Real scanstream processes for end-to-end and fault tests: `scanstream api` and `worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from scanstream.embedded import free_port
from scanstream.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a scanstream process needs to join the test's Redis and prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCANSTREAM_")}
    env.update(
        {
            "SCANSTREAM_REDIS_URL": settings.redis_url or "",
            "SCANSTREAM_REDIS_CLUSTER": "1" if settings.redis_cluster else "0",
            "SCANSTREAM_JOB_PARTITIONS": str(settings.job_partitions),
            "SCANSTREAM_SECRET": settings.secret or "",
            "SCANSTREAM_PREFIX": settings.prefix,
            "SCANSTREAM_STRATEGIES": ",".join(settings.strategy_modules),
            "SCANSTREAM_CLAIM_IDLE_MS": str(settings.claim_idle_ms),
            "SCANSTREAM_HEARTBEAT_MS": str(settings.heartbeat_ms),
            "SCANSTREAM_RETRY_BACKOFF": str(settings.retry_backoff_s),
            "SCANSTREAM_MAX_ATTEMPTS": str(settings.max_attempts),
            "SCANSTREAM_RETENTION": str(settings.retention_s),
            "PYTHONPATH": str(REPO),
        }
    )
    env.update(extra)
    return env


@dataclass
class Proc:
    args: list[str]
    env: Mapping[str, str]
    log_path: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scanstream", *self.args],
                env=dict(self.env),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_http_ready(self, timeout_s: float = 20.0) -> Proc:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.args} exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.args} not ready: {self.log_path.read_text()[-3000:]}")

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()


def api_proc(settings: Settings, log_dir: Path, **env: str) -> Proc:
    port = free_port()
    return Proc(
        ["api", "--port", str(port)],
        env_for(settings, **env),
        log_dir / f"api-{port}.log",
        port=port,
    )


def worker_proc(
    settings: Settings,
    log_dir: Path,
    concurrency: int = 8,
    grace_s: float = 5.0,
    name: str = "worker",
    **env: str,
) -> Proc:
    return Proc(
        ["worker", "--concurrency", str(concurrency), "--grace", str(grace_s)],
        env_for(settings, **env),
        log_dir / f"{name}-{time.monotonic_ns()}.log",
    )


@contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    """Start every process (APIs waited for), and stop them all at the end whatever happens."""
    try:
        for p in procs:
            p.start()
        for p in procs:
            if p.port is not None:
                p.wait_http_ready()
        yield procs
    finally:
        for p in procs:
            p.stop()
