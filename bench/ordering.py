"""The price of ordering: ``python -m bench.ordering [--quick]``.

Two ``mintsoft-bridge worker`` processes consume one subscriber, once unordered (prefetch
32 each) and once ``ordered = true`` with 4 partitions (one message at a time per
partition), with a no-op handler and with one that takes 5 ms (a typical ERP call). The
queues are filled first (webhooks of 500 orders through the exchange, as the receiver
publishes them), then both workers start; the rate is measured from the first message taken
to the last, by polling the queues' depth. Loopback only; everything is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiormq
import orjson

from bridge.amqp.topology import declare, receiver_topology
from bridge.core.contract import webhook_envelope
from bridge.worker.subscribers import parse_subscribers

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PREFETCH = 32
PARTITIONS = 4
ORDERS = 500


def _table(name: str, handler: str, ordered: bool) -> dict[str, Any]:
    table: dict[str, Any] = {"name": name, "events": ["*"], "handler": handler}
    if ordered:
        table.update(ordered=True, partitions=PARTITIONS)
    else:
        table["prefetch"] = PREFETCH
    return table


def _toml(table: dict[str, Any]) -> str:
    lines = ["[[subscriber]]"]
    for key, value in table.items():
        lines.append(f"{key} = {orjson.dumps(value).decode()}")
    return "\n".join(lines) + "\n"


async def _fill(channel: aiormq.abc.AbstractChannel, exchange: str, count: int) -> None:
    window = 512
    for start in range(0, count, window):
        publishes = []
        for n in range(start, min(start + window, count)):
            body = orjson.dumps({"ID": n % ORDERS, "OrderNumber": f"SO-{n}", "ClientId": 1})
            envelope = webhook_envelope("despatched", body, orjson.loads(body), f"b{n}", 0.0)
            publishes.append(
                channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=envelope.routing_key,
                    properties=envelope.properties(),
                )
            )
        await asyncio.gather(*publishes)


async def _depth(channel: aiormq.abc.AbstractChannel, queues: list[str]) -> int:
    total = 0
    for queue in queues:
        ok = await channel.queue_declare(queue, passive=True)
        total += int(ok.message_count or 0)
    return total


async def case(handler: str, ordered: bool, count: int, logs: Path) -> dict[str, Any]:
    exchange = f"bench.ordering.{uuid.uuid4().hex[:8]}"
    name = f"bench-{'ordered' if ordered else 'plain'}-{uuid.uuid4().hex[:6]}"
    table = _table(name, handler, ordered)
    [sub] = parse_subscribers({"subscriber": [table]})
    topology = receiver_topology(exchange) + sub.topology(exchange)
    config = logs / f"{name}.toml"
    config.write_text(_toml(table))
    connection = await aiormq.connect(URL)
    channel = await connection.channel()
    await declare(channel, topology)
    queues = [q for q in sub.queue_names() if ".retry." not in q and not q.endswith(".dlq")]
    queues = [q for q in queues if not q.endswith(".workers")]
    workers: list[asyncio.subprocess.Process] = []
    try:
        await _fill(channel, exchange, count)
        env = dict(os.environ, BRIDGE_AMQP_URL=URL, BRIDGE_EXCHANGE=exchange)
        env["BRIDGE_LOG_FORMAT"] = "json"
        for i in range(2):
            out = (logs / f"{name}.{i}.log").open("wb")
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bridge",
                    "worker",
                    "--config",
                    str(config),
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )
        started = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            depth = await _depth(channel, queues)
            now = time.monotonic()
            if started is None and depth < count:
                started = now
            if depth == 0 and started is not None:
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError(f"{name}: not drained in time")
        seconds = now - started
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.terminate()
        for worker in workers:
            await worker.wait()
        for queue in topology.queues:
            await channel.queue_delete(queue.name)
        for exchange_ in topology.exchanges:
            await channel.exchange_delete(exchange_.name)
        await connection.close()
    return {"messages": count, "seconds": round(seconds, 2), "rate": round(count / seconds)}


async def main_async(quick: bool) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ordering-") as tmp:
        for handler, count in (("noop", 20_000), ("sleep5ms", 4_000)):
            count = count // 5 if quick else count
            for ordered in (False, True):
                result = await case(f"bench.handlers:{handler}_any", ordered, count, Path(tmp))
                label = f"ordered, {PARTITIONS} partitions" if ordered else f"prefetch {PREFETCH}"
                row = {"handler": handler, "subscriber": label, **result}
                print(orjson.dumps(row).decode(), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ordering", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages (numbers rough)")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args.quick))
    print("\n| handler | subscriber (2 workers) | messages | seconds | messages/s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['handler']} | {row['subscriber']} | {row['messages']:,} | "
            f"{row['seconds']} | {row['rate']:,} |"
        )


if __name__ == "__main__":
    main()
