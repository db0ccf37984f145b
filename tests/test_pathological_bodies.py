"""Bodies built to exhaust memory or stall the event loop, against a real ``serve``: eight
(and 24) 10 MiB bodies at once, with a valid key, of 3.5 million empty objects (``[{},{},…]``) and
of nesting 200,000 and 5 million deep (``[[[…]]]``). Peak RSS of ``serve`` stays under 256 MiB,
``/healthz`` keeps answering meanwhile, and every answer is one of the contract's."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import statistics
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.support.serve_process import one_receiver

KEY = "pathological-key-2c41"
MAX_BODY = 10 * 1024 * 1024
CONTRACT_CODES = {200, 400, 413, 503}
RSS_LIMIT_KB = 256 * 1024


def empty_objects(size: int = MAX_BODY) -> bytes:
    """``[{},{},…,{}]`` of at most ``size`` bytes: valid JSON, 3.5 M objects at 10 MiB."""
    count = (size - 3) // 3
    return b"[" + b"{}," * count + b"{}]"


def deep_nesting(depth: int = MAX_BODY // 2, size: int = MAX_BODY) -> bytes:
    """``[[[…]]]`` ``depth`` levels deep, padded with spaces to ``size`` bytes: valid JSON
    grammar."""
    nested = b"[" * depth + b"]" * depth
    return nested + b" " * (size - len(nested))


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        await r.read()
        return r.status


def _health_latencies(base: str, stop: threading.Event) -> list[float]:
    """Latencies of ``GET /healthz`` every 20 ms until ``stop``, from a thread of its own
    (the test's event loop is busy sending the bodies), on one kept-alive connection."""
    latencies: list[float] = []
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        while not stop.is_set():
            started = time.perf_counter()
            connection.request("GET", "/healthz")
            answer = connection.getresponse()
            answer.read()
            latencies.append(time.perf_counter() - started)
            assert answer.status == 200
            stop.wait(0.02)
    finally:
        connection.close()
    return latencies


async def _post_all(base: str, bodies: list[bytes]) -> list[int]:
    url = f"{base}/webhooks/despatched?APIKEY={KEY}"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(_post(session, url, b) for b in bodies)))


def _load(base: str, bodies: list[bytes]) -> tuple[list[int], list[float]]:
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        health = pool.submit(_health_latencies, base, stop)
        try:
            statuses = asyncio.run(_post_all(base, bodies))
        finally:
            stop.set()
        return statuses, health.result()


@pytest.mark.slow  # /healthz latency is measured: run alone, not beside other tests
@pytest.mark.parametrize("rounds", [2, 6], ids=["8-bodies", "24-bodies"])
def test_concurrent_10_mib_pathological_bodies_keep_rss_bounded_and_healthz_answering(
    tmp_path: Path, rounds: int
) -> None:
    """8 as the issue asks; 24 shows the bound does not grow with the number of senders
    (each idle keep-alive connection used to keep its last body)."""
    kinds = [empty_objects(), deep_nesting(200_000), empty_objects(), deep_nesting()]
    bodies = kinds * rounds
    assert all(len(b) <= MAX_BODY for b in bodies)
    exchange = f"test.patho.{uuid.uuid4().hex[:10]}"
    with one_receiver(exchange, KEY, tmp_path) as (base, running):
        pid = running.process.pid
        baseline_kb = peak_rss_kb(pid)
        statuses, latencies = _load(base, bodies)
        peak_kb = peak_rss_kb(pid)
    log = (tmp_path / "serve.log").read_text()
    print(
        f"serve VmHWM before {baseline_kb // 1024} MiB, after {peak_kb // 1024} MiB; "
        f"/healthz {len(latencies)} answers, median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms; statuses {statuses}"
    )
    assert set(statuses) <= CONTRACT_CODES, statuses
    # The empty objects are JSON (200); the deep nesting is past the parser's depth limit
    # and so "not JSON" (400, quarantined): see docs/security.md, "Receiver hardening".
    assert statuses == [200, 400] * 2 * rounds, statuses
    assert peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb // 1024} MiB"
    assert latencies, "/healthz was never asked"
    # The bound is 100 ms; the median is held to it, the maximum only loosely (a
    # shared two-core machine may deschedule the process at any moment).
    assert statistics.median(latencies) < 0.1, latencies
    assert max(latencies) < 1.0, latencies
    assert "Traceback" not in log, log[-2000:]
