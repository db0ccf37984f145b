"""``python -m bench.spool_bench``: the spool path, measured against a private RabbitMQ node.

1. HTTP, broker up: ``serve`` answers ``accepted`` (confirmed publish) - wrk saturation.
2. HTTP, broker unreachable: ``serve`` answers ``spooled`` (fsynced) - wrk saturation.
3. The spool alone: concurrent appends, and how many share one commit (one fsync).
4. Confirmed publish with the drain's window, no spool (the ceiling for the drain).
5. The drain of a backlog (100,000 by default) once the broker is back, in the same process
   as 4, so the two rates compare like for like.

Loopback only; the private node (its own ports and data directory) is destroyed at the end,
so the shared broker on 5672 is never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from bench import load
from bench.run import bridge_command, bridge_env, compact_body, free_port, running
from bridge.amqp.connection import BrokerLink
from bridge.amqp.publisher import Publisher
from bridge.amqp.topology import declare, receiver_topology, unrouted_name
from bridge.core.contract import Envelope, webhook_envelope
from bridge.receiving.delivery import Delivery
from bridge.receiving.drain import WINDOW
from bridge.receiving.spool import Spool, read_status
from tests.support.rabbit_node import RabbitNode, installed

Result = dict[str, Any]


def envelopes(body: bytes, count: int, start: int = 0) -> list[Envelope]:
    """``count`` distinct despatched envelopes built as the receiver builds them."""
    document = orjson.loads(body)
    out = []
    for n in range(start, start + count):
        document["ID"] = n
        unique = orjson.dumps(document)
        out.append(webhook_envelope("despatched", unique, document, f"bench-{n}", time.time()))
    return out


async def http_case(
    name: str, amqp_url: str, exchange: str, body: Path, seconds: float, work: Path
) -> Result:
    """wrk against a ``serve`` process whose broker is ``amqp_url``."""
    port = free_port()
    case_dir = work / name
    case_dir.mkdir()
    env = {**bridge_env(amqp_url, exchange, port, case_dir), "BRIDGE_PUBLISH_TIMEOUT": "5"}
    url = f"http://127.0.0.1:{port}/webhooks/despatched?APIKEY={env['BRIDGE_API_KEYS']}"
    async with running(name, bridge_command(), env, f"http://127.0.0.1:{port}/healthz", work):
        await load.saturate(url, body, 1.0)  # warm-up
        result = await load.saturate(url, body, seconds)
    result["spool_depth_after"] = read_status(env["BRIDGE_SPOOL_PATH"]).depth
    return result


async def timed_window(
    action: Callable[[Envelope], Awaitable[None]], batch: list[Envelope], window: int
) -> float:
    """Seconds to run ``action`` on every envelope, ``window`` at a time."""
    gate = asyncio.Semaphore(window)

    async def one(envelope: Envelope) -> None:
        async with gate:
            await action(envelope)

    started = time.perf_counter()
    await asyncio.gather(*(one(e) for e in batch))
    return time.perf_counter() - started


async def spool_appends(path: Path, batch: list[Envelope], concurrency: int) -> Result:
    """Append ``batch`` with ``concurrency`` appends waiting at any time."""
    spool = Spool(str(path), 1 << 40)
    await spool.open()
    seconds = await timed_window(spool.append, batch, concurrency)
    commits = spool.commits
    await spool.close()
    return {
        "messages": len(batch),
        "rate": len(batch) / seconds,
        "commits": commits,
        "per_commit": len(batch) / max(commits, 1),
    }


async def confirmed_publish(publisher: Publisher, batch: list[Envelope]) -> Result:
    """Publish ``batch`` with confirms, ``WINDOW`` in flight, as the drain does."""
    seconds = await timed_window(publisher.publish, batch, WINDOW)
    return {"messages": len(batch), "rate": len(batch) / seconds}


async def drain(
    node: RabbitNode, exchange: str, spool_path: Path, publish_count: int, body: bytes
) -> tuple[Result, Result]:
    """Confirmed-publish rate, then the drain of the spool at ``spool_path``: one process."""
    topology = receiver_topology(exchange)

    async def on_channel(channel: Any) -> None:
        await declare(channel, topology)

    link = BrokerLink((node.url,), on_channel, name="spool-bench")
    publisher = Publisher(link, exchange, 30.0)
    await link.start(wait=15)
    baseline = await confirmed_publish(publisher, envelopes(body, publish_count, start=10**9))
    assert link.channel is not None
    await link.channel.queue_purge(unrouted_name(exchange))

    spool = Spool(str(spool_path), 1 << 40)
    delivery = Delivery(publisher, spool)
    backlog = read_status(str(spool_path)).depth
    started = time.perf_counter()
    await delivery.open()
    while spool.depth:  # noqa: ASYNC110 - polling a plain counter
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    await delivery.close()
    queued = await link.channel.queue_declare(unrouted_name(exchange), passive=True)
    await link.close()
    drained = {
        "messages": backlog,
        "seconds": seconds,
        "rate": backlog / seconds,
        "in_queue": queued.message_count,
    }
    return baseline, drained


async def cleanup(node: RabbitNode, exchange: str) -> None:
    link = BrokerLink((node.url,), name="spool-bench-cleanup")
    if await link.start(wait=10) and link.channel is not None:
        for queue in (unrouted_name(exchange), exchange + ".invalid"):
            await link.channel.queue_delete(queue)
        for name in (exchange, unrouted_name(exchange)):
            await link.channel.exchange_delete(name)
    await link.close()


async def bench(args: argparse.Namespace) -> None:
    node = RabbitNode()
    print(f"starting a private RabbitMQ node on 127.0.0.1:{node.port} ...", flush=True)
    await asyncio.to_thread(node.start)
    exchange = f"bench.spool.{uuid.uuid4().hex[:8]}"
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    try:
        with tempfile.TemporaryDirectory(prefix="spool-bench-") as tmp:
            work = Path(tmp)
            body_path = compact_body(work)
            body = body_path.read_bytes()
            print("HTTP, broker up (accepted) ...", flush=True)
            up = await http_case("http-up", node.url, exchange, body_path, args.seconds, work)
            print("HTTP, broker unreachable (spooled) ...", flush=True)
            down = await http_case("http-down", closed, exchange, body_path, args.seconds, work)
            print(f"spool appends, building a backlog of {args.backlog} ...", flush=True)
            backlog = work / "backlog.sqlite3"
            appends = await spool_appends(backlog, envelopes(body, args.backlog), 256)
            print("confirmed publish, then the drain ...", flush=True)
            baseline, drained = await drain(node, exchange, backlog, args.publish, body)
    finally:
        await cleanup(node, exchange)
        await asyncio.to_thread(node.destroy)
    report(up, down, appends, baseline, drained)


def report(up: Result, down: Result, appends: Result, baseline: Result, drained: Result) -> None:
    def http(result: Result) -> str:
        return (
            f"{result['rps']:8.0f} req/s   p50 {result['p50_ms']:6.2f} ms   "
            f"p99 {result['p99_ms']:6.2f} ms   errors {result['errors']}"
        )

    rows = [
        ("HTTP, broker up: accepted (confirmed)", http(up)),
        (
            "HTTP, broker unreachable: spooled (fsync)",
            f"{http(down)}   ({down['spool_depth_after']} spooled)",
        ),
        (
            "spool appends in process, 256 waiting",
            f"{appends['rate']:8.0f} msg/s   "
            f"{appends['per_commit']:.0f} messages per commit (one fsync)",
        ),
        (
            f"confirmed publish, {WINDOW} in flight",
            f"{baseline['rate']:8.0f} msg/s   ({baseline['messages']} messages)",
        ),
        (
            f"drain of a {drained['messages']}-message backlog",
            f"{drained['rate']:8.0f} msg/s   ({drained['seconds']:.1f} s; "
            f"{drained['in_queue']} in the queue after)",
        ),
        ("spooled / accepted HTTP rate", f"{down['rps'] / up['rps']:8.2f}"),
        ("drain / confirmed publish rate", f"{drained['rate'] / baseline['rate']:8.2f}"),
    ]
    print()
    print("spool benchmark (SQLite WAL, synchronous=FULL; wrk -t1 -c32; private RabbitMQ node)")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spool_bench", description=__doc__)
    parser.add_argument("--backlog", type=int, default=100_000, help="messages to drain")
    parser.add_argument("--publish", type=int, default=30_000, help="confirmed publishes")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk seconds per HTTP case")
    args = parser.parse_args()
    if not installed():
        raise SystemExit("bench.spool_bench: rabbitmq-server is not installed (apt-get install)")
    load.ensure_tools()
    from bridge.cli.common import run_async

    run_async(bench(args))


if __name__ == "__main__":
    main()
