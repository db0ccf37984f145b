"""``mintsoft-bridge serve`` as a real subprocess on a free port, for tests that run
several receivers side by side."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.rabbit_node import free_port


class ServeProcess:
    """One receiver process; its output goes to ``log_path``."""

    def __init__(
        self,
        urls: tuple[str, ...],
        exchange: str,
        api_key: str,
        log_path: Path,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "BRIDGE_AMQP_URL": ",".join(urls),
            "BRIDGE_HOST": "127.0.0.1",
            "BRIDGE_PORT": str(self.port),
            "BRIDGE_API_KEYS": api_key,
            "BRIDGE_EXCHANGE": exchange,
            "BRIDGE_SPOOL_PATH": "",
            **settings,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready(timeout)

    def get(self, path: str) -> int:
        """The status of ``GET path``; 0 when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until ``/readyz`` is 200 (the broker link is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"serve exited early; see {self.log_path}")
            if self.get("/readyz") == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"serve was not ready within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(5)
