"""Every Redis command and script of scanstream, and nothing else.

The API (`api/`, `service.py`), the live fan-out (`live/`), the workers (`consumers/`),
the replay tool (`replay/`) and `inspect` call the Python API below; none of them imports
redis (tests/test_architecture.py checks it). A connection-level Redis failure leaves
this package as `StoreUnavailable`.

| job | module |
| --- | --- |
| clients, and `Storage`, which hands each part the client it needs | `connection.py` |
| a connection pool that waits when full, at no cost otherwise | `pool.py` |
| every key name | `keys.py` |
| Redis failures as `StoreUnavailable` | `errors.py` |
| reading redis-py replies | `replies.py` |
| the Lua scripts, by name (sources in `lua/`), and pipelines of script calls | `scripts.py` |
| writes that wait for replicas (`SCANSTREAM_DURABLE_REPLICAS`) | `replication.py` |
| a scan's stream and fence: create, fenced writes, end, read a page | `events.py` |
| coalescing concurrent writes, and status reads, into one pipeline per loop turn | `batcher.py` |
| following many streams at once: the live tail | `tail.py` |
| the running set: deadlines, `inspect running` | `running.py` |
| a user's scan list, idempotency keys | `index.py` |
| admitting a user's new scans: scans per minute, active scans | `quotas.py` |
| the job queue (its partitions): enqueue, read, ack | `jobs.py` |
| claims on running jobs: heartbeat, reclaim | `claims.py` |
| job-stream upkeep: trim, prune consumers, the reaper's round | `upkeep.py` |
| dead letters: add, list, re-drive, drop | `dead_letters.py` |
| the job stream as operators see it | `job_info.py` |
| whole logs out and in: replay export and import | `exchange.py` |

One code path for a single Redis and a Redis Cluster (`SCANSTREAM_REDIS_CLUSTER`): every
command and script names keys of one hash slot. A scan's keys share the scan's slot; the
job queue is split into partitions, each one slot holding its job stream, dead letters
and running set (`keys.py`); a pipeline may span slots (redis-py splits it per node). The
clients are built in one place (`connection.py`), and the two places that tell the
modes apart say why: the tail reader (one blocking XREAD on a single Redis, a polled
pipeline per node on a cluster, `tail.py`) and `replication.py` (WAIT pinned to a node).
"""
