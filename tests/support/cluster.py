"""A local Redis Cluster for tests: six redis-server processes (3 masters, 3 replicas).

    cluster = LocalCluster(tmp_path).start()     # ready in ~2.5 s; else raises, with log tails
    rc = RedisCluster.from_url(cluster.seed_url)
    owner = cluster.master_for_key("scan:{42}")
    cluster.migrate_slot(key_slot(b"scan:{42}"), other_master)   # exactly one slot, with keys
    cluster.kill(owner); promoted = cluster.wait_for_failover(owner)
    cluster.restart(owner)                        # rejoins as a replica of `promoted`
    cluster.stop()                                # idempotent, safe with dead nodes

Each node is a `scanstream.embedded.RedisProcess` (same flags: 127.0.0.1 only, AOF on,
no RDB snapshots, its own session, log file in its data dir) with cluster mode on and a
1 s node timeout, so a failover takes ~2-3 s. The cluster is built by `redis-cli --cluster
create` and is only handed out once every node says `cluster_state:ok`, all nodes answer
CLUSTER SLOTS identically, and every replica's link to its master is up.

Everything here is synchronous (admin connections with short timeouts): an async test
runs the slow parts in a thread, e.g. `await anyio.to_thread.run_sync(cluster.migrate_slot,
slot, target)` while its own traffic goes on. Roles change (failover), so methods that
answer "who is master" ask the cluster; `ClusterNode.role` is what was last seen.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.retry import Retry

from scanstream.embedded import RedisProcess, find_redis_binary, free_port
from scanstream.errors import ConfigError

SLOTS = 16384
BUS_PORT_OFFSET = 10000  # the cluster bus listens on port + 10000
HOST = "127.0.0.1"
POLL_S = 0.05
ADMIN_TIMEOUT_S = 2.0
MIGRATE_TIMEOUT_MS = 5000

SlotRange = tuple[int, int]
# One node's answer to CLUSTER SLOTS, normalized: (start, end, master id, replica ids)
SlotMap = tuple[tuple[int, int, str, tuple[str, ...]], ...]


class ClusterError(RuntimeError):
    """The cluster did not reach the state asked for in time (the message has log tails)."""


def find_redis_cli() -> str:
    return find_redis_binary("redis-cli")


def free_cluster_port(taken: Iterable[int] = ()) -> int:
    """A free port whose cluster bus port (port + 10000) is free as well."""
    avoid = set(taken)
    for _ in range(500):
        port = free_port()
        bus = port + BUS_PORT_OFFSET
        if bus > 65535 or port in avoid or bus in avoid:
            continue
        if port - BUS_PORT_OFFSET in avoid:  # someone else's bus port
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, bus))
            except OSError:
                continue
        return port
    raise ConfigError("found no free port pair (port, port + 10000) for a cluster node")


@dataclass(eq=False)
class ClusterNode(RedisProcess):
    """One cluster node: a `RedisProcess` with cluster mode on."""

    node_timeout_ms: int = 1000
    node_id: str = ""  # the cluster's name for it (kept in nodes.conf, stable over restarts)
    role: str = "unknown"  # "master", "replica" or "dead", as last seen
    master_id: str | None = None  # a replica's master, as last seen
    _admin: redis.Redis | None = field(default=None, repr=False)
    _admin_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            # a replica's full sync starts at once (7.x waits 5 s for more replicas)
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
            # a fresh master pings its replicas every 10 s, and CLUSTER SLOTS leaves out a
            # replica until its offset moved past 0: at 1 s it shows within a second
            "--repl-ping-replica-period",
            "1",
            # the topology changes only when a test changes it
            "--cluster-allow-replica-migration",
            "no",
            "--loglevel",
            "notice",  # failovers and slot moves show in the log tails of errors
        ]

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.alive and self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def admin(self) -> redis.Redis:
        """A sync client for admin commands: short timeouts, no retries, raw bytes."""
        with self._admin_lock:  # one client, even when a migration thread asks too
            if self._admin is None:
                self._admin = redis.Redis(
                    host=HOST,
                    port=self.port,
                    socket_timeout=ADMIN_TIMEOUT_S,
                    socket_connect_timeout=1.0,
                    retry=Retry(NoBackoff(), 0),
                    decode_responses=False,
                )
            return self._admin

    def close_admin(self) -> None:
        with self._admin_lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    def log_tail(self, lines: int = 20) -> str:
        log = self.data_dir / "redis.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __str__(self) -> str:
        return f"{self.address} ({self.role}, {self.node_id[:8] or '?'})"


@dataclass(frozen=True)
class NodeEntry:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    connected: bool
    slots: tuple[SlotRange, ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


def parse_cluster_nodes(text: str) -> list[NodeEntry]:
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split(",")[0].split("@")[0]
        slots: list[SlotRange] = []
        for item in parts[8:]:
            if item.startswith("["):  # a slot being migrated or imported
                continue
            start, _, end = item.partition("-")
            slots.append((int(start), int(end or start)))
        entries.append(
            NodeEntry(
                node_id=parts[0],
                port=int(address.rsplit(":", 1)[1] or 0),
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                connected=parts[7] == "connected",
                slots=tuple(sorted(slots)),
            )
        )
    return entries


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _slot_map(reply: Any) -> SlotMap:
    """CLUSTER SLOTS, without addresses' details and replica order."""
    rows = []
    for item in reply:
        start, end, master, *replicas = item
        rows.append(
            (
                int(start),
                int(end),
                _text(master[2]),
                tuple(sorted(_text(r[2]) for r in replicas)),
            )
        )
    return tuple(sorted(rows))


