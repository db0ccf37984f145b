"""The broker ceiling: aio-pika confirmed persistent publishes, many in flight, no HTTP.

``python -m bench.ceiling URL EXCHANGE BODY_FILE COUNT`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

import aio_pika
import orjson
import uvloop

IN_FLIGHT = 256


async def ceiling(url: str, exchange_name: str, body: bytes, count: int) -> dict[str, float]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    exchange = await channel.get_exchange(exchange_name)
    remaining = count

    async def publisher() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="order.despatched",
            )

    started = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(IN_FLIGHT)))
    seconds = time.perf_counter() - started
    await connection.close()
    return {
        "messages": count,
        "seconds": seconds,
        "rate": count / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("exchange")
    parser.add_argument("body")
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    result = uvloop.run(ceiling(args.url, args.exchange, body, args.count))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
