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
| the Lua scripts, by name (sources in `lua/`) | `scripts.py` |
| a scan's stream and fence: create, fenced writes, end, read a page | `events.py` |
| coalescing concurrent writes into one pipeline per loop turn | `batcher.py` |
| following many streams at once: the live tail | `tail.py` |
| the running set: deadlines, `inspect running` | `running.py` |
| a user's scan list, idempotency keys | `index.py` |
| the job queue: enqueue, read, ack | `jobs.py` |
| claims on running jobs: heartbeat, reclaim | `claims.py` |
| job-stream upkeep: trim, prune consumers, the reaper's round | `upkeep.py` |
| dead letters: add, list, re-drive, drop | `dead_letters.py` |
| the job stream as operators see it | `job_info.py` |
| whole logs out and in: replay export and import | `exchange.py` |

Cluster mode is not built yet; the seams for it are here. A scan's keys share one hash
slot (`keys.py`), so every script and transaction on a scan stays on one slot; clients
are built in one place (`connection.py`); the tail reader is the one multi-key read (one
read per slot on a cluster, `tail.py`); and every job-stream command is in this package,
so job partitions (a stream per partition, read one by one) change no caller.
"""