def _cluster_info(node: ClusterNode) -> dict[str, str]:
    raw = _text(node.admin.execute_command("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in raw.splitlines() if ":" in line)


def _cluster_nodes(node: ClusterNode) -> list[NodeEntry]:
    return parse_cluster_nodes(_text(node.admin.execute_command("CLUSTER", "NODES")))


def _cluster_slots(node: ClusterNode) -> SlotMap:
    return _slot_map(node.admin.execute_command("CLUSTER", "SLOTS"))


class LocalCluster:
    """A Redis Cluster of `masters` masters with `replicas` replicas each, on free ports,
    each node in its own folder under `base_dir`."""

    def __init__(
        self,
        base_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        appendfsync: str = "everysec",
    ) -> None:
        self.base_dir = Path(base_dir)
        self.masters_count = masters
        self.replicas_count = replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendfsync = appendfsync
        self.nodes: list[ClusterNode] = []
        self.started_in_s: float | None = None
        self._slots_at_kill: dict[int, tuple[SlotRange, ...]] = {}  # by port

    # --- lifecycle -----------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> LocalCluster:
        """Start the nodes, create the cluster, wait until it is healthy."""
        if self.nodes:
            raise RuntimeError("this LocalCluster was started already")
        began = time.monotonic()
        deadline = began + timeout_s
        try:
            self._start_nodes()
            self._create(deadline)
            self.wait_healthy(
                timeout_s=max(1.0, deadline - time.monotonic()),
                masters=self.masters_count,
                replicas_each=self.replicas_count,
            )
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - began
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every live node, SIGKILL what is left after `timeout_s`. Idempotent."""
        for node in self.nodes:
            node.close_admin()
            if node.alive and node.process is not None:
                with contextlib.suppress(OSError):
                    node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.kill(node.process.pid, signal.SIGKILL)
                node.process.wait()
            node.role = "dead"

    def __enter__(self) -> LocalCluster:
        return self if self.nodes else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_nodes(self) -> None:
        taken: set[int] = set()
        for i in range(self.masters_count * (1 + self.replicas_count)):
            data_dir = self.base_dir / f"node-{i + 1}"
            for attempt in range(3):
                if data_dir.exists():
                    shutil.rmtree(data_dir)
                port = free_cluster_port(taken)
                node = ClusterNode(
                    data_dir=data_dir,
                    port=port,
                    appendfsync=self.appendfsync,
                    node_timeout_ms=self.node_timeout_ms,
                )
                try:
                    node.start()
                except ConfigError:  # most likely a port taken meanwhile: another port
                    node.kill()
                    if attempt == 2:
                        raise
                    continue
                taken.update((port, port + BUS_PORT_OFFSET))
                self.nodes.append(node)
                break

    def _create(self, deadline: float) -> None:
        cmd = [
            find_redis_cli(),
            "--cluster",
            "create",
            *(n.address for n in self.nodes),
            "--cluster-replicas",
            str(self.replicas_count),
            "--cluster-yes",
        ]
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        except subprocess.TimeoutExpired as e:
            raise ClusterError(
                f"redis-cli --cluster create did not finish: {_text(e.stdout or '')[-2000:]}"
                + self._log_tails()
            ) from None
        if done.returncode != 0:
            raise ClusterError(
                f"redis-cli --cluster create exited with {done.returncode}:\n"
                f"{(done.stdout + done.stderr)[-3000:]}" + self._log_tails()
            )

    # --- waiting for states --------------------------------------------------------

    def wait_healthy(
        self,
        timeout_s: float = 30.0,
        *,
        masters: int | None = None,
        replicas_each: int | None = None,
        also: Callable[[SlotMap], str | None] | None = None,
    ) -> None:
        """Wait until every live node says cluster_state:ok, they all answer CLUSTER SLOTS
        the same, none sees another live node as failing, and every live replica's link
        is up; optionally with that many masters (each with that many replicas), and
        `also(slot_map)` returning None (else the reason it is not there yet)."""

        def check() -> str | None:
            reason, slot_map = self._health()
            if reason is not None or slot_map is None:
                return reason
            if masters is not None and len(owners := {row[2] for row in slot_map}) != masters:
                return f"{len(owners)} masters own slots, not {masters}"
            if replicas_each is not None:
                for start, end, master, reps in slot_map:
                    if len(reps) != replicas_each:
                        return f"slots {start}-{end} ({master[:8]}) have replicas {reps}"
            return also(slot_map) if also is not None else None

        self._wait(check, timeout_s, "the cluster to become healthy")
        self._refresh()

    def _wait(self, check: Callable[[], str | None], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        reason: str | None = "not checked yet"
        while True:
            try:
                reason = check()
            except RedisError as e:
                reason = f"{type(e).__name__}: {e}"
            if reason is None:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        raise ClusterError(
            f"timed out after {timeout_s:.1f}s waiting for {what}; last: {reason}"
            + self._log_tails()
        )

    def _health(self) -> tuple[str | None, SlotMap | None]:
        live = [n for n in self.nodes if n.alive]
        if not live:
            return "no node is running", None
        own_ids: dict[int, str] = {}
        views: dict[int, list[NodeEntry]] = {}
        maps: dict[int, SlotMap] = {}
        for node in live:
            try:
                state = _cluster_info(node).get("cluster_state")
                if state != "ok":
                    return f"{node.address} says cluster_state:{state}", None
                views[node.port] = entries = _cluster_nodes(node)
                maps[node.port] = _cluster_slots(node)
                me = next(e for e in entries if "myself" in e.flags)
                own_ids[node.port] = me.node_id
                if "slave" in me.flags:
                    repl = node.admin.info("replication")
                    if repl.get("master_link_status") != "up":
                        return f"{node.address}: replica link is not up yet", None
                    if int(repl.get("master_sync_in_progress", 0)):
                        return f"{node.address}: replica sync in progress", None
            except (RedisError, StopIteration) as e:
                return f"{node.address}: {type(e).__name__}: {e}", None
        first = maps[live[0].port]
        for node in live[1:]:
            if maps[node.port] != first:
                return (
                    f"slot maps differ: {live[0].address} {first} vs "
                    f"{node.address} {maps[node.port]}",
                    None,
                )
        covered = sum(end - start + 1 for start, end, _, _ in first)
        if covered != SLOTS:
            return f"{covered} of {SLOTS} slots covered", None
        for port, entries in views.items():
            by_id = {e.node_id: e for e in entries}
            for node in live:
                entry = by_id.get(own_ids[node.port])
                if entry is None:
                    return f"127.0.0.1:{port} does not know {node.address} yet", None
                if entry.failing or not entry.connected:
                    return f"127.0.0.1:{port} sees {node.address} as {sorted(entry.flags)}", None
        return None, first

    # --- looking at the topology ---------------------------------------------------

    def _view(self) -> list[NodeEntry]:
        """CLUSTER NODES from the first live node that answers."""
        error: Exception | None = None
        for node in self.nodes:
            if not node.alive:
                continue
            try:
                return _cluster_nodes(node)
            except RedisError as e:
                error = e
        raise ClusterError(f"no live node answers CLUSTER NODES (last error: {error})")

    def _by_port(self, port: int) -> ClusterNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node of this cluster on port {port}")

    def _refresh(self, view: list[NodeEntry] | None = None) -> list[NodeEntry]:
        """Update each node's id and role from the cluster's view."""
        view = view if view is not None else self._view()
        by_port = {e.port: e for e in view}
        for node in self.nodes:
            entry = by_port.get(node.port)
            if entry is not None:
                node.node_id = entry.node_id
                node.master_id = entry.master_id
            if not node.alive:
                node.role = "dead"
            elif entry is not None:
                node.role = "master" if entry.is_master else "replica"
        return view

    def node_by_id(self, node_id: str) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id} in this cluster")

    @property
    def seed_url(self) -> str:
        """redis://127.0.0.1:PORT/0 of the first live master (db 0: clusters have no other)."""
        for node in self.nodes:
            if node.alive and node.role == "master":
                return node.url
        for node in self.nodes:
            if node.alive:
                return node.url
        raise ClusterError("no node of the cluster is running")

    @property
    def startup_urls(self) -> list[str]:
        return [n.url for n in self.nodes if n.alive]

    def masters(self) -> list[ClusterNode]:
        """The live masters that own slots, asked of the cluster, by their first slot."""
        view = self._refresh()
        owners = [e for e in view if e.is_master and e.slots and not e.failing]
        owners.sort(key=lambda e: e.slots[0])
        return [self._by_port(e.port) for e in owners]

    def replicas(self) -> list[ClusterNode]:
        view = self._refresh()
        return [self._by_port(e.port) for e in view if not e.is_master and not e.failing]

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        view = self._refresh()
        return [
            self._by_port(e.port)
            for e in view
            if e.master_id == master.node_id and not e.is_master and not e.failing
        ]

    def slots_of(self, node: ClusterNode) -> tuple[SlotRange, ...]:
        """The slot ranges the cluster says `node` owns."""
        for entry in self._refresh():
            if entry.port == node.port:
                return entry.slots
        return ()

    def master_for_slot(self, slot: int) -> ClusterNode:
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot {slot} is not in 0..{SLOTS - 1}")
        for entry in self._refresh():
            owns = any(start <= slot <= end for start, end in entry.slots)
            if owns and entry.is_master and not entry.failing:
                return self._by_port(entry.port)
        raise ClusterError(f"no live master owns slot {slot}")

    def master_for_key(self, key: str | bytes) -> ClusterNode:
        return self.master_for_slot(key_slot(key.encode() if isinstance(key, str) else key))

    # --- faults --------------------------------------------------------------------

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node (a crash: nothing flushed)."""
        with contextlib.suppress(ClusterError):
            self._slots_at_kill[node.port] = self.slots_of(node)
        node.close_admin()
        node.kill()
        node.role = "dead"

    def wait_for_failover(self, dead_node: ClusterNode, timeout_s: float = 30.0) -> ClusterNode:
        """Wait until a replica of the killed master `dead_node` serves all of its slots
        and the surviving nodes are healthy again; return that new master."""
        if dead_node.alive:
            raise ValueError(f"{dead_node} is running: kill() it first")
        slots = self._slots_at_kill.get(dead_node.port)
        if not slots:
            raise ValueError(f"{dead_node} owned no slots when it was killed")

        def promoted(slot_map: SlotMap) -> str | None:
            owners = {
                master
                for start, end, master, _ in slot_map
                for lo, hi in slots
                if start <= hi and lo <= end
            }
            if dead_node.node_id in owners:
                return f"{dead_node.address}'s slots are not taken over yet"
            if len(owners) != 1:
                return f"{dead_node.address}'s slots are split over {owners}"
            return None

        self.wait_healthy(timeout_s, also=promoted)
        return self.master_for_slot(slots[0][0])

    def restart(self, node: ClusterNode, timeout_s: float = 30.0) -> ClusterNode:
        """Start a killed (or stopped) node again on its port and data dir, and wait until
        the cluster is healthy with it (a master that was failed over comes back as a
        replica of its successor, its sync done)."""
        if node.alive:
            raise ValueError(f"{node} is running")
        node.close_admin()
        node.start()
        self.wait_healthy(timeout_s)
        self._slots_at_kill.pop(node.port, None)
        return node

    # --- resharding ----------------------------------------------------------------

    def slot_migration(self, slot: int, to_node: ClusterNode, *, batch: int = 100) -> SlotMigration:
        """A step-by-step move of one slot (begin / move_batch / finish), for tests that
        act between the steps; `migrate_slot` runs all of it."""
        source = self.master_for_slot(slot)
        target = next((m for m in self.masters() if m.port == to_node.port), None)
        if target is None:
            raise ValueError(f"{to_node} is not a live master of the cluster")
        return SlotMigration(self, slot, source, target, batch=batch)

    def migrate_slot(
        self,
        slot: int,
        to_node: ClusterNode,
        *,
        batch: int = 100,
        pause_s: float = 0.0,
        timeout_s: float = 30.0,
    ) -> int:
        """Move hash slot `slot`, keys and all, from its master to `to_node` (a master),
        as `redis-cli --cluster reshard` does; return how many keys moved. A no-op when
        `to_node` owns the slot already. Blocking: from an async test, run it with
        `anyio.to_thread.run_sync` to keep traffic going meanwhile (`pause_s` between
        batches of `batch` keys lets that traffic in)."""
        migration = self.slot_migration(slot, to_node, batch=batch)
        if migration.source.port == migration.target.port:
            return 0
        return migration.run(pause_s=pause_s, timeout_s=timeout_s)

    def _log_tails(self, lines: int = 15) -> str:
        parts = []
        for node in self.nodes:
            state = "running" if node.alive else "not running"
            parts.append(f"\n--- {node.address} {state}, {node.data_dir / 'redis.log'}:")
            parts.append(node.log_tail(lines))
        return "".join(parts)


@dataclass
class SlotMigration:
    """Moving one slot: `begin()` (IMPORTING on the target, MIGRATING on the source),
    `move_batch()` until it returns 0 (GETKEYSINSLOT + MIGRATE ... KEYS), `finish()`
    (SETSLOT NODE on the target, the source, then every other master; waits until all
    nodes agree). While it is between begin and finish, clients are sent ASK redirects
    for keys that have moved already."""

    cluster: LocalCluster
    slot: int
    source: ClusterNode
    target: ClusterNode
    batch: int = 100
    moved: int = 0

    def begin(self) -> None:
        self.target.admin.execute_command(
            "CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.source.node_id
        )
        self.source.admin.execute_command(
            "CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.target.node_id
        )

    def move_batch(self) -> int:
        """Move up to `batch` keys of the slot; how many were there to move."""
        keys = self.source.admin.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, self.batch)
        if not keys:
            return 0
        migrator = redis.Redis(
            host=HOST,
            port=self.source.port,
            socket_timeout=MIGRATE_TIMEOUT_MS / 1000 + 5,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            migrator.execute_command(
                "MIGRATE", HOST, self.target.port, "", 0, MIGRATE_TIMEOUT_MS, "KEYS", *keys
            )
        finally:
            migrator.close()
        self.moved += len(keys)
        return len(keys)

    def finish(self, timeout_s: float = 30.0) -> None:
        order = [self.target, self.source]
        order += [m for m in self.cluster.masters() if m.port not in {n.port for n in order}]
        for node in order:
            node.admin.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self.target.node_id)

        def moved(slot_map: SlotMap) -> str | None:
            for start, end, master, _ in slot_map:
                if start <= self.slot <= end:
                    if master == self.target.node_id:
                        return None
                    return f"slot {self.slot} still served by {master[:8]}"
            return f"slot {self.slot} not served"

        self.cluster.wait_healthy(timeout_s, also=moved)

    def run(self, pause_s: float = 0.0, timeout_s: float = 30.0) -> int:
        self.begin()
        while self.move_batch():
            if pause_s:
                time.sleep(pause_s)
        self.finish(timeout_s)
        return self.moved
