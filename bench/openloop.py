"""An open-loop HTTP load generator (wrk2-like): requests are sent on a fixed schedule,
whatever the server's latency, so a slow server cannot slow the load down.

``python -m bench.openloop URL BODY RATE SECONDS`` prints one JSON line: p50/p99/max latency
in ms, the rate achieved, and errors; ``--trace FILE`` also writes every request's start
(``time.perf_counter``, the machine's monotonic clock) and latency, for bench.tail. A
request that has to wait for a free connection is timed from when it was due (no
coordinated omission); one sent on time from when it was sent. Each body gets a different
order ``ID``, like real traffic. Raw asyncio protocol on uvloop, keep-alive connections:
~15 us of CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop

CONNECTIONS = 64
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class Load:
    """Shared state: the schedule, the queue of due requests and the measurements."""

    def __init__(self, head: bytes, prefix: bytes, suffix: bytes, seed: int) -> None:
        self.head = head
        self.prefix = prefix
        self.suffix = suffix
        self.seed = seed
        self.sent = 0
        self.idle: list[Client] = []
        self.waiting: collections.deque[float] = collections.deque()
        self.latencies: list[float] = []
        self.starts: list[float] = []
        self.errors = 0
        self.finished = asyncio.get_running_loop().create_future()
        self.expected = 0

    def request(self) -> bytes:
        self.sent += 1
        body = b"%s%d%s" % (self.prefix, self.seed + self.sent, self.suffix)
        return self.head % len(body) + body

    def due(self, started: float) -> None:
        if self.idle:
            self.idle.pop().send(self.request(), time.perf_counter())
        else:
            self.waiting.append(started)

    def done(self, client: Client, latency: float, ok: bool) -> None:
        self.latencies.append(latency)
        self.starts.append(client.started)
        if not ok:
            self.errors += 1
        if self.waiting:
            client.send(self.request(), self.waiting.popleft())
        else:
            self.idle.append(client)
        if len(self.latencies) >= self.expected and not self.finished.done():
            self.finished.set_result(None)


class Client(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.load.idle.append(self)

    def send(self, request: bytes, started: float) -> None:
        self.started = started
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        match = _LENGTH.search(self.buffer, 0, end + 2)
        length = int(match.group(1)) if match else 0
        if len(self.buffer) < end + 4 + length:
            return
        ok = self.buffer[9:10] == b"2"
        self.buffer = self.buffer[end + 4 + length :]
        self.load.done(self, time.perf_counter() - self.started, ok)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.load.finished.done():
            self.load.finished.set_exception(ConnectionError(f"server closed: {exc}"))


async def run(
    url: str, body: bytes, rate: float, seconds: float, trace: str = ""
) -> dict[str, Any]:
    """Offer ``rate`` requests/s for ``seconds``; a rate of 0 sends ``seconds`` requests
    back to back instead (closed loop, every connection busy: for the leak check)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    match = re.match(rb'^\{"ID":\d+(.*)$', body, re.DOTALL)
    if match is None:
        raise SystemExit('openloop: the body must start with {"ID":<n>')
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    ).encode()
    load = Load(head, b'{"ID":', match.group(1), int(time.time()) % 100_000 * 100_000)
    load.expected = count = int(rate * seconds) if rate > 0 else int(seconds)
    loop = asyncio.get_running_loop()
    connections = [
        await loop.create_connection(lambda: Client(load), host, port) for _ in range(CONNECTIONS)
    ]
    start = time.perf_counter()
    scheduled = 0
    if rate <= 0:
        load.waiting.extend([start] * count)
        for client in load.idle[:]:
            load.idle.remove(client)
            client.send(load.request(), load.waiting.popleft())
        scheduled = count
    while scheduled < count:
        now = time.perf_counter()
        due = min(count, int((now - start) * rate) + 1)
        while scheduled < due:
            load.due(start + scheduled / rate)
            scheduled += 1
        await asyncio.sleep(0.0005)
    await asyncio.wait_for(load.finished, 60 if rate > 0 else 600)
    for transport, _ in connections:
        transport.close()
    if trace:
        # After the run: nothing is timed any more.
        pairs = list(zip(load.starts, load.latencies, strict=True))
        Path(trace).write_bytes(orjson.dumps(pairs))  # noqa: ASYNC240
    latencies = sorted(load.latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, max(0, round(p / 100 * len(latencies)) - 1))]

    return {
        "offered_rps": rate,
        "achieved_rps": count / (time.perf_counter() - start),
        "requests": count,
        "p50_ms": pct(50) * 1000,
        "p99_ms": pct(99) * 1000,
        "max_ms": latencies[-1] * 1000,
        "errors": load.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("body")
    parser.add_argument("rate", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--trace", default="", help="write [start, latency] of every request")
    args = parser.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    result = uvloop.run(run(args.url, body, args.rate, args.seconds, args.trace))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
