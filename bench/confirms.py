"""``python -m bench.confirms``: the broker's confirm latency and CPU, with and without the
archive, with no HTTP in the way.

Two exchanges with the headline's topology (``bench.run.server_topology``): both with the
same subscriber's quorum queue bound, one with the archive stream as well (what ``serve``
publishes to as shipped), one without (``BRIDGE_ARCHIVE=false``). Confirmed, persistent,
mandatory publishes of the non-ASCII order leave at a fixed rate (``--rate``, open loop: one
every 1/rate s, whatever the confirms do) in alternating rounds; the time from each publish
to its confirm gives p50/p99/max per round, and the broker's CPU time over the round
(:mod:`bench.broker_cpu`) per message what each routing costs the broker, with the load
average. ``--in-flight N`` saturates instead: N publishers each sending its next message
once the last is confirmed (as wrk's 32 connections do to a receiver), for the broker's
rate and CPU per message with each routing. Bounded, loopback, its exchanges and queues
deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiormq
import orjson

from bench import load, shipped
from bench.broker_cpu import broker_cpu
from bench.run import server_topology, subscriber
from bridge.amqp.topology import declare, delete
from bridge.core.contract import webhook_envelope

Result = dict[str, Any]


async def _round(channel: Any, exchange: str, body: bytes, rate: int, seconds: float) -> Result:
    document = orjson.loads(body)
    count = int(rate * seconds)
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        envelope = webhook_envelope("despatched", body, document, f"c-{n}", time.time())
        started = time.perf_counter()
        await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=envelope.routing_key,
            mandatory=True,
            properties=envelope.properties(),
        )
        latencies.append(time.perf_counter() - started)

    cpu_before = broker_cpu()
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(n))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    cpu_after = broker_cpu()
    ordered = sorted(latencies)
    return {
        "messages": count,
        "broker_cpu_us": None
        if cpu_before is None or cpu_after is None
        else (cpu_after - cpu_before) / count * 1e6,
        "p50_ms": load.percentile(ordered, 50) * 1000,
        "p99_ms": load.percentile(ordered, 99) * 1000,
        "max_ms": ordered[-1] * 1000,
        "load_average": shipped.load_average(),
    }


async def _saturated_round(
    channel: Any, exchange: str, body: bytes, in_flight: int, seconds: float
) -> Result:
    """``in_flight`` publishers, each publishing its next message once the last is
    confirmed, for ``seconds``: the broker's rate and CPU per message at saturation."""
    document = orjson.loads(body)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def publisher(number: int) -> None:
        sent = 0
        while time.perf_counter() < stop:
            sent += 1
            envelope = webhook_envelope(
                "despatched", body, document, f"s-{number}-{sent}", time.time()
            )
            started = time.perf_counter()
            await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=envelope.routing_key,
                mandatory=True,
                properties=envelope.properties(),
            )
            latencies.append(time.perf_counter() - started)

    cpu_before = broker_cpu()
    started = time.perf_counter()
    await asyncio.gather(*(publisher(n) for n in range(in_flight)))
    elapsed = time.perf_counter() - started
    cpu_after = broker_cpu()
    ordered = sorted(latencies)
    count = max(len(ordered), 1)
    return {
        "messages": len(ordered),
        "rate": len(ordered) / elapsed,
        "broker_cpu_us": None
        if cpu_before is None or cpu_after is None
        else (cpu_after - cpu_before) / count * 1e6,
        "p50_ms": load.percentile(ordered, 50) * 1000,
        "p99_ms": load.percentile(ordered, 99) * 1000,
        "max_ms": ordered[-1] * 1000 if ordered else float("nan"),
        "load_average": shipped.load_average(),
    }


async def run(rate: int, seconds: float, rounds: int, in_flight: int = 0) -> Result:
    from bench.bodies import non_ascii_body

    body = non_ascii_body(Path(tempfile.mkdtemp(prefix="mintsoft-bench-confirms-"))).read_bytes()
    url = os.environ.get("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    connection = await aiormq.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    servers = {"archive_on": "bridge", "archive_off": "bridge-archive-off"}
    topologies = {
        name: server_topology(server, f"bench.{uuid.uuid4().hex[:10]}")
        for name, server in servers.items()
    }
    results: dict[str, list[Result]] = {name: [] for name in topologies}
    try:
        for topology in topologies.values():
            await declare(channel, topology)
        names = list(topologies)
        for index in range(rounds):
            at = f"{in_flight} in flight" if in_flight else f"{rate}/s"
            print(f"confirms: round {index + 1}/{rounds}, {at}", flush=True)
            for name in names if index % 2 == 0 else names[::-1]:
                exchange = topologies[name].exchanges[0].name
                if in_flight:
                    result = await _saturated_round(channel, exchange, body, in_flight, seconds)
                else:
                    result = await _round(channel, exchange, body, rate, seconds)
                results[name].append(result)
                await channel.queue_purge(subscriber(exchange).name)
    finally:
        for topology in topologies.values():
            with contextlib.suppress(Exception):
                await delete(channel, topology)
        await connection.close()
    return {"rate": rate, "in_flight": in_flight, "seconds": seconds, "rounds": results}


def table(results: Result) -> str:
    in_flight = results.get("in_flight")
    how = (
        f"{in_flight} in flight, closed loop" if in_flight else f"at {results['rate']}/s, open loop"
    )
    lines = [
        f"confirmed publishes {how}, {results['seconds']:g} s a round",
        "",
        "| exchange, round | load | messages/s | p50 ms | p99 ms | max ms "
        "| broker CPU us/message |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rounds in results["rounds"].items():
        for index, r in enumerate(rounds):
            lines.append(
                f"| {name} {index + 1} | {r['load_average']:.1f} "
                f"| {r['messages'] / results['seconds'] if 'rate' not in r else r['rate']:,.0f} "
                f"| {r['p50_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['max_ms']:.1f} "
                f"| {'-' if r['broker_cpu_us'] is None else format(r['broker_cpu_us'], '.0f')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.confirms", description=__doc__)
    parser.add_argument("--rate", type=int, default=shipped.FIXED_RATE)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=0,
        help="saturate instead: N publishers, each waiting for its confirm (wrk's 32: 32)",
    )
    args = parser.parse_args(argv)
    import uvloop

    print(table(uvloop.run(run(args.rate, args.seconds, args.rounds, args.in_flight))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
