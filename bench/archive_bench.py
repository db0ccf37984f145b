"""``python -m bench.archive_bench``: the archive stream, measured on the broker at 5672.

1. Fill: 100,000 distinct despatched webhooks published to an exchange whose archive is
   bound (confirmed, 512 in flight), as the receiver publishes them.
2. ``archive find`` over the whole archive: every message read to the end marker and
   filtered, once matching everything and once matching one order (messages scanned/s).
3. ``archive replay`` of the whole archive into a quorum queue (confirmed copies/s), beside
   the confirmed-publish ceiling of the same path (default exchange to the same kind of
   queue, 256 in flight, as replay does) measured in the same run.
4. ``serve`` saturated by wrk with the archive on and with it off (interleaved rounds), on
   two exchanges of their own, each with the same subscriber's quorum queue bound (as in
   ``make bench``): what the second copy of every webhook costs.

Loopback only, bounded counts; every exchange, queue and stream it declares is deleted at
the end. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiormq
import orjson
from pamqp.commands import Basic

from bench import load
from bench.run import (
    bridge_command,
    bridge_env,
    compact_body,
    running,
    server_topology,
    subscriber,
)
from bridge.amqp.topology import (
    ArchiveRetention,
    declare,
    delete,
    receiver_topology,
    unrouted_name,
)
from bridge.archive.reader import ArchiveQuery, find
from bridge.archive.replay import replay
from bridge.core.contract import webhook_envelope
from tests.support.rabbit_node import free_port

URL = "amqp://guest:guest@127.0.0.1:5672/"
Result = dict[str, Any]


async def fill(
    channel: aiormq.abc.AbstractChannel, exchange: str, body: bytes, count: int
) -> Result:
    document = orjson.loads(body)
    started = time.perf_counter()
    for first in range(0, count, 512):
        batch = []
        for n in range(first, min(first + 512, count)):
            document["ID"] = n
            unique = orjson.dumps(document)
            envelope = webhook_envelope("despatched", unique, document, f"b-{n}", time.time())
            batch.append(
                channel.basic_publish(
                    unique,
                    exchange=exchange,
                    routing_key=envelope.routing_key,
                    mandatory=True,
                    properties=envelope.properties(),
                )
            )
        for confirm in await asyncio.gather(*batch):
            assert isinstance(confirm, Basic.Ack), confirm
    seconds = time.perf_counter() - started
    return {"messages": count, "seconds": seconds, "rate": count / seconds}


async def scan(exchange: str, query: ArchiveQuery, count: int) -> Result:
    started, cpu = time.perf_counter(), time.process_time()
    matched = 0
    async for _ in find((URL,), exchange, query):
        matched += 1
    seconds = time.perf_counter() - started
    return {
        "scanned": count,
        "matched": matched,
        "seconds": seconds,
        "rate": count / seconds,
        # Client CPU per message: steadier than the rate on a shared machine.
        "cpu_us_per_message": (time.process_time() - cpu) / count * 1e6,
    }


async def ceiling(
    channel: aiormq.abc.AbstractChannel, queue: str, body: bytes, count: int
) -> Result:
    """Confirmed publishes through the default exchange into ``queue``, 256 in flight."""
    envelope = webhook_envelope("despatched", body, orjson.loads(body), "ceiling", time.time())
    remaining = count

    async def publisher() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await channel.basic_publish(
                body, exchange="", routing_key=queue, properties=envelope.properties()
            )

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(publisher() for _ in range(256)))
    seconds = time.perf_counter() - started
    return {
        "messages": count,
        "seconds": seconds,
        "rate": count / seconds,
        "cpu_us_per_message": (time.process_time() - cpu) / count * 1e6,
    }


async def receivers(body: Path, logs: Path, seconds: float, rounds: int) -> Result:
    """``serve`` with the archive on and off, saturated by wrk in interleaved rounds."""
    results: dict[str, list[float]] = {"archive_on": [], "archive_off": []}
    exchanges = {name: f"bench.{uuid.uuid4().hex[:10]}" for name in results}
    # The headline's topology: one subscriber's quorum queue bound to each exchange (and the
    # archive stream to the first), so "off" is not measured against the .unrouted queue.
    servers = {"archive_on": "bridge", "archive_off": "bridge-archive-off"}
    topologies = {name: server_topology(servers[name], exchanges[name]) for name in results}
    connection = await aiormq.connect(URL)
    channel = await connection.channel()
    try:
        for topology in topologies.values():
            await declare(channel, topology)
        async with contextlib.AsyncExitStack() as stack:
            urls = {}
            for name, exchange in exchanges.items():
                port = free_port()
                env = bridge_env(URL, exchange, port, logs / name)
                (logs / name).mkdir()
                env["BRIDGE_ARCHIVE"] = "true" if name == "archive_on" else "false"
                probe = f"http://127.0.0.1:{port}/readyz"
                await stack.enter_async_context(running(name, bridge_command(), env, probe, logs))
                urls[name] = f"http://127.0.0.1:{port}/webhooks/despatched?APIKEY=bench-key"
            for name in results:
                await load.saturate(urls[name], body, 2)  # warm-up
            for index in range(rounds):
                print(f"archive bench: receiver round {index + 1}/{rounds}", flush=True)
                for name in results:
                    result = await load.saturate(urls[name], body, seconds)
                    assert result["errors"] == 0, result
                    results[name].append(result["rps"])
                    await channel.queue_purge(subscriber(exchanges[name]).name)
                    await channel.queue_purge(unrouted_name(exchanges[name]))
    finally:
        for topology in topologies.values():
            with contextlib.suppress(Exception):
                await delete(channel, topology)
        await connection.close()
    on = statistics.median(results["archive_on"])
    off = statistics.median(results["archive_off"])
    return {
        "archive_on_rps": on,
        "archive_off_rps": off,
        "rounds_on": [round(r) for r in results["archive_on"]],
        "rounds_off": [round(r) for r in results["archive_off"]],
        "cost_percent": (off - on) / off * 100,
    }


async def bench(count: int, seconds: float, rounds: int) -> Result:
    logs = Path(tempfile.mkdtemp(prefix="mintsoft-archive-bench-"))
    body_path = compact_body(logs)
    body = body_path.read_bytes()
    exchange = f"bench.{uuid.uuid4().hex[:10]}"
    topology = receiver_topology(exchange, ArchiveRetention())
    target = f"{exchange}.replayed"
    connection = await aiormq.connect(URL)
    channel = await connection.channel(publisher_confirms=True)
    results: Result = {"body_bytes": len(body), "archived": count}
    try:
        await declare(channel, topology)
        print(f"archive bench: filling the archive with {count} webhooks", flush=True)
        results["fill"] = await fill(channel, exchange, body, count)
        now = datetime.now(UTC)
        everything = ArchiveQuery(since=now - timedelta(hours=1), until=now + timedelta(hours=1))
        print("archive bench: find", flush=True)
        results["find_all"] = await scan(exchange, everything, count)
        one = ArchiveQuery(since=everything.since, until=everything.until, order_id="4242")
        results["find_order"] = await scan(exchange, one, count)

        await channel.queue_declare(target, durable=True, arguments={"x-queue-type": "quorum"})
        print("archive bench: confirmed-publish ceiling", flush=True)
        results["ceiling"] = await ceiling(channel, target, body, count)
        await channel.queue_purge(target)
        print("archive bench: replay", flush=True)
        started, cpu = time.perf_counter(), time.process_time()
        done = await replay((URL,), exchange, everything, target)
        elapsed = time.perf_counter() - started
        assert done.sent == count, done
        results["replay"] = {
            "messages": done.sent,
            "seconds": elapsed,
            "rate": done.sent / elapsed,
            "cpu_us_per_message": (time.process_time() - cpu) / count * 1e6,
        }
        await channel.queue_delete(target)
    finally:
        with contextlib.suppress(Exception):
            await channel.queue_delete(target)
        with contextlib.suppress(Exception):
            await delete(channel, topology)
        await connection.close()
    print("archive bench: receivers with the archive on and off", flush=True)
    results["receiver"] = await receivers(body_path, logs, seconds, rounds)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive_bench", description=__doc__)
    parser.add_argument("--count", type=int, default=100_000, help="webhooks archived")
    parser.add_argument("--seconds", type=float, default=5.0, help="per saturation round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    load.ensure_tools()
    import uvloop

    results = uvloop.run(bench(args.count, args.seconds, args.rounds))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
