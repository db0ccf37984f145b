"""What a single active consumer costs a rate-limited subscriber: the forward rate of a
subscriber whose queue has one (``rate_limit`` set, so high it never waits), against the
same subscriber without one, with one and with two worker processes.

``python -m bench.single_active [--messages N] [--url AMQP_URL]``

Each scenario fills a fresh subscriber's queue with N webhooks, starts its worker processes
(the real ``mintsoft-bridge worker``, forwarding to a local target), and takes the rate
between the target's first and last request. It prints one line per scenario and its ratio
to one worker without a single active consumer (the baseline, run in the same process tree).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiormq
from aiohttp import web

from bridge.amqp.topology import declare, delete, receiver_topology
from bridge.core.contract import webhook_envelope
from bridge.worker.subscribers import load_subscribers

BODY = (
    Path(__file__).resolve().parent.parent / "bridge/fixtures/order-despatched.json"
).read_bytes()
SCENARIOS = (
    ("1 worker", 1, False),
    ("2 workers", 2, False),
    ("1 worker, single active", 1, True),
    ("2 workers, single active", 2, True),
)


class Target:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.expected = 0
        self.done = asyncio.Event()

    def expect(self, count: int) -> None:
        self.times.clear()
        self.expected = count
        self.done.clear()

    async def post(self, request: web.Request) -> web.Response:
        await request.read()
        self.times.append(time.perf_counter())
        if len(self.times) >= self.expected:
            self.done.set()
        return web.Response(text="{}", content_type="application/json")


async def scenario(
    url: str, target_url: str, target: Target, workers: int, single: bool, n: int
) -> float:
    name = f"bench-sac-{uuid.uuid4().hex[:8]}"
    exchange = f"bench.{name}"
    folder = Path(tempfile.mkdtemp())
    config = folder / "subscribers.toml"
    limit = 'rate_limit = "100000/s"\n' if single else ""
    config.write_text(
        f'[[subscriber]]\nname = "{name}"\nevents = ["*"]\nforward_url = "{target_url}"\n'
        f"prefetch = 32\n{limit}"
    )
    [sub] = load_subscribers(str(config))
    topology = receiver_topology(exchange) + sub.topology(exchange)
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    await declare(channel, topology)
    envelope = webhook_envelope("despatched", BODY, None, "bench", time.time())
    for _ in range(n):
        await channel.basic_publish(
            envelope.body,
            exchange=exchange,
            routing_key=envelope.routing_key,
            properties=envelope.properties(),
        )
    target.expect(n)
    env = dict(os.environ, BRIDGE_AMQP_URL=url, BRIDGE_EXCHANGE=exchange, BRIDGE_ARCHIVE="false")
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "worker",
            "--config",
            str(config),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(target.done.wait(), 120)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            await asyncio.wait_for(process.wait(), 20)
        await delete(channel, topology)
        await connection.close()
    if len(target.times) < n:
        raise SystemExit(f"only {len(target.times)} of {n} arrived")
    return (n - 1) / (target.times[n - 1] - target.times[0])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    target = Target()
    app = web.Application()
    app.router.add_post("/erp", target.post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    target_url = f"http://127.0.0.1:{port}/erp"
    baseline = None
    try:
        for label, workers, single in SCENARIOS:
            rate = await scenario(args.url, target_url, target, workers, single, args.messages)
            baseline = baseline or rate
            print(f"{label:28} {rate:8.0f} forwards/s  x{rate / baseline:.2f}", flush=True)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
