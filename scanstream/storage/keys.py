"""Every Redis key name scanstream uses, in one place.

Per-scan keys carry the hash tag `{scan_id}` so they live in one cluster slot, can be
updated atomically by one Lua script, and expire together.

The job queue is split into partitions (`SCANSTREAM_JOB_PARTITIONS`). Each partition is
its own hash tag, holding its job stream (with its consumer group), its users' lanes,
its dead letters and its running set, so every command and script on a partition touches
one slot. A user's jobs all go to one partition, chosen from the user id (`jobs_of`);
a scan's running-set entry goes to the partition chosen from the scan id
(`partition_of`). The tags are picked so that partition i's slot falls in the i-th
equal share of the 16,384 slots: partitions spread evenly over the masters of a cluster
whose slots are split evenly (as `redis-cli --cluster create` splits them), instead of
where CRC16 happens to put them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache, cached_property

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from scanstream.ids import is_scan_id, is_user_id

JOB_GROUP = "strategy-workers"
DEFAULT_PARTITIONS = 8


@dataclass(frozen=True, slots=True)
class ScanKeys:
    events: str  # the scan's event stream: the only source of truth
    fence: str  # coordination hash: attempts and terminal flag, so writes can be fenced atomically
    writes: str  # each strategy's last applied write token and reply: re-sends answer alike


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    index: int
    jobs: str  # the partition's job stream, read by the JOB_GROUP consumer group
    # Fair share (lua/job_lanes.lua): each user's waiting jobs in a lane (a sorted set
    # named `lane_prefix + user`), ordered by the partition's arrival counter; the users
    # with waiting jobs in a ring; and per user the jobs of the stream not yet acknowledged.
    lane_prefix: str
    arrivals: str
    ring: str
    running_jobs: str
    dead_letters: str  # jobs whose strategy failed for good: a record for operators
    # Sorted set of scans that may still be running, scored by creation ms. Only the
    # deadline reaper and `inspect` read it; a scan's status never depends on it. A scan
    # is added before its stream is created and removed once it has ended, so an entry
    # can name a scan that has already ended (removed on the next sweep), never the other
    # way round: no running scan escapes its deadline.
    running: str


@cache
def partition_tag(index: int, partitions: int) -> str:
    """The hash tag of partition `index` of `partitions`: its slot lies in the index-th
    equal share of the slot range."""
    low = index * REDIS_CLUSTER_HASH_SLOTS // partitions
    high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
    n = 0
    while not low <= key_slot(f"jobs.{index}.{n}".encode()) < high:
        n += 1
    return f"jobs.{index}.{n}"


@dataclass(frozen=True)
class Keys:
    prefix: str
    partition_count: int = DEFAULT_PARTITIONS

    @cached_property
    def partitions(self) -> tuple[PartitionKeys, ...]:
        out = []
        for i in range(self.partition_count):
            tag = f"{self.prefix}:{{{partition_tag(i, self.partition_count)}}}"
            out.append(
                PartitionKeys(
                    i,
                    jobs=f"{tag}:jobs",
                    lane_prefix=f"{tag}:lane:",
                    arrivals=f"{tag}:arrivals",
                    ring=f"{tag}:ring",
                    running_jobs=f"{tag}:running-jobs",
                    dead_letters=f"{tag}:dead",
                    running=f"{tag}:running",
                )
            )
        return tuple(out)

    def partition_of(self, scan_id: str) -> PartitionKeys:
        """The partition holding a scan's running-set entry: from its id alone (the random
        tail of its UUIDv7)."""
        return self.partitions[int(scan_id[-8:], 16) % self.partition_count]

    def jobs_of(self, user_id: str) -> PartitionKeys:
        """The partition holding every job of a user's scans, so that the user's lane and
        running count, and the cap on them, live in one slot."""
        return self.partitions[zlib.crc32(user_id.encode()) % self.partition_count]

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

    def user_active(self, user_id: str) -> str:
        """Sorted set of a user's queued or running scans (`SCANSTREAM_USER_MAX_ACTIVE_SCANS`)."""
        if not is_user_id(user_id):
            raise ValueError(f"not a user id: {user_id!r}")
        return f"{self.prefix}:user:{{{user_id}}}:active"

    def user_bucket(self, user_id: str) -> str:
        """A user's token bucket of new scans (`SCANSTREAM_USER_SCANS_PER_MINUTE`)."""
        if not is_user_id(user_id):
            raise ValueError(f"not a user id: {user_id!r}")
        return f"{self.prefix}:user:{{{user_id}}}:bucket"

    def idempotency(self, user_id: str, key_digest: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}:idem:{key_digest}"

    @property
    def workers(self) -> str:
        """Sorted set of worker names, scored by when each last said it was there (ms):
        whether a worker reads alone. Advisory: a worker missing from it only reads as if
        it were alone for a second."""
        return f"{self.prefix}:workers"

    @property
    def reaper_lock(self) -> str:
        """Held for one reaper round by one worker, so N workers do not all sweep at once."""
        return f"{self.prefix}:reaper"
