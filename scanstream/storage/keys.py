"""Every Redis key name scanstream uses, in one place.

Per-scan keys carry the hash tag `{scan_id}` so they live in one cluster slot, can be
updated atomically by one Lua script, and expire together.
"""

from __future__ import annotations

from dataclasses import dataclass

from scanstream.ids import is_scan_id, is_user_id

JOB_GROUP = "strategy-workers"


@dataclass(frozen=True, slots=True)
class ScanKeys:
    events: str  # the scan's event stream: the only source of truth
    fence: str  # coordination hash: attempts and terminal flag, so writes can be fenced atomically
    writes: str  # each strategy's last applied write token and reply: re-sends answer alike


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    def scan(self, scan_id: str) -> ScanKeys:
        # No key is ever built from an unvalidated id.
        if not is_scan_id(scan_id):
            raise ValueError(f"not a scan id: {scan_id!r}")
        tag = f"{self.prefix}:{{{scan_id}}}"
        return ScanKeys(events=f"{tag}:events", fence=f"{tag}:fence", writes=f"{tag}:writes")

    def events(self, scan_id: str) -> str:
        return self.scan(scan_id).events

    def user_scans(self, user_id: str) -> str:
        """Sorted set of a user's scan ids, for listing only; status never depends on it."""
        if not is_user_id(user_id):
            raise ValueError(f"not a user id: {user_id!r}")
        return f"{self.prefix}:user:{{{user_id}}}:scans"

    def idempotency(self, user_id: str, key_digest: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}:idem:{key_digest}"

    @property
    def jobs(self) -> str:
        """The strategy job stream read by the `strategy-workers` consumer group."""
        return f"{self.prefix}:jobs"

    @property
    def dead_letters(self) -> str:
        """Jobs whose strategy failed for good: a record for operators (`scanstream inspect`)."""
        return f"{self.prefix}:jobs:dead"

    @property
    def running_scans(self) -> str:
        """Sorted set of scans that may still be running, scored by creation ms.

        Only the deadline reaper and `inspect` read it; a scan's status never depends on it.
        A scan is added before its stream is created and removed once it has ended, so an
        entry can name a scan that has already ended (removed on the next sweep), never the
        other way round: no running scan escapes its deadline.
        """
        return f"{self.prefix}:scans:running"

    @property
    def reaper_lock(self) -> str:
        """Held for one reaper round by one worker, so N workers do not all sweep at once."""
        return f"{self.prefix}:reaper"
