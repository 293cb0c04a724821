"""How many Redis connections one process holds: its sockets' local ports (from /proc)
matched against the `addr` of each client in Redis's CLIENT LIST."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (its fds matched to /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def redis_connections_of(redis: Any, pid: int) -> int:
    """Connections the Redis server has from process `pid` (CLIENT LIST by address)."""
    ports = local_ports(pid)
    clients = await redis.client_list()
    return sum(1 for c in clients if int(str(c["addr"]).rsplit(":", 1)[1]) in ports)
