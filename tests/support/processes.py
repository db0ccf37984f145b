"""Real ``mintsoft-bridge`` processes for tests that need the whole program (its logging,
its metrics endpoint, its signal handling), started and stopped in bounded time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def http(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """Status and body of a GET (or a POST when ``body`` is given); errors are answers too."""
    request = urllib.request.Request(
        url, data=body, headers=headers or {}, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def wait_until_answering(url: str, process: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the process exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@dataclass
class Running:
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def stop(self) -> str:
        """SIGTERM, wait, and return everything it printed (again on a second call)."""
        if self.output:
            return self.output[0]
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.output.append(out or "")
        return "".join(self.output)


@contextlib.contextmanager
def bridge_process(
    args: list[str], env: dict[str, str], ready_url: str, output: Path | None = None
) -> Iterator[Running]:
    """``python -m bridge ARGS`` with ``env`` added, once ``ready_url`` answers (with a 2xx:
    an error status counts as not yet). Its output is kept for :meth:`Running.stop`, or
    written to ``output`` when given (a process under load would fill a pipe and block)."""
    with contextlib.ExitStack() as files:
        sink = files.enter_context(output.open("w")) if output is not None else subprocess.PIPE
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            env={**os.environ, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    running = Running(process)
    try:
        wait_until_answering(ready_url, process)
        yield running
    finally:
        running.stop()
