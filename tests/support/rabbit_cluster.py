"""A private three-node RabbitMQ cluster for scale-out tests, built from :class:`RabbitNode`:
its own node names, AMQP and distribution ports, data directories under one temporary
folder and its own Erlang cookie, so it never meets the shared broker on 5672 or another
test run's cluster (epmd is shared, which is harmless)."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support.rabbit_node import RabbitNode


class RabbitCluster:
    """``start()`` boots the nodes side by side and joins them to the first one;
    ``destroy()`` stops them and removes every file."""

    def __init__(self, size: int = 3, base: Path | None = None) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="bridge-cluster-"))
        # A cookie of its own: nodes of another run's cluster can never join this one.
        cookie = "BRIDGECLUSTER" + secrets.token_hex(10).upper()
        self.nodes = [RabbitNode(base=self.base / f"node{i}", cookie=cookie) for i in range(size)]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(node.url for node in self.nodes)

    @property
    def names(self) -> set[str]:
        return {node.name for node in self.nodes}

    def start(self, timeout: float = 120) -> None:
        for node in self.nodes:
            node.launch()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.wait_ready(timeout), self.nodes))
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.join_cluster(seed)
        self.wait_running(len(self.nodes), timeout=60)

    def any_running(self) -> RabbitNode:
        """A node that answers ``rabbitmqctl``, for cluster-wide queries."""
        for node in self.nodes:
            if node.listening():
                return node
        raise RuntimeError("no node of the cluster is running")

    def running_nodes(self) -> set[str]:
        status = self._ctl_json("cluster_status")
        return set(status.get("running_nodes", []))

    def wait_running(self, count: int, timeout: float = 60) -> None:
        """Wait until ``count`` nodes are running in the cluster."""
        deadline = time.monotonic() + timeout
        running: set[str] = set()
        while time.monotonic() < deadline:
            try:
                running = self.running_nodes()
            except RuntimeError:
                running = set()
            if len(running) >= count:
                return
            time.sleep(0.5)
        raise RuntimeError(f"only {sorted(running)} of the cluster are running after {timeout}s")

    def queues(self) -> dict[str, dict[str, Any]]:
        """Every queue of the default vhost: name -> ``{"type", "members", "leader"}``."""
        rows = self._ctl_json("list_queues", "name", "type", "members", "leader")
        return {row["name"]: row for row in rows}

    def quorum_status(self, queue: str) -> list[dict[str, Any]]:
        """``rabbitmq-queues quorum_status``: one row per member with its Raft state."""
        rows: list[dict[str, Any]] = self._ctl_json("quorum_status", queue, tool="rabbitmq-queues")
        return rows

    def _ctl_json(self, *args: str, tool: str = "rabbitmqctl") -> Any:
        node = self.any_running()
        return json.loads(node.ctl(*args, "--formatter", "json", timeout=30, tool=tool))

    def destroy(self) -> None:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.destroy(), self.nodes))
        shutil.rmtree(self.base, ignore_errors=True)
