"""Output piped into a reader that stops early (``archive find ... | head``, ``doctor | head
-3``) ends the command quietly, for every command: exit 141 as for SIGPIPE, no
BrokenPipeError traceback, no "Exception ignored" at exit. The reader here is gone before the
command writes its first byte, the deterministic form of ``| head`` finishing first."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from bridge.amqp.topology import archive_name
from bridge.core.contract import EVENTS
from tests.conftest import AMQP_URL, API_KEY, BridgeFactory, BrokerProbe, fixture_body


def _into_a_closed_pipe(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    read, write = os.pipe()
    os.close(read)  # the reader has gone: every write fails with EPIPE
    try:
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}, **env},
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)


def _assert_quiet(done: subprocess.CompletedProcess[str], code: int = 141) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    "args,code",
    [
        (["doctor"], 141),
        (["connect-actions", "20285", "--dry-run"], 141),
        (["topology", "--definitions", "--config", "deploy/subscribers.example.toml"], 141),
        (["--help"], 0),  # argparse itself ignores a failed write of its help
        (["sandbox", "--help"], 0),
    ],
    ids=lambda value: " ".join(value[:2]) if isinstance(value, list) else str(value),
)
def test_a_command_into_a_closed_pipe_ends_quietly(args: list[str], code: int) -> None:
    env = {
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_PUBLIC_URL": "https://bridge.example.com",
    }
    _assert_quiet(_into_a_closed_pipe(args, env), code)


async def test_archive_find_into_a_closed_pipe_ends_quietly(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    probe.track(queues=(archive_name(exchange),))
    bridge = await make_bridge(archive=True)
    for event in EVENTS:
        response = await bridge.client.post(
            f"/webhooks/{event}", params={"APIKEY": API_KEY}, data=fixture_body(event)
        )
        assert response.status == 200
    env = {"BRIDGE_AMQP_URL": AMQP_URL, "BRIDGE_EXCHANGE": exchange}
    done = await asyncio.to_thread(_into_a_closed_pipe, ["archive", "find", "--since", "1h"], env)
    _assert_quiet(done)
