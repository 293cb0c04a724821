"""The folder `scanstream dev` keeps its data in (`SCANSTREAM_DATA_DIR`, `.scanstream`):
the embedded Redis's AOF, the dev secret, and the lock that lets one `dev` at a time use
them.

Two `dev`s on one folder would run two redis-servers appending to one AOF file, so the
second refuses to start. The lock is an `flock` on `dev.lock`, which the kernel releases
however its holder ends (even by SIGKILL), so a stale file never blocks anyone; the file
holds the holder's pid, for the refusal to name it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scanstream.errors import ConfigError
from scanstream.settings import Settings

LOCK_FILE = "dev.lock"
SECRET_FILE = "secret"


class AlreadyRunning(ConfigError):
    """Another `scanstream dev` holds this data folder."""


@contextmanager
def only_dev_in(data_dir: Path) -> Iterator[None]:
    """Hold the folder's lock for the block, or raise `AlreadyRunning` naming the holder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # os.open's descriptors are not inherited: the redis-server child never holds the lock
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise AlreadyRunning(
                f"another `scanstream dev` (pid {holder or 'unknown'}) is using {data_dir}; "
                "stop it first, or give this one its own SCANSTREAM_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new dev)


def secret_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / SECRET_FILE


def read_secret(settings: Settings) -> tuple[str | None, Path]:
    """The dev secret (None if `dev` never ran with this data folder) and where it lives."""
    path = secret_path(settings)
    try:
        return path.read_text().strip() or None, path
    except OSError:
        return None, path


def dev_secret(settings: Settings) -> str:
    """The dev secret, made on first use: it stays across runs, so tokens stay valid."""
    value, path = read_secret(settings)
    if value:
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    # created private: the secret signs every token this folder's dev accepts
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value
