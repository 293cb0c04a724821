"""Markets built once for several processes: a folder of pickled markets, one builder each.

Why: in `process` isolation every strategy runs in a process of its own, so each one
built its scan's market itself: one scan of the 14 built-ins built the same 250,000-bar
market 14 times (0.45-0.6 s of CPU each, most of that scan's cost). With a share, the
first process to need a market builds it and leaves it pickled in the folder; the others
wait for that build (a lock file each market) and load it, several times cheaper than
building it.

The folder must be private to one worker and its strategy processes (the worker makes
it with `tempfile.mkdtemp`, mode 0700, and removes it when it stops): a pickle is code,
so nothing else may write there. It keeps the `MAX_MARKETS` most recently written
markets; a process that holds a market keeps its own copy in memory meanwhile.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from scanstream.market.data import Market

MAX_MARKETS = 16  # a 250,000-bar market pickles to ~12 MB


class MarketShare:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get_or_build(self, key: Hashable, build: Callable[[], Market]) -> Market:
        """The market of `key` from the folder, else `build()` it (one process at a time
        per key: the others wait, then load what it left)."""
        name = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        path = self.folder / f"{name}.market"
        market = _read(path)
        if market is not None:
            return market
        with _locked(self.folder / f"{name}.lock"):
            market = _read(path)
            if market is None:
                market = build()
                self._keep(path, market)
        return market

    def _keep(self, path: Path, market: Market) -> None:
        """Write `market` whole (rename), then forget the oldest beyond MAX_MARKETS. A
        full disk only costs the sharing."""
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(market, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except OSError:
            with suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
            return
        kept = sorted(self.folder.glob("*.market"), key=_mtime, reverse=True)
        for old in kept[MAX_MARKETS:]:
            with suppress(OSError):
                old.unlink()
                old.with_suffix(".lock").unlink()


def _read(path: Path) -> Market | None:
    try:
        with path.open("rb") as f:
            market = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        return None
    return market if isinstance(market, Market) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if needed); the kernel drops it if the holder
    dies, so a strategy process killed mid-build never blocks the others."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
