"""A listen address that cannot be used is a bad setting like any other: one line naming
the setting and the fix, exit 2, no traceback (``serve`` on BRIDGE_HOST/BRIDGE_PORT, the
worker's metrics listener on BRIDGE_HOST/--metrics-port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AMQP_URL
from tests.support.rabbit_node import free_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**base, "BRIDGE_AMQP_URL": AMQP_URL, "BRIDGE_SPOOL_PATH": "", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("host", ["256.1.1.1", "not-a-host"])
def test_serve_on_a_bad_host_names_bridge_host(host: str, tmp_path: Path) -> None:
    line = _one_line(
        _run(
            ["serve"],
            {"BRIDGE_API_KEYS": "k", "BRIDGE_HOST": host, "BRIDGE_PORT": str(free_port())},
            tmp_path,
        )
    )
    assert f"BRIDGE_HOST={host!r} is not an address of this machine" in line
    assert "0.0.0.0" in line


def test_serve_on_a_port_in_use_names_bridge_port(taken_port: int, tmp_path: Path) -> None:
    env = {"BRIDGE_API_KEYS": "k", "BRIDGE_PORT": str(taken_port)}
    line = _one_line(_run(["serve"], env, tmp_path))
    assert f"BRIDGE_PORT={taken_port}: the port is already in use" in line
    assert "free port" in line


def test_worker_metrics_on_a_port_in_use_names_the_flag(taken_port: int, tmp_path: Path) -> None:
    config = tmp_path / "subs.toml"
    config.write_text(
        f'[[subscriber]]\nname = "test-listen-{free_port()}"\nevents = ["*"]\n'
        'handler = "bridge.examples.log_events:log_event"\n'
    )
    args = ["worker", "--config", str(config), "--metrics-port", str(taken_port)]
    line = _one_line(_run(args, {}, tmp_path))
    assert str(taken_port) in line
    # The flag, or the BRIDGE_METRICS_PORT setting it stands for once that exists.
    assert "--metrics-port" in line or "BRIDGE_METRICS_PORT" in line
