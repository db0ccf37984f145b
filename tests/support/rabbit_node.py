"""A private RabbitMQ node for fault tests: its own name, ports and data directory, started
from the installed rabbitmq-server, so stopping or killing it never disturbs the shared
broker on 5672 (or another test run using it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def installed() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists() or shutil.which("rabbitmq-server") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RabbitNode:
    """One node: ``start()``, ``stop_app()``, ``start_app()``, ``kill()``, ``destroy()``."""

    def __init__(
        self,
        name: str | None = None,
        port: int | None = None,
        base: Path | None = None,
        cookie: str = "MINTSOFTBRIDGETESTCOOKIE",
    ) -> None:
        self.port = port or free_port()
        self.dist_port = free_port()
        self.name = name or f"bridgetest{self.port}@localhost"
        self.base = base or Path(tempfile.mkdtemp(prefix="bridge-rabbit-"))
        self.cookie = cookie
        self.watermark_changed = False
        """A test set a memory watermark: the node is to be given its own back."""
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            "vm_memory_high_watermark.relative = 0.4\n"
        )
        cookie_file = self.base / ".erlang.cookie"
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "HOME": str(self.base),
                "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.base / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
                "RABBITMQ_PID_FILE": str(self.base / "pid"),
            }
        )
        return env

    def _bin(self, name: str) -> str:
        path = RABBIT_BIN / name
        return str(path) if path.exists() else name

    def ctl(
        self, *args: str, check: bool = True, timeout: float = 60, tool: str = "rabbitmqctl"
    ) -> str:
        """Run ``rabbitmqctl`` (or ``tool``, e.g. ``rabbitmq-queues``) against this node."""
        if args and args[0] == "set_vm_memory_high_watermark":
            self.watermark_changed = True
        result = subprocess.run(
            [self._bin(tool), "-n", self.name, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def start(self, timeout: float = 90) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the VM in the background without waiting for it (see :meth:`wait_ready`),
        so several nodes can boot side by side."""
        subprocess.run(
            [self._bin("rabbitmq-server"), "-detached"],
            env=self.env(),
            cwd=self.base,
            check=True,
            capture_output=True,
            timeout=30,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = subprocess.run(
                [self._bin("rabbitmqctl"), "-n", self.name, "await_startup", "--timeout", "10"],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if result.returncode == 0 and self._port_open():
                return
            time.sleep(0.5)
        raise RuntimeError(f"RabbitMQ node {self.name} did not start in {timeout}s")

    def listening(self) -> bool:
        """Whether the node's AMQP port accepts connections."""
        return self._port_open()

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.wait_ready()

    def pid(self) -> int | None:
        try:
            return int((self.base / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """Kill the Erlang VM hard (SIGKILL), as a crash or an OOM kill would."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self._port_open() and time.monotonic() < deadline:
            time.sleep(0.1)

    def join_cluster(self, seed: RabbitNode) -> None:
        """Make this (running, empty) node a member of ``seed``'s cluster."""
        self.ctl("stop_app")
        self.ctl("reset")
        self.ctl("join_cluster", seed.name)
        self.start_app()

    def stop(self) -> None:
        self.ctl("stop", check=False)

    def destroy(self) -> None:
        self.stop()
        if self._port_open():
            self.kill()
        shutil.rmtree(self.base, ignore_errors=True)
