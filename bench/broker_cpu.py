"""The CPU time of the RabbitMQ node the benchmark publishes to, from ``/proc``.

The node is the ``beam.smp`` process holding the listening socket of the AMQP port (found
once, through ``/proc/net/tcp*`` and the processes' file descriptors). Its CPU over a
measurement, divided by the requests answered, shows what a server's routing costs the
broker (the archive's second copy lands there, not in the receiver). On a shared broker
other clients' work is counted too: read it beside the load average. ``None`` when the
node is not a local process this user can see (a container, another host, no ``/proc``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.procstat import proc_status


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(inode)
    return inodes


@functools.cache
def broker_pid(port: int = 5672) -> int | None:
    """The pid of the local ``beam.smp`` listening on ``port``, or ``None``."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "beam.smp":
                continue
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def amqp_port() -> int:
    """The port of ``BRIDGE_AMQP_URL`` (the benchmark's broker), 5672 by default."""
    url = os.environ.get("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    return urlsplit(url).port or 5672


def broker_cpu() -> float | None:
    """CPU seconds the benchmark's broker has used so far, or ``None``."""
    pid = broker_pid(amqp_port())
    if pid is None:
        return None
    try:
        return proc_status(pid)["cpu_s"]
    except OSError:
        return None
