"""``python -m bench.large_body [SOURCE_DIR ...]``: latency of a realistic 2 MB order through
a real ``serve`` (HTTP, parse, publish with confirm), against the shared broker.

Each SOURCE_DIR is a checkout of the project whose ``bridge`` package ``serve`` runs from
(e.g. an older commit unpacked with ``git archive``); without one, this checkout. Each
``serve`` gets the same bodies, sequentially and then 4 at a time, in alternating rounds so
that load on the machine falls on both alike. Loopback only; its exchange is deleted after.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from bench.body_parse import realistic_order
from tests.conftest import AMQP_URL, delete_declared, receiver_names
from tests.support.processes import bridge_process
from tests.support.rabbit_node import free_port

KEY = "bench-large-body"
ROUNDS = 3
SEQUENTIAL = 40
CONCURRENT = 80


async def _round(base: str, body: bytes) -> tuple[list[float], float]:
    url = f"{base}/webhooks/despatched?APIKEY={KEY}"
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def post() -> None:
            started = time.perf_counter()
            async with session.post(url, data=body) as answer:
                await answer.read()
                assert answer.status == 200, answer.status
            latencies.append(time.perf_counter() - started)

        for _ in range(SEQUENTIAL):
            await post()
        started = time.perf_counter()
        gate = asyncio.Semaphore(4)

        async def gated() -> None:
            async with gate:
                await post()

        await asyncio.gather(*(gated() for _ in range(CONCURRENT)))
        rate = CONCURRENT / (time.perf_counter() - started)
    return latencies[:SEQUENTIAL], rate


def main() -> None:
    sources = [Path(p).resolve() for p in sys.argv[1:]] or [Path(__file__).resolve().parent.parent]
    body = realistic_order()
    results: dict[Path, tuple[list[float], list[float]]] = {s: ([], []) for s in sources}
    for _ in range(ROUNDS):
        for source in sources:
            port = free_port()
            exchange = f"bench.large.{uuid.uuid4().hex[:8]}"
            env = {
                "PYTHONPATH": str(source) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "BRIDGE_AMQP_URL": AMQP_URL,
                "BRIDGE_PORT": str(port),
                "BRIDGE_API_KEYS": KEY,
                "BRIDGE_EXCHANGE": exchange,
                "BRIDGE_SPOOL_PATH": "",
                "BRIDGE_LOG_LEVEL": "WARNING",
            }
            base = f"http://127.0.0.1:{port}"
            os.chdir(source)  # ``python -m bridge`` looks in its working directory first
            try:
                with bridge_process(["serve"], env, base + "/healthz", Path(os.devnull)):
                    latencies, rate = asyncio.run(_round(base, body))
            finally:
                delete_declared(AMQP_URL, *receiver_names(exchange))
            results[source][0].extend(latencies)
            results[source][1].append(rate)
    print(
        f"{len(body) / 1e6:.1f} MB order, {ROUNDS} rounds of {SEQUENTIAL} sequential"
        f" + {CONCURRENT} at 4 in flight"
    )
    for source, (latencies, rates) in results.items():
        print(
            f"{source}: sequential p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"4 in flight {statistics.median(rates):.0f} req/s (median of {ROUNDS})"
        )


if __name__ == "__main__":
    main()
