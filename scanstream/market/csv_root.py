"""The CSV root (`SCANSTREAM_CSV_ROOT`): paths under it, looked up and read without leaving it.

A path a request names is first checked as text (`clean`: no NUL byte, not absolute, no
`..`, no name over 255 bytes). Then `Root` looks it up one name at a time from the root's
open descriptor, following symlinks itself: a relative target is walked the same way (its
`..` never climbs above the root), an absolute one must name a place inside the root.
Nothing outside the root is ever opened, listed or even looked at, and a folder swapped
for a symlink in between is refused (every open is O_NOFOLLOW). Files are read only when
they are regular files, and only up to a size cap.

Errors name paths relative to the root, as the caller wrote them: never the root's
absolute path, never where a symlink points.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from scanstream.market.data import MarketDataError

NAME_MAX_BYTES = 255  # the longest file name Linux and macOS filesystems take
MAX_SYMLINKS = 40  # as Linux: past this many hops in one lookup it is a loop

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Non-blocking: opening a FIFO swapped in after the check must not wait for a writer.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PROBLEMS = {
    errno.ENOENT: "does not exist",
    errno.ENOTDIR: "is not a folder",
    errno.ELOOP: "is a symlink loop",
    errno.ENAMETOOLONG: "has a name too long for the filesystem",
    errno.EACCES: "cannot be read (permission denied)",
    errno.EPERM: "cannot be read (permission denied)",
}


class PathRefused(MarketDataError):
    """A path under the CSV root that may not, or cannot, be read."""


class PathMissing(PathRefused):
    """Nothing by that name (or a symlink to nothing)."""


def clean(rel: str) -> str:
    """`rel` as a plain relative path ("." for the root itself), or `PathRefused` for what
    no lookup could make safe."""
    if "\x00" in rel:
        raise PathRefused("must not contain a NUL byte")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise PathRefused("must be valid text (it holds a lone surrogate)") from None
    if rel.startswith("/"):
        raise PathRefused("must be a folder relative to the CSV root, not an absolute path")
    names = [n for n in rel.split("/") if n not in ("", ".")]
    if ".." in names:
        raise PathRefused("must not contain '..'")
    if any(len(n.encode("utf-8")) > NAME_MAX_BYTES for n in names):
        raise PathRefused(f"has a name longer than {NAME_MAX_BYTES} bytes")
    return "/".join(names) or "."


def join(*parts: str) -> str:
    """Relative paths joined, the root's "." left out."""
    return "/".join(p for p in parts if p != ".") or "."


class Root:
    """An open CSV root. Use as a context manager: it holds the root's descriptor."""

    def __init__(self, path: str) -> None:
        # Absolute symlink targets may name the root as configured or as it really is.
        self._prefixes = {os.path.abspath(path), os.path.realpath(path)}
        try:
            self._fd = os.open(os.path.realpath(path), _DIR)
        except OSError as exc:
            raise PathRefused(f"the CSV root cannot be opened ({exc.strerror})") from None

    def __enter__(self) -> Root:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.close(self._fd)

    def stat(self, rel: str) -> os.stat_result:
        """What `rel` is (after its symlinks): `S_ISDIR`, `S_ISREG`, size, mtime."""
        with self._locate(rel) as (_, _, st):
            return st

    def require_folder(self, rel: str) -> None:
        """Refuse `rel` unless it is a folder (after its symlinks)."""
        if not stat.S_ISDIR(self.stat(rel).st_mode):
            raise PathRefused(f"{rel}: is not a folder")

    def listdir(self, rel: str) -> list[str]:
        """The names in folder `rel`, sorted."""
        with self._locate(rel) as (parent, name, _):
            fd = _open(rel, name, _DIR, parent)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def read(self, rel: str, max_bytes: int) -> bytes:
        """The bytes of regular file `rel`, refused past `max_bytes`."""
        with self._locate(rel) as (parent, name, st):
            if not stat.S_ISREG(st.st_mode):
                raise PathRefused(f"{rel}: not a regular file")  # a FIFO is never opened
            fd = _open(rel, name, _FILE, parent)
        with os.fdopen(fd, "rb") as fh:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                raise PathRefused(f"{rel}: not a regular file")  # swapped since the check
            size = opened.st_size
            raw = b"" if size > max_bytes else fh.read(max_bytes + 1)
        if size > max_bytes or len(raw) > max_bytes:
            raise PathRefused(
                f"{rel}: {max(size, len(raw)):,} bytes, over the limit of {max_bytes:,} bytes "
                "per file (SCANSTREAM_CSV_MAX_FILE_BYTES)"
            )
        return raw

    @contextmanager
    def _locate(self, rel: str) -> Iterator[tuple[int, str, os.stat_result]]:
        """(descriptor of the folder holding `rel`, its name there, its lstat), with every
        symlink on the way followed inside the root. The descriptor lives for the block."""
        pending = list(reversed(rel.split("/")))
        folders = [self._fd]  # the root, then each folder walked into
        hops = 0
        try:
            while True:
                name = pending.pop() if pending else "."
                if name in ("", "."):
                    if pending:
                        continue
                    name = "."  # the path ends at the folder walked into last
                if name == "..":
                    if len(folders) == 1:
                        raise PathRefused(f"{rel}: leads outside the CSV root")
                    os.close(folders.pop())
                    continue
                st = _lstat(rel, name, folders[-1])
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_SYMLINKS:
                        raise PathRefused(f"{rel}: is a symlink loop")
                    target = _readlink(rel, name, folders[-1])
                    if target.startswith("/"):
                        target = self._inside(rel, target)
                        while len(folders) > 1:
                            os.close(folders.pop())
                    pending.extend(reversed(target.split("/")))
                    continue
                if not pending:
                    yield folders[-1], name, st
                    return
                folders.append(_open(rel, name, _DIR, folders[-1]))
        finally:
            for fd in folders[1:]:
                os.close(fd)

    def _inside(self, rel: str, target: str) -> str:
        """An absolute symlink target as a path relative to the root, if it starts inside
        (not normalised: a `..` after the root's prefix is walked, and stopped, as any other)."""
        for prefix in self._prefixes:
            base = prefix.rstrip("/") + "/"
            if target == prefix or target.startswith(base):
                return target[len(base) :] or "."
        raise PathRefused(f"{rel}: leads outside the CSV root")


def _problem(rel: str, exc: OSError) -> PathRefused:
    kind = PathMissing if exc.errno == errno.ENOENT else PathRefused
    return kind(f"{rel}: {_PROBLEMS.get(exc.errno or 0, exc.strerror or 'cannot be read')}")


def _lstat(rel: str, name: str, folder: int) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError as exc:
        raise _problem(rel, exc) from None


def _readlink(rel: str, name: str, folder: int) -> str:
    try:
        return os.readlink(name, dir_fd=folder)
    except OSError as exc:
        raise _problem(rel, exc) from None


def _open(rel: str, name: str, flags: int, folder: int) -> int:
    try:
        return os.open(name, flags, dir_fd=folder)
    except OSError as exc:
        raise _problem(rel, exc) from None
